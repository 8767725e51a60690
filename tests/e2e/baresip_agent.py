"""Debian's baresip as a real SIP phone for the SIP tests, driven over its ctrl_tcp interface.

Each agent is one baresip process with its own config directory, SIP port and
control port. Its microphone is a WAV file (the ``aufile`` module, which needs
the WAV at the codec's clock rate: 16 kHz for G.722, 8 kHz for PCMU/PCMA) and
it hangs up by itself about a second after that WAV has played. What it hears
is dumped by the ``sndfile`` module. Events (CALL_INCOMING, CALL_ESTABLISHED,
CALL_CLOSED, ...) are collected for the test to wait on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voicebot.audio.wav import load_wav, write_wav
from voicebot.child_process import die_with_parent

BARESIP = shutil.which("baresip")
MODULES_DIR = Path("/usr/lib/baresip/modules")
#: account codec lists as baresip 1.0 spells them
CODECS = {"G722": "G722/16000/1", "PCMU": "PCMU/8000/1", "PCMA": "PCMA/8000/1"}
CODEC_RATE_HZ = {"G722": 16000, "PCMU": 8000, "PCMA": 8000}
#: no test call lasts longer
MAX_LIFE_S = 900
#: where free_port() picks ports: below the kernel's ephemeral range (32768 up), whose free ports a
#: process binding "any port" (the service's workers, PJSIP's RTP, any client) may take between our
#: choice and baresip's start (seen: "SIP Transport failed: Address already in use"), and below
#: baresip's RTP ports (10000-20000) and the SIP front's test ports (serve.py: 20000 up)
PORT_BAND = (5100, 10000)
_HANDED_OUT: set[int] = set()
#: what a patient caller hears as the bot speaking: 10 ms frames louder than this (codec idle noise is far below)
LOUD_DBFS = -50.0
HEARING_FRAME_S = 0.010
#: how often a patient caller's ears look at what it heard
HEARING_POLL_S = 0.25


def free_port(*, udp: bool = False, tcp_after: int = 0) -> int:
    """A port free on 127.0.0.1 for TCP (and for UDP too, with ``udp``; and the ``tcp_after`` ports
    after it for TCP) now, for something to bind later: from PORT_BAND, where no process binding
    "any port" is handed it in between, and never one this process was handed before (a phone's
    ports are picked before it starts)."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(PORT_BAND[0], PORT_BAND[1] - tcp_after)
        wanted = range(port, port + 1 + tcp_after)
        if _HANDED_OUT.intersection(wanted) or not all(_bindable(p, udp=udp and p == port) for p in wanted):
            continue
        _HANDED_OUT.update(wanted)
        return port
    raise RuntimeError(f"no free port in {PORT_BAND}")


def _bindable(port: int, *, udp: bool) -> bool:
    with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        try:
            t.bind(("127.0.0.1", port))
            if udp:
                u.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    return free_port(udp=True)


def mic_wav(source: Path, out: Path, codec: str, *, hold_s: float = 0.0) -> Path:
    """The call's WAV as baresip's aufile wants it: PCM16 mono at the codec's clock rate.

    ``hold_s`` of silence after it keeps a patient caller on the line that much longer for the bot
    to finish (the phone hangs up when its WAV ends; the bot hangs up once it has said goodbye).
    """
    rate_hz = CODEC_RATE_HZ[codec]
    audio = load_wav(source, sample_rate_hz=rate_hz)
    write_wav(out, np.concatenate([audio.samples, np.zeros(int(hold_s * rate_hz), np.int16)]), rate_hz)
    return out


def loud_frames(samples: np.ndarray, rate_hz: int) -> np.ndarray:
    """For each whole 10 ms frame of 16-bit ``samples``: whether the bot is speaking in it."""
    step = int(rate_hz * HEARING_FRAME_S)
    frames = samples[: len(samples) // step * step].astype(np.float64).reshape(-1, step) / 32768.0
    return 10 * np.log10((frames ** 2).mean(axis=1) + 1e-12) > LOUD_DBFS


@dataclass
class Event:
    type: str
    data: dict


class Ears:
    """What a phone has heard so far, from sndfile's decoder dump as baresip writes it.

    Each look reads only what the dump has grown by (a quarter second of audio is 8 kB at
    16 kHz), on the event loop: cheaper than an executor hop, and no thread of its own to
    fight the loop for the GIL (ten phones' threads did, and held the loop up for 0.9 s on a
    loaded machine)."""

    def __init__(self, snd_dir: Path) -> None:
        self._snd_dir = snd_dir
        #: 10 ms frames of call audio heard so far, and the last of them the bot was speaking in (-1: none)
        self.frames = 0
        self.last_loud = -1
        self._dump: Path | None = None
        self._offset = 0
        self._rate_hz = 0
        self._tail = b""

    @property
    def heard_s(self) -> float:
        return self.frames * HEARING_FRAME_S

    def look(self) -> None:
        """Take in what the phone has heard since the last look."""
        self._dump = self._dump or next(iter(sorted(self._snd_dir.glob("*-dec.wav"))), None)
        if self._dump is not None:
            self._listen(self._dump)

    def _listen(self, dump: Path) -> None:
        """Take in what the dump has grown by since the last look."""
        with open(dump, "rb") as f:
            if not self._offset:
                head = f.read(512)
                at = head.find(b"data", 12)
                if at < 0 or len(head) < 28:
                    return
                self._rate_hz, self._offset = int.from_bytes(head[24:28], "little"), at + 8
            f.seek(self._offset)
            data = self._tail + f.read()
            self._offset += len(data) - len(self._tail)
        step = int(self._rate_hz * HEARING_FRAME_S) * 2
        whole = len(data) // step * step
        self._tail = data[whole:]
        if whole:
            frames = loud_frames(np.frombuffer(data[:whole], "<i2"), self._rate_hz)
            loud = np.flatnonzero(frames)
            if loud.size:
                self.last_loud = self.frames + int(loud[-1])
            self.frames += len(frames)


class BaresipAgent:
    def __init__(self, workdir: Path, *, user: str, mic: Path | None, codec: str = "G722",
                 auto_answer: bool = False, max_calls: int = 4, account_params: tuple[str, ...] = (),
                 silent_s: int = 120) -> None:
        """``max_calls``: calls beyond it get 486 (a busy phone); ``account_params``: more baresip
        account parameters, e.g. 'outbound="sip:127.0.0.1:5060;lr"' or 'auth_pass=secret'; ``silent_s``:
        without a ``mic``, how long the phone's silent microphone plays (and so its calls last at most)."""
        if BARESIP is None:
            raise RuntimeError("baresip is not installed (make debs installs it)")
        self.dir = workdir
        self.user = user
        self.codec = codec
        # baresip listens on the SIP port (UDP and TCP) and on the next one too (TCP)
        self.sip_port = free_port(udp=True, tcp_after=1)
        self.ctrl_port = free_port()
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._responses: dict[str, asyncio.Future] = {}
        self._token = 0
        self.snd_dir = workdir / "snd"
        self.snd_dir.mkdir(parents=True, exist_ok=True)
        self.ears = Ears(self.snd_dir)
        silence = workdir / "silence.wav"
        if mic is None:
            write_wav(silence, np.zeros(CODEC_RATE_HZ[codec] * silent_s, np.int16), CODEC_RATE_HZ[codec])
            mic = silence
        (workdir / "config").write_text("\n".join([
            "poll_method epoll",
            f"sip_listen 127.0.0.1:{self.sip_port}",
            "call_local_timeout 120",
            "rtp_ports 10000-20000",  # out of PORT_BAND (its default: 1024-49152)
            f"call_max_calls {max_calls}",
            "audio_player none,none",
            f"audio_source aufile,{mic}",
            "jitter_buffer_delay 2-10",
            f"module_path {MODULES_DIR}",
            "module g722.so",
            "module g711.so",
            "module aufile.so",
            "module sndfile.so",
            f"snd_path {self.snd_dir}",
            "module_tmp account.so",
            "module_app menu.so",
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
            "",
        ]))
        params = [f"audio_codecs={CODECS[codec]}", "regint=0", f"answermode={'auto' if auto_answer else 'manual'}",
                  *account_params]
        (workdir / "accounts").write_text(f"<sip:{user}@127.0.0.1:{self.sip_port}>;" + ";".join(params) + "\n")

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.sip_port}"

    @property
    def pid(self) -> int | None:
        """The baresip process, while it runs (a load test counts the CPU its phones use)."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    def refused(self) -> str | None:
        """The final answer of a call the far end turned away ("486 Busy Here", "503 ..."), if one was."""
        for ev in self.events:
            param = ev.data.get("param", "")
            if ev.type == "CALL_CLOSED" and re.match(r"[3-6]\d\d ", param):
                return param
        return None

    async def start(self) -> None:
        # SIGTERM when the test process dies
        prefix, preexec = die_with_parent()
        with open(self.dir / "baresip.log", "wb") as log:
            # -t: a phone left over by a crashed test run quits by itself
            self._proc = await asyncio.create_subprocess_exec(
                *prefix, BARESIP, "-f", str(self.dir), "-t", str(MAX_LIFE_S), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec)
        for _ in range(100):
            try:
                reader, self._writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
                break
            except OSError:
                if self._proc.returncode is not None:
                    raise RuntimeError(f"baresip exited at start: {self.log()[-2000:]}")
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"baresip control port did not open: {self.log()[-2000:]}")
        self._reader_task = asyncio.ensure_future(self._read(reader))

    async def command(self, command: str, params: str = "") -> dict:
        assert self._writer is not None
        self._token += 1
        token = str(self._token)
        fut = asyncio.get_running_loop().create_future()
        self._responses[token] = fut
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._writer.write(str(len(body)).encode() + b":" + body + b",")
        await self._writer.drain()
        return await asyncio.wait_for(fut, 10)

    async def dial(self, uri: str) -> None:
        await self.command("dial", uri)

    async def send_dtmf(self, key: str) -> None:
        """An RFC 4733 telephone-event (baresip's only way of sending keys)."""
        await self.command("sndcode", key)

    async def hangup(self) -> None:
        await self.command("hangup")

    async def say(self, wav: Path) -> float:
        """The microphone plays ``wav`` from now on (baresip's ``ausrc``); returns where that is on
        the call's audio timeline (as far as the ears have heard). The WAV must outlast the call:
        the phone hangs up when it ends."""
        self.ears.look()
        at_s = self.ears.heard_s
        await self.command("ausrc", f"aufile,{wav}")
        return at_s

    def closed(self) -> bool:
        return any(e.type == "CALL_CLOSED" for e in self.events)

    async def wait_for_bot_turn(self, after_s: float, quiet_s: float, timeout_s: float) -> None:
        """Until the bot has said something after ``after_s`` (seconds into the call's audio) and then
        kept quiet for ``quiet_s``, or the call is over."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        first = round(after_s / HEARING_FRAME_S)
        while not self.closed():
            self.ears.look()
            last = self.ears.last_loud
            if last >= first and self.ears.heard_s - (last + 1) * HEARING_FRAME_S >= quiet_s:
                return
            if loop.time() > deadline:
                raise AssertionError(f"baresip {self.user}: the bot's turn after {after_s:.1f} s did not end"
                                     f" within {timeout_s:g} s (heard {self.ears.heard_s:.1f} s)")
            await asyncio.sleep(HEARING_POLL_S)

    async def converse(self, steps: Sequence[tuple[Path, float]], *, quiet_s: float = 1.5,
                       first_pause_s: float = 0.0, turn_timeout_s: float = 120.0) -> list[float]:
        """A patient caller: after the bot's greeting (and ``first_pause_s`` more), and after each of
        its answers, the next step (a WAV and how long its sound lasts before the silence that keeps
        the line open); then waits for the bot to hang up. Slow answers make the call longer, never
        cut the bot off. Returns where on the call's audio timeline each step said ended (fewer than
        the steps when the bot hung up first); ``ears.last_loud`` then tells whether the bot was
        heard after the last."""
        said: list[float] = []
        for n, (wav, sound_s) in enumerate(steps):
            await self.wait_for_bot_turn(said[-1] if said else 0.0, quiet_s, turn_timeout_s)
            if self.closed():
                break
            if n == 0:
                await asyncio.sleep(first_pause_s)
            said.append(await self.say(wav) + sound_s)
        await self.wait_event("CALL_CLOSED", turn_timeout_s)
        self.ears.look()
        return said

    async def wait_event(self, type_: str, timeout_s: float) -> Event:
        """The first event of ``type_`` (already seen or still to come)."""
        async def first() -> Event:
            while True:
                for ev in self.events:
                    if ev.type == type_:
                        return ev
                self._changed.clear()
                await self._changed.wait()
        try:
            return await asyncio.wait_for(first(), timeout_s)
        except TimeoutError:
            seen = [e.type for e in self.events]
            raise AssertionError(f"baresip {self.user}: no {type_} within {timeout_s} s (events: {seen});"
                                 f" log: {self.log()[-3000:]}") from None

    def heard(self) -> Path | None:
        """The WAV of what this phone received (sndfile's decoder dump), if any."""
        dumps = sorted(self.snd_dir.glob("*-dec.wav"))
        return dumps[-1] if dumps else None

    def log(self) -> str:
        try:
            return (self.dir / "baresip.log").read_text(errors="replace")
        except OSError:
            return ""

    async def stop(self) -> None:
        if self._writer is not None:
            try:
                await self.command("quit")
            except (OSError, TimeoutError, asyncio.TimeoutError, ConnectionError):
                pass
            self._writer.close()
        if self._proc is not None and self._proc.returncode is None:
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                head = await reader.readuntil(b":")
                body = await reader.readexactly(int(head[:-1]))
                await reader.readexactly(1)  # the netstring's ","
            except (asyncio.IncompleteReadError, ValueError, ConnectionError):
                return
            msg = json.loads(body)
            if msg.get("response"):
                fut = self._responses.pop(str(msg.get("token")), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif msg.get("event"):
                self.events.append(Event(msg.get("type", ""), msg))
                self._changed.set()


@contextlib.asynccontextmanager
async def running(*agents: BaresipAgent) -> AsyncIterator[None]:
    """Start the agents together; stop them all at the end, whatever happened."""
    try:
        await asyncio.gather(*(a.start() for a in agents))
        yield
    finally:
        await asyncio.gather(*(a.stop() for a in agents), return_exceptions=True)
