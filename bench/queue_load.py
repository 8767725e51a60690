"""How many queue operations per second the store sustains, and how soon the dashboard shows a change, on SQLite
and on PostgreSQL.

For each backend, on a new empty database: CALLERS callers are enqueued over three
queues, each asks for its position (with the wait estimate), agents take them
(take_next, one caller per agent), connect and finish them; each phase runs CONCURRENCY tasks at once
in one process, as a service's calls and agents would. Prints operations per
second per phase and backend.

The dashboard's update delay: the service's app (with the dashboard) serves on a
loopback port and a WebSocket client reads it as a browser's script would, with a
supervisor's token. One at a time, a caller joins the queue and leaves it, and a
call gets a new turn; each delay runs from the write's commit (the store call
returning) to the client having the message that shows it, p50/p95 over
--samples. The write comes from the service's own store ("this process") or from
a second store on the same database ("another process": SQLite's change log,
read every poll_interval_s, 0.5 s by default; PostgreSQL's NOTIFY).

PostgreSQL is a throwaway local cluster (Debian's postgresql, as the tests start
it) unless --postgres names a database; that database must be empty or a
voicebot store, and the bench leaves its queue rows behind.

Usage: python bench/queue_load.py [--callers N] [--concurrency N] [--samples N] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable, Iterable

import aiohttp
from argon2 import PasswordHasher

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.store_backends import PostgresCluster, make_store, postgres_bindir  # noqa: E402
from voicebot.calls.report import CallReport, Turn  # noqa: E402
from voicebot.metrics import CallMetrics  # noqa: E402
from voicebot.storage import CallStore  # noqa: E402
from voicebot.web.accounts import add_account, issue_token  # noqa: E402
from voicebot.web.api import make_app  # noqa: E402
from voicebot.web.auth import Auth, Passwords  # noqa: E402
from voicebot.web.server import run_http  # noqa: E402

QUEUES = ("general", "benefits", "pensions")
PHASES = ("enqueue", "position", "take_next", "connect", "finish")
#: what the dashboard shows, from which store
DELAYS = ("queue join, this process", "queue leave, this process", "transcript turn, this process",
          "queue join, another process", "transcript turn, another process")
#: a dashboard message that has not come after this long has failed the bench
MESSAGE_GUARD_S = 30.0
#: the SQLite store's default poll_interval_s (how often it reads other processes' changes)
SQLITE_POLL_S = 0.5


async def _timed(jobs: Iterable[Callable[[], Awaitable[object]]], concurrency: int) -> float:
    """Operations per second running ``jobs`` with ``concurrency`` tasks."""
    pending = list(jobs)
    count = len(pending)
    it = iter(pending)

    async def worker() -> None:
        for job in it:
            await job()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - start)


async def run_backend(url: str, callers: int, concurrency: int) -> dict[str, float]:
    rates: dict[str, float] = {}
    async with make_store(url) as store:
        await _agents(store, concurrency)
        entries = []

        async def enqueue(i: int) -> None:
            entries.append(await store.enqueue(f"bench-{i}", QUEUES[i % 3], priority=i % 2, reason="bench"))

        rates["enqueue"] = await _timed([lambda i=i: enqueue(i) for i in range(callers)], concurrency)
        rates["position"] = await _timed([lambda e=e: store.queue_position(e.entry_id) for e in entries],
                                         concurrency)
        taken = []

        async def take(agent: str) -> None:
            entry = await store.take_next(agent, QUEUES)
            assert entry is not None
            taken.append(entry)

        # an agent takes one caller at a time (the store refuses a second while one rings or talks)
        rates["take_next"] = await _timed([lambda i=i: take(f"taker{i}") for i in range(callers)], concurrency)
        rates["connect"] = await _timed([lambda e=e: store.mark_connected(e.entry_id) for e in taken], concurrency)
        rates["finish"] = await _timed([lambda e=e: store.finish(e.entry_id, "bench") for e in taken], concurrency)
    return rates


async def dashboard_delays(url: str, samples: int) -> dict[str, list[float]]:
    """Seconds from a write's commit to the dashboard's WebSocket client having it, per kind of change."""
    delays: dict[str, list[float]] = {kind: [] for kind in DELAYS}
    async with make_store(url) as store, make_store(url, recover=False) as other:
        passwords = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        await add_account(store, passwords, "bench-supervisor", "supervisor", "bench password")
        token, _ = await issue_token(store, "bench-supervisor")
        app = make_app(store, CallMetrics(), auth=Auth(store, passwords=passwords))
        async with run_http(app, "127.0.0.1", 0) as endpoint, aiohttp.ClientSession() as http:
            async with http.ws_connect(f"{endpoint.url}/dashboard/ws",
                                       headers={"Authorization": f"Bearer {token}"}) as ws:
                await _message(ws, lambda m: m["type"] == "snapshot")
                for source, writer in (("this process", store), ("another process", other)):
                    for i in range(samples):
                        call_id = f"delay-{source.split()[0]}-{i}"
                        report = CallReport(call=f"sip:{call_id}", call_id=call_id, caller_id="+358401234567")
                        await writer.start_call(report)
                        await _message(ws, _card(call_id, 0))
                        await _out_of_step(source)
                        await writer.save_progress(call_id, {0: Turn("caller", "hello", 0.0, 1.0)}, [])
                        delays[f"transcript turn, {source}"].append(await _delay(ws, _card(call_id, 1)))
                        await _out_of_step(source)
                        entry = await writer.enqueue(call_id, "general", reason="bench")
                        delays[f"queue join, {source}"].append(await _delay(ws, _queued(call_id, True)))
                        await writer.leave_queue(entry.entry_id, "abandoned")
                        left = await _delay(ws, _queued(call_id, False))
                        if source == "this process":
                            delays[f"queue leave, {source}"].append(left)
                        report.outcome = "abandoned"
                        await writer.end_call(report)
    return delays


async def _out_of_step(source: str) -> None:
    """A change from another process comes at any moment of this one's SQLite polling cycle, not right
    after a poll (as one measured straight after the last message would): wait a random part of a cycle."""
    if source != "this process":
        await asyncio.sleep(random.uniform(0.0, SQLITE_POLL_S))


async def _delay(ws: aiohttp.ClientWebSocketResponse, wanted: Callable[[dict], bool]) -> float:
    """Called as the write's store call returns (its commit): seconds until the client has the message."""
    committed = time.perf_counter()
    await _message(ws, wanted)
    return time.perf_counter() - committed


async def _message(ws: aiohttp.ClientWebSocketResponse, wanted: Callable[[dict], bool]) -> dict:
    async with asyncio.timeout(MESSAGE_GUARD_S):
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"the dashboard's socket ended: {msg.type.name} {msg.data!r}")
            message = json.loads(msg.data)
            if wanted(message):
                return message


def _card(call_id: str, turns: int) -> Callable[[dict], bool]:
    return lambda m: (m["type"] == "call" and m["call_id"] == call_id and m["data"] is not None
                      and len(m["data"]["turns"]) == turns)


def _queued(call_id: str, present: bool) -> Callable[[dict], bool]:
    return lambda m: (m["type"] == "section" and m["name"] == "queue"
                      and any(r["call_id"] == call_id for r in m["data"]) == present)


def _percentiles(values: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    cuts = statistics.quantiles(values, n=20, method="inclusive")
    return statistics.median(values) * 1000, cuts[18] * 1000


async def _agents(store: CallStore, count: int) -> None:
    for i in range(count):
        await store.save_agent(f"agent{i}", f"sip:agent{i}@127.0.0.1", QUEUES)
        await store.set_agent_state(f"agent{i}", "available")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--samples", type=int, default=100, help="dashboard delays measured per kind of change")
    parser.add_argument("--postgres", metavar="URL", help="an existing PostgreSQL database instead of a local one")
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    delays: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="voicebot-bench-") as tmp:
        results["SQLite"] = await run_backend(f"sqlite:///{Path(tmp) / 'bench.sqlite3'}", args.callers,
                                              args.concurrency)
        delays["SQLite"] = await dashboard_delays(f"sqlite:///{Path(tmp) / 'dashboard.sqlite3'}", args.samples)
    cluster = None
    url = args.postgres
    if url is None:
        bindir = postgres_bindir()
        if bindir is None:
            print("PostgreSQL server not installed (Debian package postgresql): SQLite only", file=sys.stderr)
        else:
            cluster = PostgresCluster(bindir)
            await asyncio.to_thread(cluster.start)
            url = cluster.url(await asyncio.to_thread(cluster.database))
    try:
        if url is not None:
            results["PostgreSQL"] = await run_backend(url, args.callers, args.concurrency)
            if cluster is not None:
                url = cluster.url(await asyncio.to_thread(cluster.database))
            delays["PostgreSQL"] = await dashboard_delays(url, args.samples)
    finally:
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)

    print(f"queue operations per second: {args.callers} callers, {args.concurrency} concurrent tasks, one process")
    names = list(results)
    print(f"{'operation':<12}" + "".join(f"{n:>14}" for n in names))
    for phase in PHASES:
        print(f"{phase:<12}" + "".join(f"{results[n][phase]:>14.0f}" for n in names))
    print()
    print(f"dashboard update delay, commit -> WebSocket client, ms p50 / p95 ({args.samples} samples each)")
    print(f"{'change':<34}" + "".join(f"{n:>16}" for n in names))
    for kind in DELAYS:
        cells = []
        for n in names:
            p50, p95 = _percentiles(delays[n][kind])
            cells.append(f"{p50:>7.1f} / {p95:<6.1f}")
        print(f"{kind:<34}" + "".join(f"{c:>16}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
