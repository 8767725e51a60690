"""Replay speed, per-turn latency and where the time goes.

Synthesizes a call spec (default: the bundled sample calls) once into a cache
directory, replays every call through the real recognizer and synthesizer, and
prints: x real time, latency p50/p95 (end of caller speech -> bot reply, with
the compute a live caller would wait for), and the share of wall time spent
inside the recognizer (the rest is pipeline overhead).

Usage: python bench/replay_speed.py [SPEC.json] [--jobs N] [--engine auto|vosk|pocketsphinx]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from voicebot.app import open_runtime
from voicebot.calls.memory import MemoryRecorder
from voicebot.config import PROJECT_ROOT, load_settings
from voicebot.expect import check_report, load_expectations
from voicebot.replay import replay_files
from voicebot.testing.callgen import build_spec


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?", type=Path, default=PROJECT_ROOT / "tests" / "corpus" / "samples.json")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--engine", default=None)
    ap.add_argument("--workers", type=int, default=0,
                    help="recognizer processes (default 0: in this process, so time inside the recognizer is "
                         "measured exactly; the service uses one per CPU)")
    args = ap.parse_args()

    cache = PROJECT_ROOT / ".cache" / "bench" / args.spec.stem
    wavs = sorted(cache.glob("*.wav"))
    if not wavs:
        wavs = sorted(build_spec(args.spec, cache))
    settings = load_settings(overrides={("asr", "engine"): args.engine, ("asr", "workers"): args.workers})
    expectations = load_expectations(args.spec)

    t0 = time.perf_counter()
    async with open_runtime(settings, MemoryRecorder(), workers=max(2, args.jobs)) as runtime:
        startup_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        results = await replay_files(runtime, [str(w) for w in wavs], jobs=args.jobs)
        wall_s = time.perf_counter() - t1
    audio_s = sum(r.audio_s for r in results)
    asr_s = sum(r.asr_s for r in results)
    latencies = [x for r in results if r.report for x in r.report["latency_ms"]]
    passed = sum(1 for r in results if r.report and not check_report(r.report, expectations.get(Path(r.call).stem, {})))

    print(f"spec                 {args.spec.name} ({len(results)} calls, {audio_s:.0f} s of audio)")
    print(f"engine               {runtime.services.engine.name} / {runtime.services.engine.model_name}")
    print(f"start-up             {startup_s:.2f} s (model load, LM build, prompt cache warm-up)")
    print(f"replay wall time     {wall_s:.2f} s with {args.jobs} job(s)")
    print(f"speed                {audio_s / wall_s:.1f}x real time")
    if latencies:
        print(f"turn latency         p50 {percentile(latencies, 0.5):.0f} ms, p95 {percentile(latencies, 0.95):.0f} ms "
              f"({len(latencies)} turns; mean {statistics.mean(latencies):.0f} ms)")
    busy = wall_s * args.jobs
    print(f"inside recognizer    {asr_s:.2f} s = {asr_s / busy:.0%} of wall time")
    print(f"pipeline overhead    {1 - asr_s / busy:.0%} of wall time (VAD, DTMF, policy, TTS, I/O)")
    print(f"expectations         {passed}/{len(results)} calls pass")


if __name__ == "__main__":
    asyncio.run(main())
