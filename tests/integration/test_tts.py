"""The real synthesizer: pyttsx3 driving libespeak-ng."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from voicebot.tts.base import SynthesisError
from voicebot.tts.cache import PromptCache
from voicebot.tts.espeak import EspeakSynthesizer

PROMPT = "Welcome to the benefits service line. How can I help you today?"


def _samples(pcm: bytes) -> np.ndarray:
    assert len(pcm) % 2 == 0
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _band_energy_share(x: np.ndarray, rate_hz: int, lo_hz: float, hi_hz: float) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate_hz)
    return float(power[(freqs >= lo_hz) & (freqs < hi_hz)].sum() / power.sum())


@pytest.fixture(scope="module")
def synth16() -> EspeakSynthesizer:
    return EspeakSynthesizer(sample_rate_hz=16000, voice="en-us", rate_wpm=170)


def test_a_sentence_becomes_audible_speech_of_plausible_length(synth16):
    x = _samples(synth16.synthesize(PROMPT))
    duration_s = len(x) / 16000
    # 12 words at 170 words per minute is about 4 s; espeak adds pauses at the full stops
    assert 2.5 < duration_s < 7.0
    rms = np.sqrt(np.mean(x**2))
    assert rms > 1000, "speech should be well above silence"
    assert np.abs(x).max() < 32767, "speech should not clip"
    assert _band_energy_share(x, 16000, 100, 4000) > 0.8, "most energy in the speech band"
    # speech has pauses: some 20 ms frames are near-silent, most are not
    frames = x[: len(x) // 320 * 320].reshape(-1, 320)
    loud = np.sqrt(np.mean(frames**2, axis=1)) > 300
    assert 0.5 < loud.mean() < 0.98


def test_output_at_8000_hz_has_the_same_duration_and_a_narrower_band(synth16):
    synth8 = EspeakSynthesizer(sample_rate_hz=8000, voice="en-us", rate_wpm=170)
    x16 = _samples(synth16.synthesize(PROMPT))
    x8 = _samples(synth8.synthesize(PROMPT))
    assert synth8.sample_rate_hz == 8000
    assert len(x8) / 8000 == pytest.approx(len(x16) / 16000, rel=0.03)
    assert np.sqrt(np.mean(x8**2)) > 1000
    # 16 kHz output keeps fricative energy above 4 kHz, which 8 kHz cannot carry
    assert _band_energy_share(x16, 16000, 4000, 8000) > 0.002


def test_speaking_rate_changes_the_duration(synth16):
    fast = EspeakSynthesizer(sample_rate_hz=16000, voice="en-us", rate_wpm=300)
    slow_s = len(synth16.synthesize(PROMPT)) / 2 / 16000
    fast_s = len(fast.synthesize(PROMPT)) / 2 / 16000
    assert fast_s < 0.75 * slow_s


def test_synthesizers_with_different_rates_share_the_engine_from_many_threads(synth16):
    fast = EspeakSynthesizer(sample_rate_hz=16000, voice="en-gb+f3", rate_wpm=300)
    durations: dict[str, list[float]] = {"slow": [], "fast": []}

    def work(name: str, synth: EspeakSynthesizer) -> None:
        for _ in range(4):
            durations[name].append(len(synth.synthesize(PROMPT)) / 2 / 16000)

    threads = [threading.Thread(target=work, args=("slow", synth16)), threading.Thread(target=work, args=("fast", fast))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # every render used its own synthesizer's rate, never the other one's
    assert max(durations["fast"]) < 0.75 * min(durations["slow"])
    assert max(durations["slow"]) < 1.05 * min(durations["slow"])


def test_voice_variants_and_language_names_are_accepted():
    assert EspeakSynthesizer(voice="en-gb").voice_id == "gmw/en"
    assert EspeakSynthesizer(voice="en-us+f3").voice_id == "gmw/en-us+f3"
    assert EspeakSynthesizer(voice="en-gb-scotland").voice_id == "gmw/en-gb-scotland"


def test_an_unknown_voice_is_a_one_line_error_naming_valid_voices():
    with pytest.raises(SynthesisError) as err:
        EspeakSynthesizer(voice="no-such-voice")
    message = str(err.value)
    assert "no-such-voice" in message and "\n" not in message
    assert "en-us" in message or "en-gb" in message


def test_an_unknown_variant_is_rejected_instead_of_silently_ignored():
    with pytest.raises(SynthesisError, match="nosuchvariant"):
        EspeakSynthesizer(voice="en-us+nosuchvariant")


def test_a_speaking_rate_out_of_range_is_rejected():
    with pytest.raises(SynthesisError, match="words per minute"):
        EspeakSynthesizer(rate_wpm=5)


def test_synthesis_prints_nothing_and_empty_text_is_silence(synth16, capsys):
    assert synth16.synthesize("   ") == b""
    synth16.synthesize("Goodbye.")
    assert capsys.readouterr().out == ""


def test_prompt_cache_serves_the_real_synthesizer_audio_once(synth16):
    cache = PromptCache(synth16)
    first = cache.render("Please hold.")
    assert cache.render("Please hold.") is first
    assert cache.misses == 1 and cache.hits == 1
