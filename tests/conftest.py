"""Guards for every async test: no leaked tasks, no blocking calls on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
import time

import pytest

# the store's backends (a real PostgreSQL cluster for the session) for every test directory
from tests.store_backends import pg_cluster, pg_url, store_url  # noqa: F401

#: a callback holding the loop longer than this is a blocking call that belongs in an executor
#: (its own time: time the loop's thread was ready to run but waited for a CPU does not count)
SLOW_CALLBACK_S = 0.3
#: the lag watchdog sees the loop's whole delay (waiting for the GIL and a CPU too, not only the
#: callback's own time), so it allows more before calling it a blocking call
SLOW_LOOP_LAG_S = 1.0


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Executing") and " took " in msg:
            self.seen.append(msg)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("asyncio") is not None and "loop_guard" not in item.fixturenames:
            item.fixturenames.append("loop_guard")


class _CallbackTimer:
    """Times each callback the loop runs, less the time the loop's thread spent waiting for a CPU
    and the time garbage collection took.

    Wall time alone blamed callbacks for a loaded machine (a store test's await "took"
    0.475 s in CI); the kernel's scheduler statistics for the thread tell the two apart.
    """

    def __init__(self, seen: list[str]) -> None:
        self._seen = seen
        self._thread = threading.get_ident()
        self._stats = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        #: the interpreter's garbage collections so far: a full one over a late test's heap
        #: took 0.3-0.5 s in CI and is nobody's blocking call
        self._gc_s = 0.0
        self._gc_started_s = 0.0

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started_s = time.perf_counter()
        else:
            self._gc_s += time.perf_counter() - self._gc_started_s

    def _runqueue_wait_s(self) -> float:
        return int(os.pread(self._stats, 128, 0).split()[1]) / 1e9

    @contextlib.contextmanager
    def installed(self):
        original = asyncio.events.Handle._run
        timer = self

        def timed_run(handle: asyncio.Handle) -> None:
            if threading.get_ident() != timer._thread:
                return original(handle)
            start_s, waited_s, gc_s = time.perf_counter(), timer._runqueue_wait_s(), timer._gc_s
            try:
                return original(handle)
            finally:
                wall_s = time.perf_counter() - start_s
                if wall_s > SLOW_CALLBACK_S:
                    own_s = wall_s - (timer._runqueue_wait_s() - waited_s) - (timer._gc_s - gc_s)
                    if own_s > SLOW_CALLBACK_S:
                        what = asyncio.base_events._format_handle(handle)  # the task, as asyncio names it
                        timer._seen.append(f"Executing {what} took {own_s:.3f} seconds"
                                           f" (and {wall_s - own_s:.3f} s waiting for a CPU)")

        asyncio.events.Handle._run = timed_run
        gc.callbacks.append(self._on_gc)
        try:
            yield
        finally:
            asyncio.events.Handle._run = original
            gc.callbacks.remove(self._on_gc)
            os.close(self._stats)


async def _watch_lag(seen: list[str], period_s: float = 0.05) -> None:
    """Record every time the loop came back later than SLOW_LOOP_LAG_S after a short sleep."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(period_s)
        lag_s = loop.time() - start - period_s
        if lag_s > SLOW_LOOP_LAG_S:
            seen.append(f"Executing <the loop> took {lag_s:.3f} seconds")


@pytest.fixture
async def loop_guard(request):
    """Fail a test that leaves tasks running or blocks the loop.

    Tests marked ``pjsip`` run PJSIP's media threads in the test process: asyncio's debug mode
    extracts a Python stack on every cross-thread post from those threads, which crashed the
    interpreter under load (a segfault in traceback extraction); there a lag watchdog stands in.
    """
    loop = asyncio.get_running_loop()
    handler = _SlowCallbacks()
    watchdog: asyncio.Task | None = None
    timing = contextlib.nullcontext()
    if "pjsip" in request.keywords:
        watchdog = asyncio.create_task(_watch_lag(handler.seen))
    else:
        loop.set_debug(True)
        loop.slow_callback_duration = 1e9  # _CallbackTimer judges, without the CPU waits
        timing = _CallbackTimer(handler.seen).installed()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    before = asyncio.all_tasks()
    try:
        with timing:
            yield
    finally:
        logger.removeHandler(handler)
        if watchdog is not None:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
    leaked = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()]
    for t in leaked:
        t.cancel()
    if leaked:
        pytest.fail(f"test leaked {len(leaked)} task(s): {[t.get_coro() for t in leaked]}")
    if handler.seen and "allow_slow_callbacks" not in request.keywords:
        pytest.fail("blocking call on the event loop: " + handler.seen[0])
