"""Running a recognizer in worker processes.

PocketSphinx's Python binding decodes without releasing the GIL: in-process,
one call's decoding freezes every other call's audio (the SIP media clock
needs the GIL every 20 ms) and a two-core machine decodes on one core. So the
engine lives in worker processes and streams talk to it over pipes; the
waiting thread releases the GIL while the worker decodes.

Audio is sent without waiting for an answer (the worker handles requests in
order), so feeding speech costs a pipe write; ``partial``, ``finish`` and
``close`` wait for their reply, and an error in an earlier request surfaces
there.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
import traceback
from typing import Any, Callable

from voicebot.asr.base import Recognition, RecognizerEngine, RecognizerError

log = logging.getLogger("voicebot.asr")

EngineFactory = Callable[[], RecognizerEngine]


class ProcessEngine:
    def __init__(self, factory: EngineFactory, workers: int = 2) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs SIP threads
        self._workers: list[_Worker] = []
        try:
            for n in range(max(1, workers)):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(factory, child), name=f"voicebot-asr-{n}", daemon=True)
                proc.start()
                child.close()
                self._workers.append(_Worker(proc, parent))
            infos = [w.call(("hello",)) for w in self._workers]
        except BaseException:
            self.close()
            raise
        self.name, self.model_name, self.sample_rate_hz = infos[0]
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def open_stream(self) -> ProcessStream:
        with self._lock:
            worker = min(self._workers, key=lambda w: w.streams)
            worker.streams += 1
            sid = next(self._ids)
        stream = ProcessStream(worker, sid, self._lock)
        worker.call(("open", sid))
        return stream

    def close(self) -> None:
        for w in self._workers:
            w.stop()
        self._workers = []


class ProcessStream:
    def __init__(self, worker: _Worker, sid: int, engine_lock: threading.Lock) -> None:
        self._worker = worker
        self._sid = sid
        self._engine_lock = engine_lock
        self._closed = False

    def set_grammar(self, grammar: str | None, *, partials: bool = True) -> None:
        self._worker.send(("set_grammar", self._sid, grammar, partials))

    def accept(self, pcm: bytes) -> None:
        self._worker.send(("accept", self._sid, pcm))

    def partial(self) -> str:
        return self._worker.call(("partial", self._sid))

    def finish(self) -> Recognition:
        return self._worker.call(("finish", self._sid))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self._engine_lock:
                self._worker.streams -= 1
            self._worker.call(("close", self._sid))


class _Worker:
    def __init__(self, proc: multiprocessing.process.BaseProcess, conn: multiprocessing.connection.Connection) -> None:
        self.proc = proc
        self.conn = conn
        self.streams = 0
        self._lock = threading.Lock()

    def send(self, request: tuple) -> None:
        with self._lock:
            self._send(request)

    def call(self, request: tuple) -> Any:
        with self._lock:
            self._send(request)
            try:
                ok, value = self.conn.recv()
            except (EOFError, OSError):
                raise RecognizerError(f"recognizer process {self.proc.name} died "
                                      f"(exit code {self.proc.exitcode})") from None
        if not ok:
            raise value
        return value

    def _send(self, request: tuple) -> None:
        try:
            self.conn.send(request)
        except (BrokenPipeError, OSError):
            raise RecognizerError(f"recognizer process {self.proc.name} is gone") from None

    def stop(self) -> None:
        try:
            with self._lock:
                self.conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


def _serve(factory: EngineFactory, conn: multiprocessing.connection.Connection) -> None:
    """Worker process: build the engine, then answer requests until told to stop."""
    # Ctrl-C and a service manager's SIGTERM reach every process of the group: shutting down is the
    # parent's decision (it sends "stop", or its end closes the pipe), not this process's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        engine = factory()
    except BaseException as e:  # noqa: BLE001 - reported to the parent as its one-line error
        conn.send((False, e if isinstance(e, RecognizerError) else RecognizerError(f"{e.__class__.__name__}: {e}")))
        return
    streams: dict[int, Any] = {}
    #: an error in a request nobody waits for, reported at the stream's next waiting request
    pending: dict[int, BaseException] = {}
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            break
        op = request[0]
        if op == "stop":
            break
        sid = request[1] if len(request) > 1 else 0
        try:
            if op == "hello":
                result: Any = (engine.name, engine.model_name, engine.sample_rate_hz)
            elif op == "open":
                streams[sid] = engine.open_stream()
                result = None
            elif op == "set_grammar":
                streams[sid].set_grammar(request[2], partials=request[3])
                continue
            elif op == "accept":
                streams[sid].accept(request[2])
                continue
            elif op == "partial":
                result = streams[sid].partial()
            elif op == "finish":
                result = streams[sid].finish()
            elif op == "close":
                streams.pop(sid).close()
                result = None
            else:
                raise RecognizerError(f"unknown recognizer request {op!r}")
            if sid in pending:
                conn.send((False, pending.pop(sid)))
            else:
                conn.send((True, result))
        except Exception as e:  # noqa: BLE001 - the engine's error goes back to the waiting caller
            if not isinstance(e, RecognizerError):
                log.error("recognizer request %s failed:\n%s", op, traceback.format_exc())
                e = RecognizerError(f"recognizer failed in {op}: {e.__class__.__name__}: {e}")
            if op in ("set_grammar", "accept"):
                pending[sid] = e
            else:
                conn.send((False, e))
    for stream in streams.values():
        stream.close()
    close = getattr(engine, "close", None)
    if close is not None:
        close()
