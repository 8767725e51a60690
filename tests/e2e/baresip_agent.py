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
import ctypes
import json
import re
import signal
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voicebot.audio.wav import load_wav, write_wav

BARESIP = shutil.which("baresip")
MODULES_DIR = Path("/usr/lib/baresip/modules")
#: account codec lists as baresip 1.0 spells them
CODECS = {"G722": "G722/16000/1", "PCMU": "PCMU/8000/1", "PCMA": "PCMA/8000/1"}
CODEC_RATE_HZ = {"G722": 16000, "PCMU": 8000, "PCMA": 8000}
#: no test call lasts longer
MAX_LIFE_S = 900
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies (Linux)."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def mic_wav(source: Path, out: Path, codec: str) -> Path:
    """The call's WAV as baresip's aufile wants it: PCM16 mono at the codec's clock rate."""
    audio = load_wav(source, sample_rate_hz=CODEC_RATE_HZ[codec])
    write_wav(out, audio.samples, CODEC_RATE_HZ[codec])
    return out


@dataclass
class Event:
    type: str
    data: dict


class BaresipAgent:
    def __init__(self, workdir: Path, *, user: str, mic: Path | None, codec: str = "G722",
                 auto_answer: bool = False, max_calls: int = 4, account_params: tuple[str, ...] = ()) -> None:
        """``max_calls``: calls beyond it get 486 (a busy phone); ``account_params``: more baresip
        account parameters, e.g. 'outbound="sip:127.0.0.1:5060;lr"' or 'auth_pass=secret'."""
        if BARESIP is None:
            raise RuntimeError("baresip is not installed (make debs installs it)")
        self.dir = workdir
        self.user = user
        self.codec = codec
        self.sip_port = free_udp_tcp_port()
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
        silence = workdir / "silence.wav"
        if mic is None:
            write_wav(silence, np.zeros(CODEC_RATE_HZ[codec] * 120, np.int16), CODEC_RATE_HZ[codec])
            mic = silence
        (workdir / "config").write_text("\n".join([
            "poll_method epoll",
            f"sip_listen 127.0.0.1:{self.sip_port}",
            "call_local_timeout 120",
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
        with open(self.dir / "baresip.log", "wb") as log:
            # -t: a phone left over by a crashed test run quits by itself
            self._proc = await asyncio.create_subprocess_exec(
                BARESIP, "-f", str(self.dir), "-t", str(MAX_LIFE_S), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
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
