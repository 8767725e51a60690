"""Endpointer behaviour on synthetic signals (real speech: tests/integration/test_audio_real_speech.py)."""

from __future__ import annotations

import numpy as np
import pytest
import webrtcvad

from voicebot.audio.vad import Endpointer, EndpointerConfig, SpeechAudio, SpeechEnd, SpeechStart
from voicebot.audio.wav import iter_frames

RATE_HZ = 16000


def vowel(seconds: float, rate_hz: int = RATE_HZ, f0_hz: float = 140.0, rms: float = 6000.0) -> np.ndarray:
    """A voiced sound: harmonics of a wobbling pitch under two formant-like peaks."""
    t = np.arange(int(round(seconds * rate_hz))) / rate_hz
    phase = 2 * np.pi * np.cumsum(f0_hz * (1 + 0.08 * np.sin(2 * np.pi * 3 * t))) / rate_hz
    signal = np.zeros_like(t)
    for k in range(1, int(3800 / f0_hz)):
        gain = np.exp(-((((k * f0_hz) - 500) / 300) ** 2)) + 0.5 * np.exp(-((((k * f0_hz) - 1500) / 400) ** 2)) + 0.05
        signal += gain * np.sin(k * phase)
    return signal * rms / np.sqrt(np.mean(signal**2))


def silence(seconds: float, rate_hz: int = RATE_HZ) -> np.ndarray:
    return np.zeros(int(round(seconds * rate_hz)))


def pink_noise(seconds: float, rms: float, rate_hz: int = RATE_HZ, seed: int = 0) -> np.ndarray:
    n = int(round(seconds * rate_hz))
    rng = np.random.default_rng(seed)
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / rate_hz), 40.0))
    noise = np.fft.irfft(spectrum, n)
    return noise * rms / np.sqrt(np.mean(noise**2))


def to_pcm16(signal: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


def run(endpointer: Endpointer, signal: np.ndarray, rate_hz: int = RATE_HZ) -> list:
    events = []
    for start_s, pcm in iter_frames(to_pcm16(signal), rate_hz):
        events += endpointer.process(pcm, start_s)
    return events


def utterances(events: list) -> list[tuple[float, float, float]]:
    """(start_s, end_s, endpoint_s) of each finished utterance."""
    found, start = [], None
    for event in events:
        if isinstance(event, SpeechStart):
            assert start is None, "two starts without an end"
            start = event.at_s
        elif isinstance(event, SpeechEnd):
            assert start is not None, "an end without a start"
            found.append((start, event.at_s, event.endpoint_s))
            start = None
    return found


def test_silence_gives_nothing() -> None:
    assert run(Endpointer(), silence(3.0)) == []


def test_one_vowel_is_one_utterance_with_accurate_times() -> None:
    events = run(Endpointer(), np.concatenate([silence(0.5), vowel(1.0), silence(1.5)]))
    [(start_s, end_s, endpoint_s)] = utterances(events)
    assert start_s == pytest.approx(0.5, abs=0.021)
    assert end_s == pytest.approx(1.5, abs=0.021)
    assert endpoint_s == pytest.approx(end_s + 0.5, abs=0.001)


def test_start_carries_the_pre_roll_and_audio_is_contiguous_to_the_endpoint() -> None:
    signal = to_pcm16(np.concatenate([silence(0.7), vowel(1.0), silence(1.0)]))
    events = run(Endpointer(pre_roll_ms=300), signal)
    start = events[0]
    assert isinstance(start, SpeechStart)
    end = next(e for e in events if isinstance(e, SpeechEnd))
    audio = start.pcm + b"".join(e.pcm for e in events if isinstance(e, SpeechAudio))
    first = int(round((start.at_s - 0.3) * RATE_HZ))
    last = int(round(end.endpoint_s * RATE_HZ))
    assert audio == signal[first:last].tobytes()
    # the start is decided after min_speech_ms, so its pcm holds pre-roll plus that much speech
    assert len(start.pcm) // 2 >= (0.3 + 0.12) * RATE_HZ


@pytest.mark.parametrize("burst_s", [0.02, 0.06, 0.1])
def test_short_bursts_do_not_start_an_utterance(burst_s: float) -> None:
    signal = np.concatenate([silence(0.5), vowel(burst_s), silence(1.0), vowel(burst_s), silence(1.0)])
    assert run(Endpointer(min_speech_ms=120), signal) == []


def test_a_burst_just_longer_than_min_speech_does_start() -> None:
    signal = np.concatenate([silence(0.5), vowel(0.16), silence(1.0)])
    assert len(utterances(run(Endpointer(min_speech_ms=120), signal))) == 1


@pytest.mark.parametrize(
    ("gap_s", "end_silence_ms", "expected"),
    [(0.4, 500, 1), (0.6, 500, 2), (0.4, 300, 2), (0.9, 1000, 1), (1.1, 1000, 2)],
)
def test_end_silence_decides_whether_a_pause_ends_the_turn(gap_s: float, end_silence_ms: int, expected: int) -> None:
    signal = np.concatenate([silence(0.5), vowel(0.6), silence(gap_s), vowel(0.6), silence(1.5)])
    found = utterances(run(Endpointer(end_silence_ms=end_silence_ms), signal))
    assert len(found) == expected
    for _, end_s, endpoint_s in found:
        assert endpoint_s - end_s == pytest.approx(end_silence_ms / 1000, abs=0.001)


def test_steady_noise_that_webrtcvad_calls_speech_is_gated_out() -> None:
    for rms in (1000.0, 2000.0, 4000.0):  # about -30, -24 and -18 dBFS
        noise = pink_noise(10.0, rms=rms)
        vad = webrtcvad.Vad(2)
        raw = [vad.is_speech(pcm, RATE_HZ) for _, pcm in iter_frames(to_pcm16(noise), RATE_HZ)]
        assert np.mean(raw) > 0.6  # webrtcvad alone calls most of it speech
        assert run(Endpointer(), noise) == []


def test_speech_over_steady_noise_is_still_found() -> None:
    speech = np.concatenate([silence(3.0), vowel(1.0), silence(1.0), vowel(0.8), silence(1.5)])
    found = utterances(run(Endpointer(), speech + pink_noise(len(speech) / RATE_HZ, rms=500.0, seed=2)))
    assert [(round(s, 1), round(e, 1)) for s, e, _ in found] == [(3.0, 4.0), (5.0, 5.8)]


def test_force_end_ends_now_and_a_new_turn_needs_a_fresh_onset() -> None:
    endpointer = Endpointer()
    frames = list(iter_frames(to_pcm16(np.concatenate([silence(0.2), vowel(2.0)])), RATE_HZ))
    events = []
    for start_s, pcm in frames[:50]:  # up to 1.0 s: in the middle of the vowel
        events += endpointer.process(pcm, start_s)
    assert endpointer.in_speech
    [end] = endpointer.force_end(1.0)
    assert end == SpeechEnd(at_s=pytest.approx(1.0), endpoint_s=1.0)
    assert not endpointer.in_speech
    assert endpointer.force_end(1.0) == []
    later = []
    for start_s, pcm in frames[50:]:
        later += endpointer.process(pcm, start_s)
    starts = [e for e in later if isinstance(e, SpeechStart)]
    assert len(starts) == 1 and starts[0].at_s == pytest.approx(1.0, abs=0.001)
    # the new onset needed min_speech_ms of voice again: no audio before it was passed on
    assert not any(isinstance(e, SpeechAudio) for e in later[: later.index(starts[0])])


def test_flush_ends_speech_in_progress_and_is_empty_otherwise() -> None:
    endpointer = Endpointer()
    assert endpointer.flush(0.0) == []
    run(endpointer, np.concatenate([silence(0.2), vowel(0.5)]))
    assert endpointer.in_speech
    [end] = endpointer.flush(0.7)
    assert isinstance(end, SpeechEnd)
    assert end.at_s == pytest.approx(0.7, abs=0.021) and end.endpoint_s == 0.7
    assert not endpointer.in_speech
    assert endpointer.flush(0.8) == []


def dual_tone(seconds: float, low_hz: float = 770.0, high_hz: float = 1336.0) -> np.ndarray:
    t = np.arange(int(round(seconds * RATE_HZ))) / RATE_HZ
    return 8000 * (np.sin(2 * np.pi * low_hz * t) + np.sin(2 * np.pi * high_hz * t))


def test_a_suspended_endpointer_ignores_key_tones() -> None:
    signal = np.concatenate([silence(0.5), dual_tone(0.5), silence(1.0)])
    assert len(utterances(run(Endpointer(), signal))) == 1  # unsuspended, a tone looks like speech
    endpointer = Endpointer()
    events = []
    for start_s, pcm in iter_frames(to_pcm16(signal), RATE_HZ):
        endpointer.suspend(0.5 <= start_s < 1.0)
        events += endpointer.process(pcm, start_s)
    assert events == []


def test_works_at_8_khz() -> None:
    signal = np.concatenate([silence(0.5, 8000), vowel(1.0, rate_hz=8000), silence(1.0, 8000)])
    [(start_s, end_s, _)] = utterances(run(Endpointer(sample_rate_hz=8000), signal, rate_hz=8000))
    assert (start_s, end_s) == (pytest.approx(0.5, abs=0.021), pytest.approx(1.5, abs=0.021))


def test_a_turn_that_never_pauses_is_cut_at_max_speech() -> None:
    config = EndpointerConfig(max_speech_ms=2000)
    found = utterances(run(Endpointer(config=config), np.concatenate([silence(0.2), vowel(5.0)])))
    assert found[0][0] == pytest.approx(0.2, abs=0.021)
    assert found[0][2] == pytest.approx(2.2, abs=0.021)


def test_rejects_frames_of_the_wrong_size_and_rate() -> None:
    with pytest.raises(ValueError):
        Endpointer().process(b"\x00" * 320, 0.0)
    with pytest.raises(ValueError):
        Endpointer(sample_rate_hz=11025)
