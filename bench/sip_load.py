"""Turn latency and bot-audio underruns as simultaneous calls grow, through `voicebot serve` as a process.

Starts the service (SIP front, its default call workers for ``max_calls`` = the largest count,
PocketSphinx, espeak) with its data in a temp dir, then for each count of callers dials that many
Debian baresip phones at once. Every caller asks two questions and says goodbye (three turns), in
one of a few voices, rates and lead-ins, so that callers do not all stop speaking on the same 20 ms
tick; a third of them talk PCMU, the rest G.722; half of them dial over TCP. The callers speak on a
fixed schedule (an open-loop load: a slow bot does not slow them down), with room after each reply
for it to start about 5 s late. First a warm-up round of as many short calls as the largest count
(see warm_up: a burst of callers on a fresh service), whose greeting delays are printed, then the
steps.

Latency is measured as the caller hears it. baresip plays the caller's WAV and records what it
receives, both from the start of the call's audio: the project's endpointer gives the end of each
caller utterance in the WAV, and the first non-silent audio in the recording after it is the bot's
reply; a turn whose reply does not start within REPLY_WINDOW_S (or that the bot was still talking
over) counts as infinitely late. Beside it: the service's own figure for the same turns (``latency_ms`` of the stored
records: the endpointer's speech end to the reply's first frame going out on the media clock).
Underruns are ``voicebot_audio_underruns_total`` from /metrics (bot frames sent late while a
prompt played), checked against the workers' per-call log lines.

Where the time goes: the recognizer decodes a turn once the caller has paused for
``listen.ahead_silence_ms`` (with ``listen.decode_ahead``). A question the scenario is sure of
(``complete_confidence``: the callers' first two turns here) is answered as soon as that decode is
done; any other turn (the goodbye) waits out the endpointer's end-of-utterance silence
(``listen.end_silence_ms``), and only the decode's time beyond it adds to that. Then the dialogue
(the replies are cached prompts, so no synthesis). A short in-process profile times the final
decode on this machine, and each step prints the CPU the service's processes, the phones and
everything else on the machine used.

With ``--spread`` the callers of a step do not all dial at once but one after another across one
round of their questions, each asking them twice before the goodbye, and only the turns that end
while every one of them is on the line count: N calls in progress at random points of their
dialogue, as a line with N calls up sees them, rather than N callers speaking in lock-step (which
is the default: a burst, the worst case, where every turn end of a step falls within about a
second and the decodes queue behind each other).

Usage: .venv/bin/python bench/sip_load.py [--counts 1,5,10,15,20] [--spread] [--limit-ms 800] [--stop-ms 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voicebot.audio.vad import Endpointer, EndpointerConfig, SpeechEnd
from voicebot.audio.wav import load_wav, write_wav
from voicebot.calls.listener import ListenerConfig
from voicebot.config import PROJECT_ROOT, load_settings
from voicebot.testing.callgen import build_call

sys.path.insert(0, str(PROJECT_ROOT))  # the e2e tests' baresip phone and service process
from tests.e2e.baresip_agent import HEARING_FRAME_S as LOUD_FRAME_S
from tests.e2e.baresip_agent import BaresipAgent, loud_frames, mic_wav
from tests.e2e.service_process import ServiceProcess, loopback_config, metric_total

#: what every caller says; the bot answers each with its answer and "anything else?": 13.3 s for
#: the hours, 16.2 s for the service points
SAYS = ("What are your opening hours?", "Where can I find a service point?", "No thank you, goodbye.")
#: the silence after each: the bot's reply and about 5 s more, so that a slow reply is still measured
#: (a caller who speaks again while the bot talks barges in, and that turn is counted as talked over)
GAPS_S = (19.0, 22.0, 6.0)
EXPECTED_INTENTS = ["opening_hours", "service_point"]
#: (voice, words per minute, lead-in s): each checked with `voicebot replay` at 16 and 8 kHz; the
#: lead-ins start after the 5.4 s greeting and differ so that callers do not all stop on one tick
VOICES = (("espeak:en-us", 160, 6.0), ("espeak:en-us+f3", 150, 6.4), ("espeak:en-gb", 160, 6.8),
          ("espeak:en-us+m4", 160, 7.2))
#: a warm-up call hears the greeting and hangs up when this much silence has played
WARM_UP_S = 9.0
ENGINE = "pocketsphinx"
#: analysis of what the phones heard and said, at the bridge's rate
RATE_HZ = 16000
#: how long the idle service's own CPU use is measured before the first step
IDLE_S = 20.0
#: a reply that has not started this long after the caller stopped is counted as missing
REPLY_WINDOW_S = 10.0
CPU_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
#: the last run's service log (workers' lines included), kept for a look at what happened
SERVICE_LOG = PROJECT_ROOT / ".cache" / "bench" / "sip_load" / "service.log"


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """One caller's microphone WAV (at its codec's rate) and where its utterances end."""

    mic: Path
    codec: str
    speech_ends_s: tuple[float, ...]


@dataclass(slots=True)
class CpuUse:
    """CPU seconds used during one step, by who used them."""

    workers_s: float = 0.0
    recognizers_s: float = 0.0
    front_s: float = 0.0
    service_s: float = 0.0
    phones_s: float = 0.0
    machine_busy_s: float = 0.0
    wall_s: float = 0.0

    @property
    def ours_s(self) -> float:
        return self.workers_s + self.recognizers_s + self.front_s + self.service_s + self.phones_s


@dataclass(slots=True)
class StepResult:
    calls: int
    established: int = 0
    refused: list[str] = field(default_factory=list)
    #: calls whose stored record has the outcome and intents the caller asked for
    correct: int = 0
    wire_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    #: per turn, wire minus server, where a call had as many of each
    wire_minus_server_ms: list[float] = field(default_factory=list)
    missing_replies: int = 0
    #: turns where the bot was still talking when the caller stopped (not a reply latency)
    talked_over: int = 0
    underruns: int = 0
    late_in_logs: int = 0
    longest_bot_gap_ms: float = 0.0
    longest_caller_gap_ms: float = 0.0
    cpu: CpuUse = field(default_factory=CpuUse)
    #: how long each stored call lasted
    call_s: list[float] = field(default_factory=list)
    #: the machine's 1-minute load average as the step ended
    load: float = 0.0

    def service_cores_per_call(self, idle_cores: float) -> float:
        """The service's CPU (workers, recognizers, front, service) per second of one call, beyond
        what it uses with no call at all (``idle_cores``)."""
        c = self.cpu
        busy_s = c.workers_s + c.recognizers_s + c.front_s + c.service_s - idle_cores * c.wall_s
        return busy_s / sum(self.call_s) if self.call_s else float("nan")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (with few values, p95 is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(np.ceil(q * len(ordered))) - 1))] if ordered else float("nan")


# --------------------------------------------------------------------------- the calls


def build_callers(outdir: Path, rounds: int = 1) -> dict[tuple[int, str], CallerAudio]:
    """Each voice's call, as baresip's microphone for each codec, with its utterance ends; the
    questions asked ``rounds`` times before the goodbye."""
    says = list(zip(SAYS[:-1], GAPS_S[:-1])) * rounds + [(SAYS[-1], GAPS_S[-1])]
    callers: dict[tuple[int, str], CallerAudio] = {}
    for n, (voice, rate_wpm, lead_s) in enumerate(VOICES):
        spec = {"id": f"load{n}", "voice": voice, "rate": rate_wpm, "lead": lead_s,
                "steps": [{"say": text, "gap": gap} for text, gap in says]}
        wav = build_call(spec, outdir)
        for codec in ("G722", "PCMU"):
            mic = mic_wav(wav, outdir / f"load{n}.{codec}.wav", codec)
            callers[(n, codec)] = CallerAudio(mic, codec, speech_ends(mic))
    return callers


def endpointer_config() -> EndpointerConfig:
    """The endpointer as the service configures it (voicebot.app.open_runtime)."""
    listen = load_settings(env={}).listen
    return EndpointerConfig(aggressiveness=listen.vad_aggressiveness, end_silence_ms=listen.end_silence_ms,
                            min_speech_ms=listen.min_speech_ms)


def speech_ends(wav: Path) -> tuple[float, ...]:
    """Where each utterance of the WAV ends (its last voiced frame), by the endpointer the service
    runs on caller audio."""
    samples = load_wav(wav, sample_rate_hz=RATE_HZ).samples
    endpointer = Endpointer(RATE_HZ, config=endpointer_config())
    frame = RATE_HZ // 50
    ends: list[float] = []
    for i in range(0, len(samples) - frame + 1, frame):
        for event in endpointer.process(samples[i:i + frame].tobytes(), i / RATE_HZ):
            if isinstance(event, SpeechEnd):
                ends.append(event.at_s)
    return tuple(ends)


def reply_latencies_ms(heard: Path, speech_ends_s: tuple[float, ...]) -> tuple[list[float], int, int]:
    """Caller speech end -> first bot audio after it, per turn; and the turns without a reply, and
    those the bot was still talking at (both left out of the latencies)."""
    loud = loud_frames(load_wav(heard, sample_rate_hz=RATE_HZ).samples, RATE_HZ)
    latencies: list[float] = []
    missing = talked_over = 0
    for end_s in speech_ends_s:
        first = int(np.ceil(end_s / LOUD_FRAME_S))
        if first >= len(loud):
            missing += 1
        elif first > 0 and loud[first - 1]:
            talked_over += 1
        else:
            window = loud[first:first + int(REPLY_WINDOW_S / LOUD_FRAME_S)]
            if window.any():
                latencies.append((int(np.argmax(window)) + first) * LOUD_FRAME_S * 1000 - end_s * 1000)
            else:
                missing += 1
    return latencies, missing, talked_over


# --------------------------------------------------------------------------- CPU accounting


def _cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * CPU_TICK_S  # utime, stime


def _machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) * CPU_TICK_S


def service_processes(root: int) -> dict[int, str]:
    """The service's process tree, each process by kind: service, workers, recognizers, front."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    kinds: dict[int, str] = {}
    for pid in tree:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        kinds[pid] = ("service" if pid == root else "workers" if "voicebot.sip.worker" in cmdline
                      else "recognizers" if "multiprocessing" in cmdline else "front" if "kamailio" in cmdline
                      else "service")
    return kinds


def cpu_snapshot(service_root: int, phones: list[int]) -> dict[str, float]:
    """CPU seconds so far: per kind of service process, the phones', and the machine's."""
    totals = {"workers": 0.0, "recognizers": 0.0, "front": 0.0, "service": 0.0, "phones": 0.0}
    for pid, kind in service_processes(service_root).items():
        totals[kind] += _cpu_s(pid) or 0.0
    totals["phones"] = sum(_cpu_s(pid) or 0.0 for pid in phones)
    totals["machine"] = _machine_busy_s()
    totals["wall"] = time.monotonic()
    return totals


def cpu_between(before: dict[str, float], after: dict[str, float]) -> CpuUse:
    d = {k: after[k] - before[k] for k in after}
    return CpuUse(d["workers"], d["recognizers"], d["front"], d["service"], d["phones"], d["machine"], d["wall"])


# --------------------------------------------------------------------------- one step


async def run_step(svc: ServiceProcess, step: int, count: int, callers: dict[tuple[int, str], CallerAudio],
                   workdir: Path, *, spread_s: float = 0.0, rounds: int = 1) -> StepResult:
    """``count`` callers, dialling ``spread_s / count`` apart; their calls measured and read back. With
    a spread only the turns that end while all of them are up count."""
    result = StepResult(count)
    plan: list[tuple[BaresipAgent, CallerAudio, str]] = []
    for i in range(count):
        codec = "PCMU" if i % 3 == 2 else "G722"
        caller = callers[(i % len(VOICES), codec)]
        user = f"s{step:02d}c{i:02d}"
        phone = BaresipAgent(workdir / user, user=user, mic=caller.mic, codec=codec)
        plan.append((phone, caller, "tcp" if i % 2 else "udp"))
    phones = [p for p, _, _ in plan]
    log_from = len(svc.lines)
    underruns_before = metric_total(await svc.metrics(), "voicebot_audio_underruns_total")
    assert svc.proc is not None
    try:
        await asyncio.gather(*(p.start() for p in phones))
        before = cpu_snapshot(svc.proc.pid, [p.pid for p in phones if p.pid])
        loop = asyncio.get_running_loop()
        dialled: dict[int, float] = {}

        async def dial(i: int, phone: BaresipAgent, transport: str) -> None:
            await asyncio.sleep(i * spread_s / count)
            dialled[i] = loop.time()
            await phone.dial(svc.uri + (";transport=tcp" if transport == "tcp" else ""))

        await asyncio.gather(*(dial(i, p, t) for i, (p, _, t) in enumerate(plan)))
        longest_s = max(float(c.speech_ends_s[-1]) for _, c, _ in plan) + GAPS_S[-1]
        await asyncio.gather(*(p.wait_event("CALL_CLOSED", longest_s + spread_s + 120) for p in phones),
                             return_exceptions=True)
        result.cpu = cpu_between(before, cpu_snapshot(svc.proc.pid, [p.pid for p in phones if p.pid]))
    finally:
        await asyncio.gather(*(p.stop() for p in phones), return_exceptions=True)
    records = await stored_records(svc, {p.user for p in phones})
    # the turns that count: with a spread, those ending while every caller is on the line
    first_hangup_s = min(dialled[i] + float(c.speech_ends_s[-1]) for i, (_, c, _) in enumerate(plan))
    for i, (phone, caller, _) in enumerate(plan):
        counted = [not spread_s or max(dialled.values()) <= dialled[i] + end_s <= first_hangup_s
                   for end_s in caller.speech_ends_s]
        if any(e.type == "CALL_ESTABLISHED" for e in phone.events):
            result.established += 1
        if refused := phone.refused():
            result.refused.append(refused)
        heard = phone.heard()
        wire: list[float] = []
        if heard is not None:
            ends_s = tuple(e for e, keep in zip(caller.speech_ends_s, counted) if keep)
            wire, missing, talked_over = await loop.run_in_executor(None, reply_latencies_ms, heard, ends_s)
            result.missing_replies += missing
            result.talked_over += talked_over
        result.wire_ms += wire
        record = records.get(phone.user)
        if record is None:
            continue
        result.call_s.append(float(record["duration_s"]))
        server = [float(x) for x in record["latency_ms"]]
        if len(server) == len(counted):
            server = [x for x, keep in zip(server, counted) if keep]
        result.server_ms += server
        if len(server) == len(wire):
            result.wire_minus_server_ms += [w - s for w, s in zip(wire, server)]
        if record["outcome"] == "completed" and record["intents"] == EXPECTED_INTENTS * rounds:
            result.correct += 1
    result.load = os.getloadavg()[0]
    result.underruns = int(metric_total(await svc.metrics(), "voicebot_audio_underruns_total") - underruns_before)
    media = svc.call_media(log_from)
    result.late_in_logs = sum(m.late_frames for m in media)
    result.longest_bot_gap_ms = max((m.longest_gap_ms for m in media), default=0.0)
    result.longest_caller_gap_ms = max((m.longest_caller_gap_ms for m in media), default=0.0)
    return result


async def warm_up(svc: ServiceProcess, count: int, workdir: Path) -> list[float]:
    """``count`` calls at once that hear the greeting and hang up; for each, the seconds from the
    answer to the greeting's start (its record's first bot turn; the call's length if it had none).

    A worker's recognizer process builds decoders for all the worker's calls in the background when
    it starts (~0.4 s of CPU each); before that, each call beyond the first built its own before its
    greeting (20 callers at once: p50 6.4 s, max 12.8 s). After this round the steps measure a
    service that has held as many calls at once before, as a service in use has."""
    silence = workdir / "silence.wav"
    write_wav(silence, np.zeros(int(WARM_UP_S * RATE_HZ), np.int16), RATE_HZ)
    phones = [BaresipAgent(workdir / f"warm{i:02d}", user=f"warm{i:02d}", mic=silence) for i in range(count)]
    try:
        await asyncio.gather(*(p.start() for p in phones))
        await asyncio.gather(*(p.dial(svc.uri) for p in phones))
        await asyncio.gather(*(p.wait_event("CALL_CLOSED", WARM_UP_S + 120) for p in phones), return_exceptions=True)
    finally:
        await asyncio.gather(*(p.stop() for p in phones), return_exceptions=True)
    records = await stored_records(svc, {p.user for p in phones})
    return [next((float(t["start_s"]) for t in r["turns"] if t["speaker"] == "bot"), float(r["duration_s"]))
            for r in records.values()]


async def stored_records(svc: ServiceProcess, users: set[str], timeout_s: float = 60.0) -> dict[str, dict]:
    """The ended calls of these callers, by caller ID, through the HTTP API."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        calls = [c for c in (await svc.get("/api/calls?limit=500"))["calls"] if c["caller_id"] in users]
        if (len(calls) >= len(users) and all(c["status"] == "ended" for c in calls)) or loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    return {c["caller_id"]: await svc.get(f"/api/calls/{c['call_id']}") for c in calls}


# --------------------------------------------------------------------------- where the time goes


def profile_final_decode(callers: dict[tuple[int, str], CallerAudio]) -> list[float]:
    """Milliseconds of the recognizer's final decode per utterance, in-process on an idle engine
    (what one turn costs at one call, before any queueing), on the G.722 callers' audio, through
    the service's own listener (so the recognizer is fed and asked exactly as in a call)."""
    from voicebot.asr.grammar import GrammarSet
    from voicebot.asr.select import open_engine
    from voicebot.calls.listener import Listener
    from voicebot.dialogue.scenario import load_scenario
    from voicebot.dialogue.fields import is_complete
    from voicebot.events import AudioFrame, Utterance

    settings = load_settings(env={}, overrides={("asr", "engine"): ENGINE})
    scenario = load_scenario(settings.scenario)
    engine = open_engine(ENGINE, vosk_model=None, models_dir=settings.asr.models_dir,
                         grammars=GrammarSet.load(settings.asr.grammars_dir),
                         open_sentences=scenario.open_speech_sentences(),
                         max_alternatives=settings.asr.max_alternatives,
                         pocketsphinx_model=settings.asr.pocketsphinx_model, workers=0)

    async def inline(fn, *args):
        return fn(*args)

    async def listen(samples: np.ndarray) -> list[float]:
        stream = engine.open_stream()
        listener = Listener(stream, RATE_HZ, inline, is_complete, ListenerConfig(endpointer=endpointer_config()))
        finals: list[float] = []
        frame = RATE_HZ // 50
        try:
            for i in range(0, len(samples) - frame + 1, frame):
                for event in await listener.on_frame(AudioFrame(samples[i:i + frame].tobytes(), RATE_HZ, i / RATE_HZ)):
                    if isinstance(event, Utterance):
                        finals.append(listener.timing.asr_wall_s * 1000)
        finally:
            stream.close()
        return finals

    finals_ms: list[float] = []
    for (_, codec), caller in sorted(callers.items()):
        if codec == "G722":
            finals_ms += asyncio.run(listen(load_wav(caller.mic, sample_rate_hz=RATE_HZ).samples))
    return finals_ms


# --------------------------------------------------------------------------- main


def heard_ms(r: StepResult) -> list[float]:
    """The turns' latencies as the callers heard them; a turn without a reply in REPLY_WINDOW_S, or
    with the bot still talking as the caller ended, as infinite (left out, it would flatter a load)."""
    return r.wire_ms + [math.inf] * (r.missing_replies + r.talked_over)


def row(r: StepResult, limit_ms: float) -> str:
    wire50, wire95 = percentile(heard_ms(r), 0.5), percentile(heard_ms(r), 0.95)
    srv50, srv95 = percentile(r.server_ms, 0.5), percentile(r.server_ms, 0.95)
    diff = statistics.mean(r.wire_minus_server_ms) if r.wire_minus_server_ms else float("nan")
    cores = r.cpu.machine_busy_s / r.cpu.wall_s if r.cpu.wall_s else float("nan")
    others = max(0.0, r.cpu.machine_busy_s - r.cpu.ours_s) / r.cpu.wall_s if r.cpu.wall_s else float("nan")
    ok = "ok" if wire95 <= limit_ms and r.underruns == 0 and not r.refused else "--"
    return (f"{r.calls:5d} {r.established:4d} {r.correct:4d} {len(r.wire_ms):5d} {r.missing_replies + r.talked_over:4d}"
            f" {wire50:7.0f} {wire95:7.0f} {srv50:7.0f} {srv95:7.0f} {diff:+6.0f}"
            f" {r.underruns:5d} {r.late_in_logs:4d} {r.longest_bot_gap_ms:5.0f} {r.longest_caller_gap_ms:5.0f}"
            f" {cores:5.2f} {r.cpu.workers_s / r.cpu.wall_s:5.2f} {r.cpu.recognizers_s / r.cpu.wall_s:5.2f}"
            f" {r.cpu.phones_s / r.cpu.wall_s:5.2f} {others:5.2f} {r.load:5.1f}  {ok}")


HEADER = ("calls  up   ok turns miss wire50  wire95  srv50   srv95  w-s   under late  gap  rxgap"
          "  cpu  wrk   asr  phone other  load\n"
          "                            (ms)    (ms)    (ms)    (ms)  (ms)  (frames)  (ms)  (ms)"
          " (cores used, of {cores})     (1 min)\n"
          "(wire: as the callers heard it, 'inf' where a reply did not start within "
          f"{REPLY_WINDOW_S:g} s; srv: the service's own figure, replies only)")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="1,5,10,15,20", help="simultaneous calls per step")
    ap.add_argument("--limit-ms", type=float, default=800.0, help="p95 turn latency that passes")
    ap.add_argument("--stop-ms", type=float, default=4000.0, help="stop once the wire p95 passes this")
    ap.add_argument("--no-profile", action="store_true", help="skip the in-process recognizer profile")
    ap.add_argument("--spread", action="store_true",
                    help="callers dial one after another across a round of their questions (see above)")
    ap.add_argument("--no-warm-up", action="store_true",
                    help="measure a fresh service: no round of short calls first (see warm_up)")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    settings = load_settings(env={})
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="voicebot-sip-load-") as tmp:
        workdir = Path(tmp)
        rounds = 2 if args.spread else 1
        callers = await loop.run_in_executor(None, build_callers, workdir / "calls", rounds)
        # one round of questions: from the first question's end to the same question's end in round two
        first = next(iter(callers.values())).speech_ends_s
        spread_s = first[len(SAYS) - 1] - first[0] if args.spread else 0.0
        finals_ms = [] if args.no_profile else await loop.run_in_executor(None, profile_final_decode, callers)
        svc = ServiceProcess(workdir, loopback_config(workdir / "data", max_calls=max(counts)))
        results: list[StepResult] = []
        idle_cores = 0.0
        try:
            await svc.start(timeout_s=300)
            assert svc.proc is not None
            workers = max(1, -(-max(counts) // settings.sip.call_slots))
            before = cpu_snapshot(svc.proc.pid, [])
            await asyncio.sleep(IDLE_S)
            idle = cpu_between(before, cpu_snapshot(svc.proc.pid, []))
            idle_cores = (idle.workers_s + idle.recognizers_s + idle.front_s + idle.service_s) / idle.wall_s
            print(f"voicebot serve: max_calls {max(counts)}, {workers} call workers; {os.cpu_count()} CPUs;"
                  f" load average {os.getloadavg()[0]:.1f} before the first step; with no call the service uses"
                  f" {idle_cores:.2f} cores ({idle.workers_s / idle.wall_s:.2f} its workers) and everything else"
                  f" on the machine {(idle.machine_busy_s - idle.ours_s) / idle.wall_s:.2f}\n")
            if not args.no_warm_up:
                greeted_s = await warm_up(svc, max(counts), workdir / "warm-up")
                print(f"warm-up: {max(counts)} calls at once on the fresh service; the greeting began"
                      f" p50 {percentile(greeted_s, 0.5):.1f} s, max {max(greeted_s):.1f} s after the answer"
                      "\n")
            if args.spread:
                print(f"spread: each step's callers dial {spread_s:.0f} s apart in all, ask their questions twice,"
                      " and the turns that end while all of them are on the line count\n")
            print(HEADER.format(cores=os.cpu_count()))
            for step, count in enumerate(counts):
                result = await run_step(svc, step, count, callers, workdir / f"step{step:02d}",
                                        spread_s=spread_s, rounds=rounds)
                results.append(result)
                print(row(result, args.limit_ms), flush=True)
                if percentile(heard_ms(result), 0.95) > args.stop_ms or result.refused:
                    print(f"(stopped: p95 past {args.stop_ms:.0f} ms or calls refused)")
                    break
        finally:
            await svc.stop()
            SERVICE_LOG.parent.mkdir(parents=True, exist_ok=True)
            SERVICE_LOG.write_text(svc.log())
    passing = [r.calls for r in results if r.wire_ms and percentile(heard_ms(r), 0.95) <= args.limit_ms
               and r.underruns == 0 and not r.refused and r.established == r.calls]
    best = max(passing, default=None)
    print(f"\nlargest count with turn latency p95 <= {args.limit_ms:.0f} ms and no underruns:"
          f" {best if best is not None else 'none (not even 1 call)'}")
    listen = settings.listen
    ahead = (f"decoded {listen.ahead_silence_ms} ms into a pause (listen.ahead_silence_ms), a question the"
             " scenario is sure of answered then, any other turn after" if listen.decode_ahead else "decoded")
    print(f"\nwhere a turn's time goes: {ahead} the {listen.end_silence_ms} ms end-of-turn silence"
          " (listen.end_silence_ms);")
    if finals_ms:
        print(f"  recognizer final decode, in-process on one idle stream: p50 {percentile(finals_ms, 0.5):.0f} ms,"
              f" p95 {percentile(finals_ms, 0.95):.0f} ms over {len(finals_ms)} utterances")
    cores = os.cpu_count() or 1
    for r in results:
        if r.server_ms:
            per_call = r.service_cores_per_call(idle_cores)
            hold = (f"so {cores} otherwise idle cores hold {(cores - idle_cores) / per_call:.0f} calls at most"
                    if per_call > 0 else "too little to tell from the service's idle use")
            print(f"  {r.calls:2d} calls: server latency p50 {percentile(r.server_ms, 0.5):.0f} ms; machine"
                  f" {r.cpu.machine_busy_s / r.cpu.wall_s:.2f} of {cores} cores busy"
                  f" ({r.cpu.ours_s / r.cpu.wall_s:.2f} by this bench); a call costs the service"
                  f" {per_call:.3f} cores beyond its idle {idle_cores:.2f}, {hold}")


if __name__ == "__main__":
    asyncio.run(main())
