"""Reply latency as a caller hears it over SIP, and how smoothly the bot's audio plays.

Runs the phone service in-process on 127.0.0.1, calls it with `voicebot call` (a separate
process speaking the sample calls over RTP, G.722) and records what the bot says. For every
caller utterance it measures, on the caller's side of the wire, the time from the end of
the caller's speech (in the WAV played) to the start of the bot's next speech (in the
recording). Both start at the answer, so the two timelines line up within a few ms.

Also printed: the session's own latency figures for the same turns, and the service's media
statistics (late 20 ms ticks while a prompt played, the longest gap between two ticks).

Usage: python bench/sip_latency.py [SPEC.json] [--calls s01_hours,s09_intake] [--engine ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from voicebot.app import open_runtime
from voicebot.audio.wav import load_wav
from voicebot.calls.memory import MemoryRecorder
from voicebot.config import PROJECT_ROOT, load_settings
from voicebot.sip.service import open_sip_service
from voicebot.sip.settings import SipSettings
from voicebot.testing.callgen import build_spec

RATE_HZ = 16000
FRAME = RATE_HZ // 50


def speech_segments(samples: np.ndarray, threshold_db: float = -45.0, min_gap_s: float = 0.6) -> list[tuple[float, float]]:
    """(start_s, end_s) of stretches louder than ``threshold_db`` dBFS, gaps under ``min_gap_s`` bridged."""
    n = len(samples) // FRAME
    frames = samples[: n * FRAME].astype(np.float64).reshape(n, FRAME) / 32768.0
    loud = 20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) + 1e-9) > threshold_db
    segments: list[list[float]] = []
    for i, on in enumerate(loud):
        t = i * FRAME / RATE_HZ
        if on:
            if segments and t - segments[-1][1] <= min_gap_s:
                segments[-1][1] = t + FRAME / RATE_HZ
            else:
                segments.append([t, t + FRAME / RATE_HZ])
    return [(a, b) for a, b in segments if b - a >= 0.15]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class _MediaLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if " frames in, " in msg:
            self.lines.append(msg)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?", type=Path, default=PROJECT_ROOT / "tests" / "corpus" / "samples.json")
    ap.add_argument("--calls", default="s01_hours,s09_intake")
    ap.add_argument("--engine", default=None)
    args = ap.parse_args()

    cache = PROJECT_ROOT / ".cache" / "bench" / args.spec.stem
    wavs = {w.stem: w for w in cache.glob("*.wav")} or {w.stem: w for w in build_spec(args.spec, cache)}
    names = [c.strip() for c in args.calls.split(",") if c.strip()]
    settings = load_settings(overrides={("asr", "engine"): args.engine})
    media_log = _MediaLog()
    logging.getLogger("voicebot.sip").addHandler(media_log)
    logging.getLogger("voicebot.sip").setLevel(logging.INFO)
    recorder = MemoryRecorder()
    wire: list[float] = []
    session: list[float] = []
    async with open_runtime(settings, recorder) as runtime:
        async with open_sip_service(runtime, SipSettings(host="127.0.0.1", port=0, rtp_port=0, rtp_port_range=0)) as svc:
            assert svc.address is not None
            uri = f"sip:voicebot@127.0.0.1:{svc.address.port}"
            with tempfile.TemporaryDirectory() as tmp:
                for name in names:
                    out = Path(tmp) / f"{name}.bot.wav"
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "voicebot", "call", uri, "--play", str(wavs[name]), "--record", str(out),
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                    stdout, stderr = await proc.communicate()
                    if proc.returncode != 0:
                        raise SystemExit(f"voicebot call failed: {stderr.decode()[-2000:]}")
                    caller = load_wav(wavs[name], sample_rate_hz=RATE_HZ).samples
                    bot = load_wav(out, sample_rate_hz=RATE_HZ).samples
                    said, replies = speech_segments(caller), speech_segments(bot)
                    per_call = []
                    for _, end in said:
                        nxt = next((start for start, _ in replies if start > end), None)
                        if nxt is not None and nxt - end < 10.0:
                            per_call.append((nxt - end) * 1000)
                    wire += per_call
                    print(f"{name:18s} wire latency ms: {', '.join(f'{x:.0f}' for x in per_call)}"
                          f"   ({json.loads(stdout)['codec']})")
                await asyncio.sleep(0.5)
    for report in recorder.ended:
        session += report.latency_ms
    print(f"\nwire latency         p50 {percentile(wire, 0.5):.0f} ms, p95 {percentile(wire, 0.95):.0f} ms,"
          f" mean {statistics.mean(wire):.0f} ms over {len(wire)} turns")
    print(f"session's own figure p50 {percentile(session, 0.5):.0f} ms, p95 {percentile(session, 0.95):.0f} ms")
    for line in media_log.lines:
        m = re.search(r"(\d+) frames in, (\d+) out, (\d+) late, longest gap (\d+) ms \(caller audio (\d+) ms\)", line)
        if m:
            print(f"media                {m.group(2)} bot frames, {m.group(3)} late ticks, longest gap {m.group(4)} ms;"
                  f" longest gap in caller audio {m.group(5)} ms")


if __name__ == "__main__":
    asyncio.run(main())
