"""PocketSphinx through real speech: espeak-ng audio in, n-best out."""

from __future__ import annotations

import shutil
import subprocess
import time
import wave
from pathlib import Path

import pytest

from voicebot.asr.base import RecognizerError
from voicebot.asr.grammar import GrammarSet
from voicebot.asr.pocketsphinx import PocketSphinxEngine
from voicebot.asr.select import find_pocketsphinx_model
from voicebot.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng") or not shutil.which("sox"), reason="needs espeak-ng and sox")


def _sentences() -> list[str]:
    lines = (ROOT / "tests/data/open_sentences.txt").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def speak(tmp: Path, text: str, voice: str = "en-us", rate: int = 160) -> bytes:
    raw, out = tmp / "raw.wav", tmp / "out.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out), "pad", "0.3", "0.3"], check=True)
    with wave.open(str(out)) as w:
        return w.readframes(w.getnframes())


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PocketSphinxEngine:
    """The engine as the product runs it: with the adapted acoustic model `make` builds."""
    adapted = find_pocketsphinx_model(None, load_settings(env={}).asr.models_dir)
    assert adapted is not None, "run `voicebot models adapt` (make test does) before these tests"
    return PocketSphinxEngine(GrammarSet.load(ROOT / "grammars"), _sentences(),
                              cache_dir=tmp_path_factory.mktemp("asr-cache"), acoustic_model=adapted)


def recognize(engine: PocketSphinxEngine, pcm: bytes, grammar: str | None, *, partials: bool = True):
    stream = engine.open_stream()
    try:
        stream.set_grammar(grammar, partials=partials)
        partials = []
        for i in range(0, len(pcm), 3200):  # 100 ms chunks, as the listener sends them
            stream.accept(pcm[i : i + 3200])
            partials.append(stream.partial())
        return stream.finish(), partials
    finally:
        stream.close()


def test_open_speech_keeps_the_request_words(engine: PocketSphinxEngine, tmp_path: Path) -> None:
    result, partials = recognize(engine, speak(tmp_path, "I want to complain about my benefit decision."), None)
    assert result.alternatives
    words = result.alternatives[0].text.split()
    assert "complain" in words and "decision" in words
    assert any(partials), "partial results while speaking"


@pytest.mark.parametrize("grammar", [None, "personal_id"])
def test_a_turn_nobody_reads_partials_of_comes_out_as_it_does_when_decoded_while_spoken(
        engine: PocketSphinxEngine, tmp_path: Path, grammar: str | None) -> None:
    said = ("I want to complain about my benefit decision." if grammar is None
            else "two nine zero two eight eight dash one three six d")
    pcm = speak(tmp_path, said)
    streamed, _ = recognize(engine, pcm, grammar)
    probed, partials = recognize(engine, pcm, grammar, partials=False)
    assert probed == streamed
    assert probed.alternatives
    assert not any(partials), "without partials the stream only probes while the caller speaks"


def test_a_recognizer_is_built_ahead_for_the_next_call_while_this_one_runs(engine: PocketSphinxEngine) -> None:
    first = engine.open_stream()
    second = engine.open_stream()
    try:
        wait_for_ready(engine, 1)
    finally:
        first.close()
        second.close()
    assert engine.ready_decoders >= 3, "closed streams give their decoders back"


def test_an_engine_for_several_calls_builds_their_recognizers_in_the_background(tmp_path: Path) -> None:
    adapted = find_pocketsphinx_model(None, load_settings(env={}).asr.models_dir)
    engine = PocketSphinxEngine(GrammarSet.load(ROOT / "grammars"), _sentences(), cache_dir=tmp_path,
                                acoustic_model=adapted, ready_calls=3)
    wait_for_ready(engine, 3)
    streams = [engine.open_stream() for _ in range(3)]
    wait_for_ready(engine, 1)  # a spare for a fourth call
    for stream in streams:
        stream.close()
    assert engine.ready_decoders == 4


def wait_for_ready(engine: PocketSphinxEngine, count: int) -> None:
    deadline = time.monotonic() + 60
    while engine.ready_decoders < count:
        assert time.monotonic() < deadline, f"only {engine.ready_decoders} of {count} decoders were built"
        time.sleep(0.05)


def test_off_topic_speech_is_not_forced_into_a_request(engine: PocketSphinxEngine, tmp_path: Path) -> None:
    result, _ = recognize(engine, speak(tmp_path, "Bananas are yellow and very tasty."), None)
    text = result.alternatives[0].text if result.alternatives else ""
    for request in ("housing allowance", "opening hours", "service point", "video"):
        assert request not in text


@pytest.mark.parametrize(("grammar", "said", "expected"), [("yes_no", "yes", "yes"), ("count", "three", "three")])
def test_short_answers_in_their_grammar(engine: PocketSphinxEngine, tmp_path: Path, grammar: str, said: str,
                                        expected: str) -> None:
    result, _ = recognize(engine, speak(tmp_path, said), grammar)
    assert result.alternatives[0].text.split()[0] == expected
    assert result.alternatives[0].confidence > 0.3


def test_grammar_nbest_is_distinct_ranked_and_bounded(engine: PocketSphinxEngine, tmp_path: Path) -> None:
    stream = engine.open_stream()
    try:
        # as in a call, the caller has spoken before (the decoder's channel normalisation has settled)
        stream.accept(speak(tmp_path, "I would like to apply for housing allowance.", "en-gb"))
        stream.finish()
        stream.set_grammar("personal_id")
        stream.accept(speak(tmp_path, "two nine zero two eight eight, dash, one three six, D", "en-gb"))
        result = stream.finish()
    finally:
        stream.close()
    texts = [a.text for a in result.alternatives]
    assert "two nine zero two eight eight dash one three six d" in texts[:3]
    assert len(texts) >= 2 and len(set(texts)) == len(texts)
    confs = [a.confidence for a in result.alternatives]
    assert all(0.0 <= c <= 1.0 for c in confs)
    assert confs[1:] == sorted(confs[1:], reverse=True) and confs[0] >= max(confs[1:])


def test_commands_are_heard_in_a_grammar_state(engine: PocketSphinxEngine, tmp_path: Path) -> None:
    result, _ = recognize(engine, speak(tmp_path, "I want to talk to a person"), "postal_code")
    assert "person" in result.alternatives[0].text


def test_spelled_letters_come_back_without_their_period(engine: PocketSphinxEngine, tmp_path: Path) -> None:
    stream = engine.open_stream()
    try:
        stream.accept(speak(tmp_path, "I would like to apply for housing allowance."))
        stream.finish()
        stream.set_grammar("personal_id")
        stream.accept(speak(tmp_path, "two nine zero two eight eight, dash, one three six, D"))
        result = stream.finish()
    finally:
        stream.close()
    words = result.alternatives[0].text.split()
    assert len(words) >= 8
    assert all(not w.endswith(".") for w in words)
    assert words[-1] in set("abcdefhjklmnprstuvwxy") | {"zero", "one", "two", "three", "four", "five", "six",
                                                          "seven", "eight", "nine", "oh"}


def test_a_stream_serves_several_turns_and_empty_turns(engine: PocketSphinxEngine, tmp_path: Path) -> None:
    stream = engine.open_stream()
    try:
        assert stream.finish().alternatives == ()
        stream.set_grammar("yes_no")
        stream.accept(speak(tmp_path, "yes"))
        assert stream.finish().alternatives[0].text.split()[0] == "yes"
        stream.set_grammar("count")
        stream.accept(speak(tmp_path, "three"))
        assert stream.finish().alternatives[0].text.split()[0] == "three"
        with pytest.raises(RecognizerError, match="unknown grammar 'nope'"):
            stream.set_grammar("nope")
    finally:
        stream.close()
    with pytest.raises(RecognizerError):
        stream.accept(b"\0\0" * 160)


def test_grammar_word_missing_from_the_dictionary_is_named(tmp_path: Path) -> None:
    grammars = GrammarSet.from_texts({"odd": "public <odd> = yes | flurbzle;"})
    with pytest.raises(RecognizerError, match="grammar 'odd'.*flurbzle"):
        PocketSphinxEngine(grammars, ["hello there"], cache_dir=tmp_path)


def test_a_call_decodes_the_same_whatever_the_process_decoded_before(engine: PocketSphinxEngine,
                                                                      tmp_path: Path) -> None:
    """Replayed and live calls must agree: no hidden state from earlier calls (dither, noise tracker)."""
    said = speak(tmp_path, "Can I get remote service by video?", "en-us+f3")
    first, _ = recognize(engine, said, None)
    recognize(engine, speak(tmp_path, "My car is parked on the street.", "en-gb", 180), None)
    again, _ = recognize(engine, said, None)
    assert again == first
