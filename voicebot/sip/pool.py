"""The service's call-answering worker processes (``voicebot.sip.worker``), started and watched.

Each worker gets a fixed loopback SIP port for its life, so one that crashes
is started again on the same port and the front's dispatch list never changes.
Port 0 (tests) lets each worker's first start take any free port, which it
reports; choosing free ports up front raced with other processes binding them.
No pjsua2 here: the service process itself never loads PJSIP in this mode.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import pickle
import socket
import sys
from dataclasses import dataclass, replace
from typing import AsyncIterator, Callable

from voicebot.config import AsrSettings, Settings
from voicebot.sip.settings import SipError, SipRegistration, SipSettings

log = logging.getLogger("voicebot.sip.pool")

#: loopback address the workers listen on behind the front
WORKER_HOST = "127.0.0.1"
#: a worker loads the recognizer, the synthesizer and PJSIP before it answers
START_TIMEOUT_S = 120.0
#: wait this long before starting a crashed worker again
RESTART_DELAY_S = 1.0
#: what a worker prints on stdout once it answers calls, followed by its port
READY = "READY"


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What ``python -m voicebot.sip.worker`` reads (pickled) from its stdin."""

    index: int
    #: the worker's own settings: SIP on a loopback port, its share of RTP ports and calls
    settings: Settings
    log_level: int = logging.WARNING


def encode_spec(spec: WorkerSpec) -> bytes:
    """One line: the worker reads it before anything else from its stdin."""
    return base64.b64encode(pickle.dumps(spec)) + b"\n"


def decode_spec(line: bytes) -> WorkerSpec:
    return pickle.loads(base64.b64decode(line))


def worker_settings(settings: Settings, index: int, count: int, port: int, front_address: str) -> Settings:
    """A worker's own settings: SIP on a loopback port, its share of calls and RTP ports."""
    sip = settings.sip
    # The shares add up to max_calls (10 over 3 workers: 4, 3, 3); each rounded up let the
    # workers of a 10-call service take 12 at once. (More workers than calls: one each.)
    share = max(1, sip.max_calls // count + (index < sip.max_calls % count))
    rtp_range = sip.rtp_port_range // count if sip.rtp_port else 0
    worker_sip = replace(
        sip, host=WORKER_HOST, port=port, udp=True, tcp=False, public_address=None,
        media_address=sip.media_address or sip.public_address, front_address=front_address,
        max_calls=min(share, sip.capacity), workers=0,
        rtp_port=sip.rtp_port + index * rtp_range if sip.rtp_port else 0, rtp_port_range=rtp_range,
        # one registration for the whole service, made by the first worker in the front's name
        register=_front_registration(sip) if index == 0 else SipRegistration(),
    )
    # One recognizer process per worker: the workers already spread calls over the CPUs. Its
    # recognizers are built for all the worker's calls, so a burst of callers is greeted at once.
    asr: AsrSettings = replace(settings.asr, workers=1 if settings.asr.workers is None else settings.asr.workers,
                               ready_calls=worker_sip.max_calls)
    return replace(settings, sip=worker_sip, asr=asr)


def _front_registration(sip: SipSettings) -> SipRegistration:
    """The registration with the front's public address as its contact, where the PBX's calls belong."""
    reg = sip.register
    if not reg.registrar_uri or reg.contact_uri:
        return reg
    host = sip.public_address or primary_address()
    return replace(reg, contact_uri=f"sip:{reg.username}@{host}:{sip.port}")


def primary_address() -> str:
    """This machine's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


class WorkerPool:
    """Use through ``open_worker_pool``."""

    def __init__(self, settings: Settings, ports: list[int], front_address: str, *, metrics_dir: str | None,
                 on_exit: Callable[[int], None] | None = None) -> None:
        self._settings = settings
        self._front_address = front_address
        self._metrics_dir = metrics_dir
        self._on_exit = on_exit
        self.ports = list(ports)
        self._procs: list[asyncio.subprocess.Process | None] = [None] * len(ports)
        self._watchers: list[asyncio.Task] = []
        self.stopping = False
        self.restarts = 0

    async def start(self) -> None:
        await asyncio.gather(*(self._start(i) for i in range(len(self.ports))))
        self._watchers = [asyncio.create_task(self._watch(i)) for i in range(len(self.ports))]

    async def _start(self, index: int) -> None:
        count = len(self.ports)
        spec = WorkerSpec(index, worker_settings(self._settings, index, count, self.ports[index],
                                                 self._front_address),
                          log_level=logging.getLogger().getEffectiveLevel())
        env = dict(os.environ)
        if self._metrics_dir is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicebot.sip.worker", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env)
        self._procs[index] = proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(encode_spec(spec))
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            raise SipError(f"call worker {index} did not start within {START_TIMEOUT_S:g} s") from None
        if not line.startswith(READY.encode()):
            await proc.wait()
            raise SipError(f"call worker {index} could not start (exit code {proc.returncode}; its error is above)")
        if self.ports[index] == 0:
            self.ports[index] = int(line.split()[1])
        log.info("call worker %d (pid %d) answers on %s:%d", index, proc.pid, WORKER_HOST, self.ports[index])

    async def _watch(self, index: int) -> None:
        """Start a worker again when it dies while the service runs."""
        while True:
            proc = self._procs[index]
            assert proc is not None
            code = await proc.wait()
            if self._on_exit is not None:
                self._on_exit(proc.pid)
            if self.stopping:
                return
            log.error("call worker %d (pid %d) died (exit code %s): starting it again; its calls in progress are"
                      " lost", index, proc.pid, code)
            await asyncio.sleep(RESTART_DELAY_S)
            if self.stopping:
                return
            try:
                await self._start(index)
                self.restarts += 1
            except SipError as e:
                log.error("%s", e)
                return

    @property
    def running(self) -> int:
        """Workers alive now."""
        return sum(1 for p in self._procs if p is not None and p.returncode is None)

    def _tell(self, command: str) -> None:
        for proc in self._procs:
            if proc is not None and proc.returncode is None and proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.write(command.encode() + b"\n")

    def drain(self) -> None:
        """Workers refuse new calls and let theirs finish; none is started again."""
        self.stopping = True
        self._tell("drain")

    def end_calls(self) -> None:
        """Workers end their calls now (each is still saved) and exit."""
        self.stopping = True
        self._tell("now")

    async def wait(self) -> None:
        """Until every worker has exited."""
        await asyncio.gather(*self._watchers, return_exceptions=True)

    async def close(self, timeout_s: float = 10.0) -> None:
        self.end_calls()
        procs = [p for p in self._procs if p is not None and p.returncode is None]
        if procs:
            _, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs], timeout=timeout_s)
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)


@contextlib.asynccontextmanager
async def open_worker_pool(settings: Settings, ports: list[int], front_address: str, *,
                           metrics_dir: str | None = None,
                           on_exit: Callable[[int], None] | None = None) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(settings, ports, front_address, metrics_dir=metrics_dir, on_exit=on_exit)
    try:
        await pool.start()
        yield pool
    finally:
        await pool.close()
