"""The call store in one SQLite file: zero set-up, one service process per file.

Every statement runs on one dedicated thread that owns the connection, so the
event loop never waits on the disk and writes never interleave. Each write is
its own transaction in WAL mode with ``synchronous=NORMAL``: a committed write
survives the process being killed (only a power cut may lose the last few).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

from voicebot.calls.report import CallReport, Turn
from voicebot.events import IntakeForm, IntakeStatus, Transfer
from voicebot.storage.base import (
    INTAKE_STATUSES, MAX_LIST_LIMIT, ApplicationRecord, CallRecord, CallSummary, StoreError,
)
from voicebot.storage.migrations import Migration, load_migrations

log = logging.getLogger("voicebot.storage")

T = TypeVar("T")
REFERENCE_PREFIX = "HA"

_TURN_UPSERT = """
INSERT INTO turns (call_id, seq, speaker, text, start_s, end_s, intent, confidence, interrupted, counted)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (call_id, seq) DO UPDATE SET
    speaker = excluded.speaker, text = excluded.text, start_s = excluded.start_s, end_s = excluded.end_s,
    intent = excluded.intent, confidence = excluded.confidence, interrupted = excluded.interrupted,
    counted = excluded.counted
"""

# A submitted form keeps its status, fields and reference whatever is saved after it.
_INTAKE_UPSERT = """
INSERT INTO intakes (call_id, form, status, fields, reference, created_at, updated_at, submitted_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (call_id, form) DO UPDATE SET
    fields = CASE WHEN intakes.status = 'submitted' THEN intakes.fields ELSE excluded.fields END,
    reference = CASE WHEN intakes.status = 'submitted' THEN intakes.reference ELSE excluded.reference END,
    submitted_at = CASE WHEN intakes.status = 'submitted' THEN intakes.submitted_at ELSE excluded.submitted_at END,
    status = CASE WHEN intakes.status = 'submitted' THEN 'submitted' ELSE excluded.status END,
    updated_at = excluded.updated_at
"""

_CALL_COLUMNS = ("call_id, name, caller_id, engine, status, outcome, transfer_reason, transfer_queue, latency_ms, "
                 "started_at, ended_at, duration_s")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class SqliteCallStore:
    backend = "sqlite"

    def __init__(self, path: Path, *, recover: bool = True, busy_timeout_s: float = 5.0,
                 now: Callable[[], datetime] = _utc_now) -> None:
        self.path = Path(path)
        self._recover = recover
        self._busy_timeout_s = busy_timeout_s
        self._now = now
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        #: the schema version after open()
        self.schema_version = 0

    async def __aenter__(self) -> "SqliteCallStore":
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ lifetime

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicebot-sqlite")
        try:
            self.schema_version = await self._run(self._connect_and_migrate)
        except BaseException:
            await self.close()
            raise
        log.info("call store %s at schema version %d", self.path, self.schema_version)
        if self._recover:
            await self.recover_interrupted()

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(executor, self._close_connection)
        executor.shutdown(wait=True)

    async def ping(self) -> None:
        await self._run(lambda: self._db().execute("SELECT 1").fetchone())

    # ------------------------------------------------------------------ writes

    async def start_call(self, report: CallReport) -> None:
        now = self._stamp()
        row = (report.call_id, report.call, report.caller_id, report.engine, report.started_at or now, now)

        def insert() -> None:
            with self._transaction() as db:
                db.execute("INSERT INTO calls (call_id, name, caller_id, engine, started_at, updated_at) "
                           "VALUES (?, ?, ?, ?, ?, ?)", row)

        await self._run(insert)

    async def save_progress(self, call_id: str, turns: Mapping[int, Turn], latency_ms: Sequence[float]) -> None:
        rows = [_turn_row(call_id, seq, turn) for seq, turn in turns.items()]
        call = (json.dumps(list(latency_ms)), self._stamp(), call_id)

        def write() -> None:
            with self._transaction() as db:
                db.executemany(_TURN_UPSERT, rows)
                db.execute("UPDATE calls SET latency_ms = ?, updated_at = ? WHERE call_id = ?", call)

        await self._run(write)

    async def save_intake(self, call_id: str, intake: IntakeForm) -> None:
        row = self._intake_row(call_id, intake)

        def write() -> None:
            with self._transaction() as db:
                db.execute(_INTAKE_UPSERT, row)
                db.execute("UPDATE calls SET updated_at = ? WHERE call_id = ?", (row[6], call_id))

        await self._run(write)

    async def submit_intake(self, call_id: str, intake: IntakeForm) -> str:
        now = self._stamp()
        fields = json.dumps(intake.fields, ensure_ascii=False)

        def write() -> str:
            with self._transaction() as db:
                done = db.execute("SELECT reference FROM intakes WHERE call_id = ? AND form = ? AND status = 'submitted'",
                                  (call_id, intake.form)).fetchone()
                if done is not None:
                    return done[0]
                number = db.execute("INSERT INTO reference_numbers (call_id, issued_at) VALUES (?, ?)",
                                    (call_id, now)).lastrowid
                reference = f"{REFERENCE_PREFIX}{number:06d}"
                db.execute(_INTAKE_UPSERT, (call_id, intake.form, "submitted", fields, reference, now, now, now))
                db.execute("UPDATE calls SET updated_at = ? WHERE call_id = ?", (now, call_id))
                return reference

        return await self._run(write)

    async def end_call(self, report: CallReport) -> None:
        now = self._stamp()
        transfer = report.transfer
        call = (
            report.call_id, report.call, report.caller_id, report.engine, "ended", report.outcome,
            transfer.reason if transfer else None, transfer.queue if transfer else None,
            json.dumps(list(report.latency_ms)), report.started_at or now, report.ended_at or now,
            report.duration_s, now,
        )
        turns = [_turn_row(report.call_id, seq, turn) for seq, turn in enumerate(report.turns)]
        intake = self._intake_row(report.call_id, report.intake) if report.intake else None

        def write() -> None:
            with self._transaction() as db:
                db.execute(
                    f"INSERT INTO calls ({_CALL_COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (call_id) DO UPDATE SET caller_id = excluded.caller_id, engine = excluded.engine, "
                    "status = excluded.status, outcome = excluded.outcome, transfer_reason = excluded.transfer_reason, "
                    "transfer_queue = excluded.transfer_queue, latency_ms = excluded.latency_ms, "
                    "ended_at = excluded.ended_at, duration_s = excluded.duration_s, updated_at = excluded.updated_at",
                    call,
                )
                db.executemany(_TURN_UPSERT, turns)
                db.execute("DELETE FROM turns WHERE call_id = ? AND seq >= ?", (report.call_id, len(turns)))
                if intake is not None:
                    db.execute(_INTAKE_UPSERT, intake)

        await self._run(write)

    async def recover_interrupted(self) -> int:
        def mark() -> list[str]:
            with self._transaction() as db:
                rows = db.execute(
                    "UPDATE calls SET status = 'interrupted', outcome = 'abandoned', ended_at = updated_at, "
                    "duration_s = (SELECT COALESCE(MAX(end_s), 0) FROM turns WHERE turns.call_id = calls.call_id) "
                    "WHERE status = 'active' RETURNING call_id"
                ).fetchall()
            return [r[0] for r in rows]

        call_ids = await self._run(mark)
        if call_ids:
            log.warning("%d call(s) left open by an earlier crash marked interrupted: %s",
                        len(call_ids), ", ".join(call_ids))
        return len(call_ids)

    # ------------------------------------------------------------------ reads

    async def get_call(self, call_id: str) -> CallRecord | None:
        def read() -> CallRecord | None:
            db = self._db()
            row = db.execute(f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_id = ?", (call_id,)).fetchone()
            if row is None:
                return None
            turns = db.execute("SELECT speaker, text, start_s, end_s, intent, confidence, interrupted, counted "
                               "FROM turns WHERE call_id = ? ORDER BY seq", (call_id,)).fetchall()
            intake = db.execute("SELECT form, status, fields, reference FROM intakes WHERE call_id = ? "
                                "ORDER BY updated_at DESC, rowid DESC LIMIT 1", (call_id,)).fetchone()
            return _call_record(row, turns, intake)

        return await self._run(read)

    async def list_calls(self, limit: int = 50) -> list[CallSummary]:
        _check_limit(limit)

        def read() -> list[CallSummary]:
            rows = self._db().execute(
                "SELECT c.call_id, c.name, c.caller_id, c.status, c.outcome, c.transfer_reason, c.transfer_queue, "
                "c.started_at, c.ended_at, c.duration_s, "
                "(SELECT COUNT(*) FROM turns t WHERE t.call_id = c.call_id), "
                "(SELECT status FROM intakes i WHERE i.call_id = c.call_id ORDER BY updated_at DESC LIMIT 1), "
                "(SELECT reference FROM intakes i WHERE i.call_id = c.call_id AND reference IS NOT NULL "
                " ORDER BY updated_at DESC LIMIT 1) "
                "FROM calls c ORDER BY c.started_at DESC, c.rowid DESC LIMIT ?", (limit,)
            ).fetchall()
            return [
                CallSummary(r[0], r[1], r[2], r[3], r[4], Transfer(r[5], r[6]) if r[5] else None,
                            r[7], r[8], r[9], r[10], r[11], r[12])
                for r in rows
            ]

        return await self._run(read)

    async def list_applications(self, status: IntakeStatus | None = None, limit: int = 50) -> list[ApplicationRecord]:
        _check_limit(limit)
        if status is not None and status not in INTAKE_STATUSES:
            raise ValueError(f"status must be one of {', '.join(INTAKE_STATUSES)}, not {status!r}")

        def read() -> list[ApplicationRecord]:
            rows = self._db().execute(
                "SELECT i.call_id, c.caller_id, c.status, i.form, i.status, i.fields, i.reference, "
                "i.created_at, i.updated_at, i.submitted_at "
                "FROM intakes i JOIN calls c ON c.call_id = i.call_id "
                "WHERE ?1 IS NULL OR i.status = ?1 ORDER BY i.created_at DESC, i.rowid DESC LIMIT ?2",
                (status, limit),
            ).fetchall()
            return [
                ApplicationRecord(r[0], r[1], r[2], IntakeForm(r[3], r[4], json.loads(r[5]), r[6]), r[7], r[8], r[9])
                for r in rows
            ]

        return await self._run(read)

    # ------------------------------------------------------------------ on the store thread

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError(f"call store {self.path} is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as e:
            raise StoreError(f"call store {self.path}: {e}") from e

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"call store {self.path} is not open")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _connect_and_migrate(self) -> int:
        migrations = load_migrations(self.backend)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy_timeout_s)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open call store {self.path}: {e}") from None
        self._conn = db
        try:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                log.warning("call store %s: WAL journal not available here, using %s", self.path, mode)
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            return self._migrate(db, migrations)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open call store {self.path}: {e}") from None

    def _migrate(self, db: sqlite3.Connection, migrations: list[Migration]) -> int:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version "
                   "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
        current = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        latest = migrations[-1].version if migrations else 0
        if current > latest:
            raise StoreError(f"call store {self.path} has schema version {current}, newer than this "
                             f"voicebot knows ({latest}); upgrade voicebot")
        for m in migrations[current:]:
            # executescript commits on its own; the explicit BEGIN makes file + version row one transaction.
            script = (f"BEGIN IMMEDIATE;\n{m.sql}\n;\nINSERT INTO schema_version (version, name, applied_at) "
                      f"VALUES ({m.version}, '{m.name}', '{self._stamp()}');\nCOMMIT;")
            try:
                db.executescript(script)
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreError(f"call store {self.path}: migration {m.version:04d}_{m.name} failed: {e}") from None
            log.info("call store %s: applied migration %04d_%s", self.path, m.version, m.name)
        return max(current, latest)

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # ------------------------------------------------------------------ helpers

    def _stamp(self) -> str:
        return self._now().astimezone(timezone.utc).isoformat(timespec="milliseconds")

    def _intake_row(self, call_id: str, intake: IntakeForm) -> tuple:
        now = self._stamp()
        submitted_at = now if intake.status == "submitted" else None
        return (call_id, intake.form, intake.status, json.dumps(intake.fields, ensure_ascii=False), intake.reference,
                now, now, submitted_at)


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be from 1 to {MAX_LIST_LIMIT}, not {limit}")


def _turn_row(call_id: str, seq: int, t: Turn) -> tuple:
    return (call_id, seq, t.speaker, t.text, t.start_s, t.end_s, t.intent, t.confidence, int(t.interrupted),
            int(t.counted))


def _call_record(row: tuple, turns: list[tuple], intake: tuple | None) -> CallRecord:
    (call_id, name, caller_id, engine, status, outcome, reason, queue, latency_ms, started_at, ended_at,
     duration_s) = row
    report = CallReport(
        call=name, call_id=call_id, caller_id=caller_id, engine=engine, outcome=outcome or "abandoned",
        transfer=Transfer(reason, queue) if reason else None,
        intake=IntakeForm(intake[0], intake[1], json.loads(intake[2]), intake[3]) if intake else None,
        turns=[Turn(t[0], t[1], t[2], t[3], t[4], t[5], bool(t[6]), bool(t[7])) for t in turns],
        latency_ms=json.loads(latency_ms), started_at=started_at, ended_at=ended_at or "",
        duration_s=duration_s or 0.0,
    )
    return CallRecord(report, status)
