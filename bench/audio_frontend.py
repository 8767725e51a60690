"""How long the per-frame audio front end (endpointer + DTMF detector) takes.

Both run on the event loop for every 20 ms frame of every call, so the figure
that matters is microseconds per frame (and how many calls one core could carry).
CPU time is the figure; wall time is shown too but grows when the machine is busy.
The signal is 60 s of speech-like bursts, DTMF and pink noise; the front end's
cost hardly depends on content.

    .venv/bin/python bench/audio_frontend.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from voicebot.audio.dtmf import DtmfDetector
from voicebot.audio.resample import StreamResampler
from voicebot.audio.vad import Endpointer
from voicebot.audio.wav import iter_frames


def test_signal(seconds: float, rate_hz: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = int(seconds * rate_hz)
    t = np.arange(n) / rate_hz
    # voiced bursts: a 140 Hz harmonic series switched on 1.5 s out of every 3 s
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20)) * 6000 * ((t % 3.0) < 1.5)
    keys = (np.sin(2 * np.pi * 770 * t) + np.sin(2 * np.pi * 1336 * t)) * 8000 * (((t % 3.0) > 2.0) & ((t % 3.0) < 2.1))
    noise = rng.standard_normal(n) * 300
    return np.clip(voiced + keys + noise, -32768, 32767).astype(np.int16)


def bench(rate_hz: int, seconds: float) -> None:
    frames = list(iter_frames(test_signal(seconds, rate_hz), rate_hz))
    cpu_s: dict[str, float] = {}
    for name in ("endpointer", "dtmf", "both"):
        endpointer, detector = Endpointer(sample_rate_hz=rate_hz), DtmfDetector(rate_hz)
        wall_begin, cpu_begin = time.perf_counter(), time.process_time()
        for start_s, pcm in frames:
            if name in ("dtmf", "both"):
                detector.process(pcm, start_s)
                endpointer.suspend(detector.tone_active)
            if name in ("endpointer", "both"):
                endpointer.process(pcm, start_s)
        wall = time.perf_counter() - wall_begin
        cpu_s[name] = cpu = time.process_time() - cpu_begin
        print(
            f"{rate_hz:>5} Hz  {name:<10}  cpu {cpu / len(frames) * 1e6:6.1f} us/frame "
            f"({cpu / seconds * 1000:5.2f} ms per s of audio)   wall {wall / len(frames) * 1e6:6.1f} us/frame"
        )
    both = cpu_s["both"] / seconds
    print(f"{rate_hz:>5} Hz  one core could run the front end for ~{int(1 / both)} calls at once")


def bench_resampler(from_hz: int, to_hz: int, seconds: float) -> None:
    resampler = StreamResampler(from_hz, to_hz)
    frames = list(iter_frames(test_signal(seconds, from_hz), from_hz))
    begin = time.process_time()
    for _, pcm in frames:
        resampler.process(pcm)
    resampler.flush()
    elapsed = time.process_time() - begin
    print(
        f"StreamResampler {from_hz:>5}->{to_hz:<5}  cpu {elapsed / len(frames) * 1e6:6.1f} us/frame "
        f"({elapsed / seconds * 1000:5.2f} ms per s of audio)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    for rate_hz in (16000, 8000):
        bench(rate_hz, args.seconds)
    for from_hz, to_hz in ((8000, 16000), (16000, 8000), (48000, 16000)):
        bench_resampler(from_hz, to_hz, args.seconds)


if __name__ == "__main__":
    main()
