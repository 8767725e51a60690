"""The open-speech language model: a valid ARPA file that mixes in general English."""

from __future__ import annotations

import math
import re

import pytest

from voicebot.asr.lm import LmOptions, build_arpa, general_unigrams, tokenize, unknown_words

SENTENCES = [
    "what are your opening hours",
    "when are you open",
    "I would like to apply for housing allowance",
    "let me talk to a human",
    "no thank you goodbye",
]


def _parse(arpa: str) -> tuple[dict[int, int], dict[int, dict[tuple[str, ...], tuple[float, float | None]]]]:
    counts: dict[int, int] = {}
    grams: dict[int, dict[tuple[str, ...], tuple[float, float | None]]] = {}
    order = 0
    for line in arpa.splitlines():
        if m := re.fullmatch(r"ngram (\d)=(\d+)", line):
            counts[int(m.group(1))] = int(m.group(2))
        elif m := re.fullmatch(r"\\(\d)-grams:", line):
            order = int(m.group(1))
            grams[order] = {}
        elif line and order and not line.startswith("\\"):
            parts = line.split("\t")
            words = tuple(parts[1].split())
            grams[order][words] = (float(parts[0]), float(parts[2]) if len(parts) > 2 else None)
    return counts, grams


def test_arpa_header_counts_match_the_sections() -> None:
    counts, grams = _parse(build_arpa(SENTENCES))
    assert set(counts) == {1, 2, 3}
    for n in counts:
        assert counts[n] == len(grams[n])
    assert ("what", "are", "your") in grams[3]
    assert ("<s>", "what") in grams[2]


def test_each_history_distributes_probability_one() -> None:
    """Seen continuations plus the backed-off rest sum to 1 for every bigram history."""
    counts, grams = _parse(build_arpa(SENTENCES))
    uni = {w[0]: 10 ** p for w, (p, _) in grams[1].items() if w[0] != "<s>"}
    assert sum(uni.values()) == pytest.approx(1.0, abs=1e-4)
    for (h,), (_, bo) in grams[1].items():
        seen = {w[1]: 10 ** p for w, (p, _) in grams[2].items() if w[0] == h}
        if not seen:
            continue
        rest = sum(p for w, p in uni.items() if w not in seen)
        assert sum(seen.values()) + 10 ** (bo or 0.0) * rest == pytest.approx(1.0, abs=1e-4), h


def test_general_english_words_join_the_vocabulary_with_their_share() -> None:
    general = {"banana": 0.5, "yellow": 0.3, "hours": 0.2}
    _, grams = _parse(build_arpa(SENTENCES, general=general, options=LmOptions(general_weight=0.4)))
    assert ("banana",) in grams[1] and ("yellow",) in grams[1]
    banana = 10 ** grams[1][("banana",)][0]
    assert banana == pytest.approx(0.4 * 0.5, rel=1e-3)
    # a domain word keeps most of its mass
    assert 10 ** grams[1][("hours",)][0] > 0.4 * 0.2


def test_without_general_words_off_topic_words_are_absent() -> None:
    _, grams = _parse(build_arpa(SENTENCES))
    assert ("banana",) not in grams[1]


def test_unknown_words_are_left_out_without_false_ngrams() -> None:
    known = lambda w: w != "housing"  # noqa: E731
    _, grams = _parse(build_arpa(SENTENCES, known=known))
    assert ("housing",) not in grams[1]
    assert ("for", "allowance") not in grams[2]
    assert unknown_words(SENTENCES, known) == ["housing"]


def test_tokenize_lowercases_and_spells_single_digits() -> None:
    assert tokenize("Press 0, please! It's fine.") == ["press", "zero", "please", "it's", "fine"]


def test_general_unigrams_respect_the_dictionary_and_sum_to_one() -> None:
    known = lambda w: len(w) > 3  # noqa: E731
    uni = general_unigrams(known, 2000)
    assert uni and all(len(w) > 3 for w in uni)
    assert math.isclose(sum(uni.values()), 1.0, rel_tol=1e-9)
    assert "would" in uni and "the" not in uni


def test_no_usable_sentence_is_an_error() -> None:
    with pytest.raises(ValueError):
        build_arpa(["!!!", ""])
