"""One call-answering process of the service: its own PJSIP endpoint behind the SIP front.

PJSIP as packaged holds a handful of calls per process (PJSUA_MAX_CALLS), and
a process decoding speech holds the GIL its media clock needs; so the service
runs several of these, each on a loopback port the front dispatches to.

The service starts one as ``python -m voicebot.sip.worker`` and talks to it
over stdin: first its ``WorkerSpec`` (one line), then commands, ``drain``
(refuse new calls, let calls finish) and ``now`` (end calls at once). Signals
are the service's business: a service manager signals the whole process group,
and a worker must not drain twice or die before its calls are saved. The
worker prints ``READY <port>`` once it answers calls, and dies with the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from voicebot.app import open_runtime, service_queue
from voicebot.child_process import set_death_signal
from voicebot.errors import VoicebotError
from voicebot.metrics import CallMetrics
from voicebot.sip.pool import READY, WorkerSpec, decode_spec
from voicebot.sip.service import open_sip_service
from voicebot.storage import open_store
from voicebot.storage.recorder import StoreRecorder

log = logging.getLogger("voicebot.sip.worker")


class Commands:
    """The service's orders, read from stdin on the event loop; its end means the service is gone."""

    def __init__(self) -> None:
        self.drain = asyncio.Event()
        self.now = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "Commands":
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", 0))
        self._task = asyncio.create_task(self._read(reader))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        async for line in reader:
            command = line.strip().decode(errors="replace")
            if command == "drain":
                self.drain.set()
            elif command == "now":
                self.drain.set()
                self.now.set()
            else:
                log.error("unknown command from the service: %r", command)
        self.drain.set()
        self.now.set()


async def _serve(spec: WorkerSpec) -> None:
    settings = spec.settings
    async with Commands() as commands:
        # The service opened the store first and recovered calls a crash left open: not again here,
        # or this worker would mark its siblings' calls as interrupted.
        async with open_store(settings, recover=False) as store:
            async with open_runtime(settings, StoreRecorder(store, CallMetrics()),
                                    queue=service_queue(settings, store)) as runtime:
                recordings = settings.recordings_dir if settings.recording.enabled else None
                async with open_sip_service(runtime, settings.sip, recordings_dir=recordings) as service:
                    assert service.address is not None
                    print(f"{READY} {service.address.port}", flush=True)
                    await service.serve_until(commands.drain, commands.now)


def _read_spec_line() -> bytes:
    """The first line of stdin, read unbuffered: what follows is read by the event loop."""
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            break
        line += chunk
    return bytes(line)


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # The service is gone (a kill -9 or a crash): go too, at once; its next start recovers our calls.
    set_death_signal(signal.SIGKILL)
    spec = decode_spec(_read_spec_line())
    logging.basicConfig(level=spec.log_level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s worker{spec.index} %(name)s: %(message)s")
    try:
        asyncio.run(_serve(spec))
    except VoicebotError as e:
        print(f"voicebot worker {spec.index}: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
