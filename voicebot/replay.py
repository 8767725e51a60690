"""Replaying recorded calls through the live call path, as fast as the CPU allows.

A replayed call's record stays in memory and a transfer ends it at the hand-off;
with ``server`` (``voicebot replay --server URL``) the call is reported to a
running service and a transfer puts it in that service's queue, where it waits
in real time like a live caller (see voicebot.web.queue_api).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable, Sequence

import numpy as np

from voicebot.app import Runtime, open_runtime
from voicebot.audio.wav import AudioFileError, load_wav, write_wav
from voicebot.calls.memory import MemoryRecorder
from voicebot.calls.session import CallSession
from voicebot.clock import VirtualClock
from voicebot.config import Settings
from voicebot.transports.replay import ReplayTransport

log = logging.getLogger("voicebot.replay")


@dataclass(slots=True)
class ReplayResult:
    call: str
    report: dict | None = None
    #: one line: why the file could not be replayed (or why replay broke off)
    error: str | None = None
    audio_s: float = 0.0
    wall_s: float = 0.0
    asr_s: float = 0.0


@contextlib.asynccontextmanager
async def open_replay_runtime(settings: Settings, *, workers: int, server: str | None = None,
                              token: str = "") -> AsyncIterator[Runtime]:
    """What replayed calls run in: records in memory, or reported to (and queued in) the service at ``server``."""
    if server is None:
        async with open_runtime(settings, MemoryRecorder(), workers=workers) as runtime:
            yield runtime
        return
    from voicebot.web.queue_api import ServiceLink

    async with ServiceLink.open(server, token) as link:
        async with open_runtime(settings, link.recorder, workers=workers, queue=link.queue) as runtime:
            yield runtime


async def replay_file(runtime: Runtime, call: str, *, channel: int = 0, realtime: bool = False,
                      out_dir: Path | None = None, caller_id: str = "replay", stay_s: float = 0.0) -> ReplayResult:
    """One recorded call through the bot; ``stay_s`` of silence after the recording keep the caller on the line."""
    services = runtime.services
    rate = runtime.settings.sample_rate_hz
    result = ReplayResult(call)
    t0 = time.perf_counter()
    try:
        audio = await services.run_blocking(lambda: load_wav(call, channel=channel, sample_rate_hz=rate))
    except AudioFileError as e:
        result.error = str(e)
        return result
    samples = audio.samples
    if stay_s > 0:
        samples = np.concatenate([samples, np.zeros(int(stay_s * rate), dtype=samples.dtype)])
    clock = VirtualClock()
    transport = ReplayTransport(samples, rate, clock, caller_id=caller_id, realtime=realtime)
    session = CallSession(services, transport, clock, name=call)
    try:
        await session.run()
    except Exception as e:  # noqa: BLE001 - one broken call must not stop the batch
        log.exception("replay of %s failed", call)
        result.error = f"{call}: replay failed: {e.__class__.__name__}: {e}"
    result.report = session.report.to_json()
    result.audio_s = audio.duration_s
    result.asr_s = session.asr_busy_s
    result.wall_s = time.perf_counter() - t0
    if out_dir is not None:
        stem = Path(call).stem
        out_dir.mkdir(parents=True, exist_ok=True)
        await services.run_blocking(write_wav, out_dir / f"{stem}.wav", transport.stereo(), rate)
        (out_dir / f"{stem}.json").write_text(json.dumps(result.report, indent=2, ensure_ascii=False) + "\n")
    return result


async def replay_files(runtime: Runtime, calls: Sequence[str], *, jobs: int = 1,
                       on_done: Callable[[ReplayResult], None] | None = None, **kwargs) -> list[ReplayResult]:
    """Replay every call, ``jobs`` at a time; results in the order given.

    The longest files start first, so a batch does not end with one long call
    running alone while the other jobs' CPUs sit idle.
    """
    gate = asyncio.Semaphore(max(1, jobs))

    async def one(call: str) -> ReplayResult:
        async with gate:
            result = await replay_file(runtime, call, **kwargs)
        if on_done is not None:
            on_done(result)
        return result

    longest_first = sorted(range(len(calls)), key=lambda i: -_file_size(calls[i]))
    results = await asyncio.gather(*(one(calls[i]) for i in longest_first))
    by_index = dict(zip(longest_first, results))
    return [by_index[i] for i in range(len(calls))]


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # replayed anyway, to report what is wrong with it


def format_transcript(report: dict) -> str:
    lines = [f"== {report['call']}  ({report['outcome']}, {report['duration_s']:.1f} s)"]
    for t in report["turns"]:
        who = "BOT   " if t["speaker"] == "bot" else "CALLER"
        extra = ""
        if t["speaker"] == "caller":
            extra = f"   [{t['intent'] or '-'} {t['confidence']:.2f}]"
        elif t["interrupted"]:
            extra = "   [interrupted]"
        lines.append(f"  {t['start_s']:7.2f}  {who}  {t['text']}{extra}")
    if report["intents"]:
        lines.append(f"  intents: {', '.join(report['intents'])}")
    if report["transfer"]:
        lines.append(f"  transfer: {report['transfer']['reason']} -> queue {report['transfer']['queue']}")
    if report["intake"]:
        i = report["intake"]
        ref = f", reference {i['reference']}" if i["reference"] else ""
        lines.append(f"  intake {i['form']}: {i['status']}{ref}: {json.dumps(i['fields'], ensure_ascii=False)}")
    return "\n".join(lines)
