"""The conftest's loop guard: it must catch a blocking call, and not blame a busy machine for one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

PROBE = '''
import asyncio, gc, os, time

async def test_sleeps_on_the_loop():
    time.sleep(0.5)

async def test_awaits():
    await asyncio.sleep(0.5)

async def test_collects_garbage():
    def slow_collection(phase, info):  # a full collection over a big heap, made slow on purpose
        if phase == "start":
            time.sleep(0.5)
    gc.callbacks.append(slow_collection)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(slow_collection)

async def test_leaks_a_task():
    asyncio.create_task(asyncio.sleep(10))

async def test_waits_for_a_cpu_only():
    # Busy children on every CPU keep this thread waiting for a CPU between short callbacks.
    children = [await asyncio.create_subprocess_exec("sh", "-c", "while :; do :; done") for _ in range(4 * os.cpu_count())]
    try:
        await asyncio.sleep(0.5)  # the children are running
        wall_s, cpu_s = time.perf_counter(), time.thread_time()
        while time.thread_time() - cpu_s < 0.15:  # one callback: 0.15 s of its own CPU time
            pass
        wall_s = time.perf_counter() - wall_s
        assert wall_s > 0.3, f"the machine was not busy enough to test anything ({wall_s:.3f} s)"
    finally:
        for c in children:
            c.kill()
            await c.wait()
'''


def test_a_blocking_call_and_a_leaked_task_fail_and_a_busy_machine_or_a_collection_does_not(pytester: pytest.Pytester) -> None:
    shutil.copytree(ROOT / "tests", pytester.path / "tests", ignore=shutil.ignore_patterns("test_*", "__pycache__"))
    (pytester.path / "tests" / "unit" / "test_probe.py").write_text(PROBE)
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "tests/unit/test_probe.py")
    result.assert_outcomes(passed=5, errors=2)  # the two errors are the guard's, at teardown
    out = result.stdout.str()
    assert "ERROR tests/unit/test_probe.py::test_sleeps_on_the_loop" in out
    assert "ERROR tests/unit/test_probe.py::test_leaks_a_task" in out
    assert "coro=<test_sleeps_on_the_loop() " in out and "took 0.5" in out
    assert "test leaked 1 task(s)" in out
