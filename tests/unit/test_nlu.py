"""Intent matching generalises to phrasings it never saw, and rejects off-topic speech."""

from __future__ import annotations

import json

import pytest

from voicebot.config import PROJECT_ROOT
from voicebot.dialogue.nlu import IntentMatcher, normalize
from voicebot.dialogue.scenario import load_scenario

DATA = PROJECT_ROOT / "tests" / "data"


@pytest.fixture(scope="module")
def matcher() -> IntentMatcher:
    sc = load_scenario(PROJECT_ROOT / "scenarios" / "benefits.toml")
    return IntentMatcher(sc.intents, sc.intent_threshold, sc.concepts, sc.off_topic)


def accuracy(matcher: IntentMatcher, name: str) -> tuple[float, float]:
    data = json.loads((DATA / name).read_text())
    pairs = [(p, i) for i, ps in data["intents"].items() for p in ps]
    in_scope = sum(matcher.match(p).intent == i for p, i in pairs) / len(pairs)
    off = sum(matcher.match(p).intent is None for p in data["none"]) / len(data["none"])
    return in_scope, off


@pytest.mark.parametrize("name, floor_in, floor_off", [
    ("nlu_heldout.json", 0.90, 0.75),
    ("nlu_heldout_v2.json", 0.84, 0.60),
])
def test_held_out_phrasings_land_on_their_intent(matcher, name, floor_in, floor_off):
    in_scope, off = accuracy(matcher, name)
    assert in_scope >= floor_in, f"{name}: in-scope accuracy {in_scope:.1%}"
    assert off >= floor_off, f"{name}: off-topic rejection {off:.1%}"


def test_synonym_concepts_carry_unseen_words(matcher):
    assert matcher.match("which branch is closest to my home").intent == "service_point"


def test_off_topic_and_empty_speech_are_no_match(matcher):
    assert matcher.match("bananas are yellow and very tasty").intent is None
    assert matcher.match("").intent is None
    assert matcher.match("uh um").confidence == 0.0


def test_confidence_is_a_probability(matcher):
    m = matcher.match("what are your opening hours")
    assert m.intent == "opening_hours" and 0.5 < m.confidence <= 1.0


def test_contractions_are_expanded():
    assert normalize("I'd like what's there, can't I?") == ["i", "would", "like", "what", "is", "there", "can", "not", "i"]
