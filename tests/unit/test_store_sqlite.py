"""What only the SQLite store does: a file in the data directory, WAL, errors about the file, and
upgrading a file made by the hand-rolled migration runner (schema version 1) that Alembic replaced."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from voicebot.calls.report import CallReport, Turn
from voicebot.events import IntakeForm, Transfer
from voicebot.storage import SqliteCallStore, StoreError, default_store
from voicebot.storage.migrations import latest_version
from voicebot.storage.migrations.sqlite.v0001_initial import SQL as V1_SQL

PID = "131052-308T"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "voicebot.sqlite3"


def make_v1_file(path: Path) -> None:
    """A database exactly as voicebot before Alembic left it: schema version 1 and a call in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(V1_SQL)
        db.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                   "applied_at TEXT NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (1, 'initial', '2026-11-01T08:00:00.000+00:00')")
        db.execute("INSERT INTO calls (call_id, name, caller_id, engine, status, outcome, transfer_reason, "
                   "transfer_queue, latency_ms, started_at, ended_at, duration_s, updated_at) VALUES ('old', "
                   "'sip:old', '+358401234567', 'vosk', 'ended', 'transferred', 'complex_case', 'benefits', "
                   "'[500.0]', '2026-11-01T09:00:00+00:00', '2026-11-01T09:01:00+00:00', 60.0, "
                   "'2026-11-01T09:01:00.000+00:00')")
        db.execute("INSERT INTO turns (call_id, seq, speaker, text, start_s, end_s) "
                   "VALUES ('old', 0, 'bot', 'Welcome.', 0.0, 1.5)")
        db.execute("INSERT INTO intakes (call_id, form, status, fields, reference, created_at, updated_at, "
                   "submitted_at) VALUES ('old', 'housing_allowance', 'submitted', '{\"personal_id\": \"" + PID +
                   "\"}', 'HA100001', '2026-11-01T09:00:30.000+00:00', '2026-11-01T09:00:30.000+00:00', "
                   "'2026-11-01T09:00:30.000+00:00')")
        db.execute("INSERT INTO reference_numbers (call_id, issued_at) VALUES ('old', '2026-11-01T09:00:30.000+00:00')")


async def test_a_version_1_file_upgrades_and_keeps_its_calls(db_path):
    make_v1_file(db_path)
    async with SqliteCallStore(db_path) as store:
        assert store.schema_version == latest_version("sqlite")
        old = await store.get_call("old")
        assert old.status == "ended" and old.report.transfer == Transfer("complex_case", "benefits")
        assert [t.text for t in old.report.turns] == ["Welcome."]
        assert old.report.intake == IntakeForm("housing_allowance", "submitted", {"personal_id": PID}, "HA100001")
        # the new tables are there, and the reference numbers go on from where they were
        await store.start_call(CallReport(call="sip:new", call_id="new"))
        assert await store.submit_intake("new", IntakeForm("housing_allowance", "submitted", {})) == "HA100002"
        entry = await store.enqueue("new", "general")
        assert (await store.queue_position(entry.entry_id)).position == 1
    with sqlite3.connect(db_path) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        stamped = db.execute("SELECT version_num FROM alembic_version").fetchall()
    assert "schema_version" not in tables and {"queue_entries", "callbacks", "agents", "users"} <= tables
    assert stamped == [(f"{latest_version('sqlite'):04d}",)]


async def test_a_version_1_file_from_a_newer_voicebot_is_refused_untouched(db_path):
    make_v1_file(db_path)
    with sqlite3.connect(db_path) as db:
        db.execute("INSERT INTO schema_version VALUES (99, 'future', 'x')")
    with pytest.raises(StoreError, match="schema version 99, newer than"):
        await SqliteCallStore(db_path).open()
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone() == (99,)


async def test_the_file_is_in_wal_mode_and_records_its_version(db_path):
    async with SqliteCallStore(db_path) as store:
        await store.save_progress("none", {}, [])
    with sqlite3.connect(db_path) as db:
        stamped = [v for (v,) in db.execute("SELECT version_num FROM alembic_version")]
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert stamped == [f"{latest_version('sqlite'):04d}"]
    assert journal == "wal"


async def test_a_store_opened_by_two_processes_at_once_migrates_once(tmp_path):
    """Two stores on one new file opening together: the write lock makes one migrate, the other wait.

    Many new files, since the two meet in SQLite's switch to WAL only now and then (1 in 15)."""
    import asyncio

    for n in range(40):
        db_path = tmp_path / f"calls{n}.sqlite3"
        first, second = SqliteCallStore(db_path), SqliteCallStore(db_path)
        try:
            await asyncio.gather(first.open(), second.open())
            assert first.schema_version == second.schema_version == latest_version("sqlite")
            await first.start_call(CallReport(call="sip:x", call_id="x"))
            await second.save_progress("x", {0: Turn("bot", "Hi.", 0.0, 1.0)}, [])
            assert [t.text for t in (await first.get_call("x")).report.turns] == ["Hi."]
        finally:
            await first.close()
            await second.close()


async def test_a_path_that_cannot_hold_a_database_is_a_one_line_error(tmp_path):
    (tmp_path / "not-a-db").mkdir()
    with pytest.raises(StoreError) as err:
        await SqliteCallStore(tmp_path / "not-a-db").open()
    assert "cannot open call store" in str(err.value) and "\n" not in str(err.value)


async def test_a_file_that_is_not_a_database_is_a_one_line_error(tmp_path):
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open call store .*not a database"):
        await SqliteCallStore(junk).open()


async def test_the_default_store_is_a_file_in_the_data_dir(tmp_path):
    store = default_store(tmp_path / "data")
    async with store:
        await store.ping()
    assert (tmp_path / "data" / "voicebot.sqlite3").is_file()
