"""How many queue operations per second the store sustains, on SQLite and on PostgreSQL.

For each backend, on a new empty database: CALLERS callers are enqueued over three
queues, each asks for its position (with the wait estimate), agents take them
(take_next), connect and finish them; each phase runs CONCURRENCY tasks at once
in one process, as a service's calls and agents would. Prints operations per
second per phase and backend.

PostgreSQL is a throwaway local cluster (Debian's postgresql, as the tests start
it) unless --postgres names a database; that database must be empty or a
voicebot store, and the bench leaves its queue rows behind.

Usage: python bench/queue_load.py [--callers N] [--concurrency N] [--postgres URL]
(The dashboard's update delay is measured elsewhere, with the dashboard.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.store_backends import PostgresCluster, make_store, postgres_bindir  # noqa: E402
from voicebot.storage import CallStore  # noqa: E402

QUEUES = ("general", "benefits", "pensions")
PHASES = ("enqueue", "position", "take_next", "connect", "finish")


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

        rates["take_next"] = await _timed([lambda i=i: take(f"agent{i % concurrency}") for i in range(callers)],
                                          concurrency)
        rates["connect"] = await _timed([lambda e=e: store.mark_connected(e.entry_id) for e in taken], concurrency)
        rates["finish"] = await _timed([lambda e=e: store.finish(e.entry_id, "bench") for e in taken], concurrency)
    return rates


async def _agents(store: CallStore, count: int) -> None:
    for i in range(count):
        await store.save_agent(f"agent{i}", f"sip:agent{i}@127.0.0.1", QUEUES)
        await store.set_agent_state(f"agent{i}", "available")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--postgres", metavar="URL", help="an existing PostgreSQL database instead of a local one")
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="voicebot-bench-") as tmp:
        results["SQLite"] = await run_backend(f"sqlite:///{Path(tmp) / 'bench.sqlite3'}", args.callers,
                                              args.concurrency)
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
    finally:
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)

    print(f"queue operations per second: {args.callers} callers, {args.concurrency} concurrent tasks, one process")
    names = list(results)
    print(f"{'operation':<12}" + "".join(f"{n:>14}" for n in names))
    for phase in PHASES:
        print(f"{phase:<12}" + "".join(f"{results[n][phase]:>14.0f}" for n in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
