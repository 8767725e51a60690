"""In-band DTMF detector on synthetic tones (no detections on real speech: tests/integration)."""

from __future__ import annotations

import numpy as np
import pytest

from voicebot.audio.dtmf import COL_HZ, KEYS, ROW_HZ, DtmfDetector
from voicebot.events import DtmfTone

RATES_HZ = [8000, 16000]
PINK_RMS = 0.0082 * 32768  # what `sox -n synth pinknoise vol 0.04` produces


def key_tone(
    key: str,
    rate_hz: int,
    seconds: float,
    level_db: float = -6.0,
    twist_db: float = 0.0,
    detune: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """A key's two tones; ``level_db`` is the pair's peak re full scale, ``twist_db`` lifts the column tone."""
    row = next(i for i, keys in enumerate(KEYS) if key in keys)
    col = KEYS[row].index(key)
    t = np.arange(int(round(seconds * rate_hz))) / rate_hz
    phases = np.random.default_rng(seed).uniform(0, 2 * np.pi, 2)
    amplitude = 10 ** (level_db / 20) * 32767 / 2
    low = np.sin(2 * np.pi * ROW_HZ[row] * detune * t + phases[0])
    high = np.sin(2 * np.pi * COL_HZ[col] * detune * t + phases[1]) * 10 ** (twist_db / 20)
    return amplitude * (low + high)


def gap(seconds: float, rate_hz: int) -> np.ndarray:
    return np.zeros(int(round(seconds * rate_hz)))


def pink_noise(n: int, rms: float, rate_hz: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / rate_hz), 40.0))
    noise = np.fft.irfft(spectrum, n)
    return noise * rms / np.sqrt(np.mean(noise**2))


def detect(signal: np.ndarray, rate_hz: int, chunk_ms: float = 20.0) -> list[DtmfTone]:
    pcm = np.clip(np.rint(signal), -32768, 32767).astype("<i2")
    chunk = int(rate_hz * chunk_ms / 1000)
    detector = DtmfDetector(rate_hz)
    tones: list[DtmfTone] = []
    for start in range(0, len(pcm), chunk):
        tones += detector.process(pcm[start : start + chunk].tobytes(), start / rate_hz)
    return tones


def sequence(keys: str, rate_hz: int, tone_s: float = 0.1, gap_s: float = 0.1, lead_s: float = 0.213) -> np.ndarray:
    parts = [gap(lead_s, rate_hz)]
    for index, key in enumerate(keys):
        parts += [key_tone(key, rate_hz, tone_s, seed=index), gap(gap_s, rate_hz)]
    return np.concatenate(parts)


@pytest.mark.parametrize("rate_hz", RATES_HZ)
@pytest.mark.parametrize("level_db", [-20.0, -10.0, 0.0])
def test_every_key_is_reported_once_with_its_onset(rate_hz: int, level_db: float) -> None:
    for key in "0123456789*#ABCD":
        lead_s = 0.1 + 0.0037 * "0123456789*#ABCD".index(key)  # onsets at varied frame offsets
        signal = np.concatenate([gap(lead_s, rate_hz), key_tone(key, rate_hz, 0.1, level_db), gap(0.2, rate_hz)])
        tones = detect(signal, rate_hz)
        assert [t.digit for t in tones] == [key], f"key {key} at {level_db} dB, {rate_hz} Hz"
        assert tones[0].start_s == pytest.approx(lead_s, abs=0.015)


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_a_sequence_with_100ms_gaps(rate_hz: int) -> None:
    tones = detect(sequence("0123#", rate_hz), rate_hz)
    assert "".join(t.digit for t in tones) == "0123#"
    assert [t.start_s for t in tones] == pytest.approx([0.213 + 0.2 * i for i in range(5)], abs=0.015)


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_the_same_key_twice_counts_twice(rate_hz: int) -> None:
    assert "".join(t.digit for t in detect(sequence("115500", rate_hz), rate_hz)) == "115500"
    for offset_ms in range(0, 20, 3):  # a 40 ms pause splits presses whatever the frame alignment
        signal = sequence("55", rate_hz, tone_s=0.08, gap_s=0.04, lead_s=0.1 + offset_ms / 1000)
        assert "".join(t.digit for t in detect(signal, rate_hz)) == "55"


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_a_10ms_dropout_inside_a_press_is_bridged(rate_hz: int) -> None:
    for offset_ms in range(0, 20, 5):
        tone = key_tone("7", rate_hz, 0.2)
        dropout = slice(int(0.1 * rate_hz), int(0.11 * rate_hz))
        tone[dropout] = 0
        signal = np.concatenate([gap(0.1 + offset_ms / 1000, rate_hz), tone, gap(0.1, rate_hz)])
        assert [t.digit for t in detect(signal, rate_hz)] == ["7"]


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_minimum_duration(rate_hz: int) -> None:
    for offset_ms in range(0, 20, 2):
        lead = gap(0.1 + offset_ms / 1000, rate_hz)
        long_enough = np.concatenate([lead, key_tone("9", rate_hz, 0.04), gap(0.1, rate_hz)])
        too_short = np.concatenate([lead, key_tone("9", rate_hz, 0.02), gap(0.1, rate_hz)])
        assert [t.digit for t in detect(long_enough, rate_hz)] == ["9"]
        assert detect(too_short, rate_hz) == []


@pytest.mark.parametrize("chunk_ms", [7.0, 10.0, 33.0, 100.0])
def test_any_chunking_of_the_stream_gives_the_same_keys(chunk_ms: float) -> None:
    signal = sequence("7#9*", 16000)
    chunked, framed = detect(signal, 16000, chunk_ms), detect(signal, 16000)
    assert [t.digit for t in chunked] == [t.digit for t in framed] == list("7#9*")
    assert [t.start_s for t in chunked] == pytest.approx([t.start_s for t in framed], abs=1e-9)


@pytest.mark.parametrize(
    ("twist_db", "detected"),
    [(-6.0, True), (-3.0, True), (3.0, True), (5.0, True), (-12.0, False), (9.0, False)],
)
def test_twist_limits(twist_db: float, detected: bool) -> None:
    signal = np.concatenate(
        [gap(0.1, 8000), key_tone("5", 8000, 0.1, level_db=-6.0, twist_db=twist_db), gap(0.1, 8000)]
    )
    assert bool(detect(signal, 8000)) is detected


@pytest.mark.parametrize(("detune", "detected"), [(0.985, True), (1.015, True), (0.965, False), (1.035, False)])
def test_frequencies_within_telephone_tolerance_are_accepted_and_far_off_ones_not(
    detune: float, detected: bool
) -> None:
    for key in "0123456789*#":
        signal = np.concatenate([gap(0.1, 8000), key_tone(key, 8000, 0.1, detune=detune), gap(0.1, 8000)])
        assert [t.digit for t in detect(signal, 8000)] == ([key] if detected else [])


def test_single_tones_and_quiet_pairs_are_not_keys() -> None:
    t = np.arange(8000) / 8000
    for freq in ROW_HZ + COL_HZ:
        assert detect(8000 * np.sin(2 * np.pi * freq * t), 8000) == []
    assert detect(key_tone("1", 8000, 0.2, level_db=-50.0), 8000) == []


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_keys_in_pink_noise(rate_hz: int) -> None:
    keys = "0123456789*#"
    for level_db in (-20.0, -10.0, 0.0):
        parts = [gap(0.2, rate_hz)]
        for index, key in enumerate(keys):
            parts += [key_tone(key, rate_hz, 0.1, level_db, seed=index), gap(0.1, rate_hz)]
        signal = np.concatenate(parts)
        noisy = signal + pink_noise(len(signal), PINK_RMS, rate_hz, seed=int(-level_db))
        assert "".join(t.digit for t in detect(noisy, rate_hz)) == keys


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_noise_alone_gives_no_key(rate_hz: int) -> None:
    rng = np.random.default_rng(9)
    n = 30 * rate_hz
    assert detect(pink_noise(n, PINK_RMS * 4, rate_hz), rate_hz) == []
    assert detect(rng.standard_normal(n) * 3000, rate_hz) == []


def test_tone_active_follows_the_tone() -> None:
    rate_hz = 16000
    signal = np.concatenate([gap(0.2, rate_hz), key_tone("4", rate_hz, 0.2), gap(0.2, rate_hz)])
    pcm = np.clip(np.rint(signal), -32768, 32767).astype("<i2")
    detector = DtmfDetector(rate_hz)
    active_at = []
    for start in range(0, len(pcm), 320):
        detector.process(pcm[start : start + 320].tobytes(), start / rate_hz)
        active_at.append((start / rate_hz, detector.tone_active))
    active = [start_s for start_s, on in active_at if on]
    # on from the frame where the tone begins until the frame after it stops
    assert active[0] == pytest.approx(0.2, abs=0.001)
    assert 0.38 <= active[-1] <= 0.44
    assert all(on for start_s, on in active_at if 0.2 <= start_s <= 0.38)


def test_rejects_odd_byte_counts_and_bad_rates() -> None:
    with pytest.raises(ValueError):
        DtmfDetector().process(b"\x00\x00\x00", 0.0)
    with pytest.raises(ValueError):
        DtmfDetector(11025)


@pytest.mark.parametrize("rate_hz", RATES_HZ)
@pytest.mark.parametrize(("tone_dbfs", "found"), [(-36.0, True), (-40.0, False)])
def test_keys_count_down_to_the_minimum_tone_level(rate_hz: int, tone_dbfs: float, found: bool) -> None:
    # each tone's RMS is the pair's peak level less 9 dB (half the amplitude each, sine RMS)
    signal = np.concatenate([gap(0.1, rate_hz), key_tone("8", rate_hz, 0.1, level_db=tone_dbfs + 9), gap(0.1, rate_hz)])
    assert [t.digit for t in detect(signal, rate_hz)] == (["8"] if found else [])
