"""The store shared by several processes: agents in two OS processes racing for callers, migrations
from an empty database, and PostgreSQL's LISTEN/NOTIFY change feed across connections."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import asyncpg
import pytest

from tests.store_backends import execute_sql, make_store
from voicebot.storage import ChangesMissed, QueueChange
from voicebot.storage.migrations import latest_version
from voicebot.storage.postgres import CHANNEL

CALLERS = 300
#: a guard against a hung child or feed, never a timing claim
GUARD_S = 120

AGENT_PROCESS = textwrap.dedent("""
    import asyncio, json, sys
    from tests.store_backends import make_store

    async def main(url, agent):
        async with make_store(url, recover=False) as store:
            print("READY", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # GO: all start together
            taken = []
            while (entry := await store.take_next(agent, ["general", "benefits"])) is not None:
                taken.append(entry.entry_id)
                await store.mark_connected(entry.entry_id)  # one caller at a time: done before the next
                await store.finish(entry.entry_id)
            print(json.dumps(taken), flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def _start_agent(url: str, agent: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", AGENT_PROCESS, url, agent], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        raise AssertionError(f"agent process did not start: {proc.stderr.read()}")
    return proc


async def test_two_processes_taking_callers_at_once_never_get_the_same_one(store_url):
    async with make_store(store_url) as store:
        ids = [(await store.enqueue(f"c{i}", "general" if i % 3 else "benefits", priority=i % 4)).entry_id
               for i in range(CALLERS)]
        agents = {name: await asyncio.to_thread(_start_agent, store_url, name) for name in ("alice", "bob")}
        try:
            for proc in agents.values():
                proc.stdin.write("GO\n")
                proc.stdin.flush()
            results = {}
            for name, proc in agents.items():
                out, err = await asyncio.to_thread(proc.communicate, timeout=GUARD_S)
                assert proc.returncode == 0, err
                results[name] = json.loads(out.strip().splitlines()[-1])
        finally:
            for proc in agents.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        alice, bob = set(results["alice"]), set(results["bob"])
        assert len(alice) == len(results["alice"]) and len(bob) == len(results["bob"])
        assert not alice & bob, f"callers handed to both agents: {sorted(alice & bob)[:10]}"
        assert alice | bob == set(ids)
        for name, taken in results.items():
            for entry_id in taken[:20]:
                entry = await store.get_queue_entry(entry_id)
                assert (entry.state, entry.agent) == ("done", name)
        assert await store.list_waiting() == []


async def test_an_empty_database_is_brought_to_the_latest_schema(store_url):
    async with make_store(store_url) as store:
        assert store.schema_version == latest_version(store.backend)
        await store.ping()
    assert await execute_sql(store_url, "SELECT version_num FROM alembic_version") == [
        (f"{latest_version(store.backend):04d}",)]


async def test_stores_opening_together_on_a_new_postgres_database_migrate_it_once(pg_url):
    stores = [make_store(pg_url) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        assert {s.schema_version for s in stores} == {latest_version("postgres")}
        entry = await stores[0].enqueue("c1", "general")
        assert (await stores[2].get_queue_entry(entry.entry_id)) == entry
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_queue_changes_are_notified_to_any_listening_connection(pg_url):
    listener = await asyncpg.connect(pg_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    try:
        async with make_store(pg_url) as store:
            await listener.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: heard.put_nowait(payload))
            entry = await store.enqueue("c1", "general")
            payload = await asyncio.wait_for(heard.get(), GUARD_S)
    finally:
        await listener.close()
    change = json.loads(payload.split(":", 2)[2])
    assert change == {"kind": "queue", "entry_id": entry.entry_id, "call_id": "c1", "queue": "general",
                      "state": "waiting"}


async def test_a_feed_whose_listen_connection_is_cut_says_so_and_goes_on(pg_url):
    async with make_store(pg_url) as store, make_store(pg_url, recover=False) as other:
        async with store.changes() as feed:
            await execute_sql(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                      "WHERE datname = current_database() AND query LIKE 'LISTEN%'")
            missed = await asyncio.wait_for(feed.__anext__(), GUARD_S)
            assert isinstance(missed, ChangesMissed)
            # The feed listens again and later changes arrive. A change made before it is back is lost, and
            # followed by another ChangesMissed when it is: then the next change is tried.
            entries = []
            for _ in range(20):
                entries.append(await other.enqueue(f"after{len(entries)}", "general"))
                change = await asyncio.wait_for(feed.__anext__(), GUARD_S)
                if isinstance(change, QueueChange):
                    break
                assert isinstance(change, ChangesMissed)
            assert change in [QueueChange(e.entry_id, e.call_id, "general", "waiting") for e in entries]


@pytest.mark.parametrize("url", ["postgresql://nobody@127.0.0.1:1/none"])
async def test_a_database_that_does_not_answer_is_a_one_line_error(url):
    from voicebot.storage import StoreError

    with pytest.raises(StoreError) as err:
        await make_store(url, connect_timeout_s=5).open()
    assert str(err.value).startswith("cannot open call store postgresql://nobody@127.0.0.1:1/none")
    assert "\n" not in str(err.value)
