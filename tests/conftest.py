"""Guards for every async test: no leaked tasks, no blocking calls on the event loop."""

from __future__ import annotations

import asyncio
import logging

import pytest

# the store's backends (a real PostgreSQL cluster for the session) for every test directory
from tests.store_backends import pg_cluster, pg_url, store_url  # noqa: F401

#: a callback holding the loop longer than this is a blocking call that belongs in an executor
#: (0.3 s failed a store test on a loaded CI machine at 0.475 s: the wall time includes waiting for a CPU)
SLOW_CALLBACK_S = 0.6
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
    if "pjsip" in request.keywords:
        watchdog = asyncio.create_task(_watch_lag(handler.seen))
    else:
        loop.set_debug(True)
        loop.slow_callback_duration = SLOW_CALLBACK_S
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    before = asyncio.all_tasks()
    try:
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
