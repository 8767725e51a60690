from __future__ import annotations

import numpy as np
import pytest

from voicebot.audio.resample import StreamResampler, resample, to_int16


def tone(freq_hz: float, rate_hz: int, seconds: float, amplitude: float = 10000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    return np.rint(amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def level_at(samples: np.ndarray, rate_hz: int, freq_hz: float) -> float:
    """Amplitude of the sinusoid at freq_hz (Hann-windowed DFT)."""
    window = np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * window)) * 2 / window.sum()
    freqs = np.fft.rfftfreq(len(samples), 1 / rate_hz)
    near = np.abs(freqs - freq_hz) < 20
    return float(spectrum[near].max())


@pytest.mark.parametrize(
    ("from_hz", "to_hz"), [(8000, 16000), (16000, 8000), (48000, 16000), (44100, 16000), (22050, 16000)]
)
def test_resample_keeps_a_tone_and_the_duration(from_hz: int, to_hz: int) -> None:
    out = resample(tone(1000, from_hz, 1.0), from_hz, to_hz)
    assert out.dtype == np.int16
    assert len(out) == to_hz
    assert level_at(out[400:-400], to_hz, 1000) == pytest.approx(10000, rel=0.02)


def test_downsampling_removes_what_the_new_rate_cannot_hold() -> None:
    # 11 kHz at 48 kHz would alias to 5 kHz at 16 kHz without an anti-alias filter
    out = resample(tone(11000, 48000, 1.0), 48000, 16000)
    assert level_at(out[400:-400], 16000, 5000) < 10000 * 10 ** (-60 / 20)


def test_float_input_is_full_scale_one_and_clipped() -> None:
    assert to_int16(np.array([0.5, 1.2, -1.7, np.nan])).tolist() == [16384, 32767, -32768, 0]
    loud = resample(np.full(1600, 1.5, dtype=np.float32), 16000, 8000)
    assert loud.dtype == np.int16 and loud[100:-100].min() == 32767


def test_stream_resampler_matches_the_whole_signal_resample() -> None:
    signal = tone(440, 8000, 2.0)
    stream = StreamResampler(8000, 16000)
    pieces = [stream.process(signal[i : i + 160].tobytes()) for i in range(0, len(signal), 160)]
    pieces.append(stream.flush())
    streamed = np.frombuffer(b"".join(pieces), dtype="<i2")
    whole = resample(signal, 8000, 16000)
    assert len(streamed) == len(whole) == 32000
    assert np.max(np.abs(streamed[200:-200].astype(int) - whole[200:-200])) <= 2


@pytest.mark.parametrize(("from_hz", "to_hz"), [(16000, 8000), (48000, 16000)])
def test_stream_resampler_frame_by_frame_total_length(from_hz: int, to_hz: int) -> None:
    stream = StreamResampler(from_hz, to_hz)
    frame = tone(700, from_hz, 0.02).tobytes()
    produced = sum(len(stream.process(frame)) for _ in range(250)) + len(stream.flush())
    assert produced == 250 * to_hz // 50 * 2


def test_stream_resampler_at_equal_rates_passes_frames_through() -> None:
    stream = StreamResampler(16000, 16000)
    frame = tone(700, 16000, 0.02).tobytes()
    assert stream.process(frame) == frame
    assert stream.flush() == b""
    with pytest.raises(ValueError):
        stream.process(b"\x00")
