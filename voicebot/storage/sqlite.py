"""The call store in one SQLite file: zero set-up, one or a few service processes per file.

Every statement runs on one dedicated thread that owns the connection, so the
event loop never waits on the disk and writes never interleave. Each write is
its own transaction in WAL mode with ``synchronous=NORMAL``: a committed write
survives the process being killed (only a power cut may lose the last few).
Writes take SQLite's write lock first (``BEGIN IMMEDIATE``), which is what makes
``take_next`` safe between processes sharing the file.

Queue, callback, agent and call changes are also written to a change log in the same
transaction; each open store reads it right after its own writes and every
``poll_interval_s`` (for other processes' writes), and feeds ``changes()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence, TypeVar

from voicebot.calls.report import CallReport, Turn
from voicebot.events import IntakeForm, IntakeStatus, Transfer
from voicebot.storage import rows as R
from voicebot.storage.base import INTAKE_STATUSES, ApplicationRecord, CallRecord, CallSummary, StoreError
from voicebot.storage.feed import ChangeFeed, ChangeHub
from voicebot.storage.figures import CallGroup, DayFigures, WaitGroup, fold_figures, text_margin
from voicebot.storage.records import (
    AGENT_STATES, CALLBACK_STATES, HANDLING_STATES, LIVE_QUEUE_STATES, QUEUE_STATES, ROLES, Agent, AgentChange,
    AgentState, ApiToken, AuditEntry, CallChange, Callback, CallbackChange, CallbackState, ChangesMissed, LoginSession,
    QueueChange, QueueEntry, QueuePosition, RetentionReport, StoreChange, User, change_from_json, change_to_json,
)

log = logging.getLogger("voicebot.storage")

T = TypeVar("T")
#: change log rows kept for processes that read it late; one further behind gets ChangesMissed
CHANGE_LOG_KEPT = 10000

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

#: the queue states of a caller an agent has in hand, as an SQL list
_HANDLING_SQL = "(" + ", ".join(f"'{state}'" for state in HANDLING_STATES) + ")"

_CALL_WRITE_COLUMNS = ("call_id, name, caller_id, engine, status, outcome, transfer_reason, transfer_queue, "
                       "latency_ms, started_at, ended_at, duration_s")


def _ts(moment: datetime) -> str:
    """The new tables' text time: UTC, microseconds, one width, so text order is time order."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _queues(value: str) -> list[str]:
    return json.loads(value)


class SqliteCallStore(R.StoreBase):
    backend = "sqlite"

    def __init__(self, path: Path, *, recover: bool = True, busy_timeout_s: float = 5.0,
                 now: Callable[[], datetime] = R.utc_now, poll_interval_s: float = 0.5) -> None:
        self.path = Path(path)
        self._recover = recover
        self._busy_timeout_s = busy_timeout_s
        self._now = now
        self._poll_interval_s = poll_interval_s
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._hub = ChangeHub()
        self._poller: asyncio.Task | None = None
        self._wake = asyncio.Event()
        #: the last change log row this store has published
        self._seen_seq = 0
        #: a write logged a change (set on the store thread, read on the loop after it)
        self._logged = False
        #: the last change log row this store wrote
        self._written_seq = 0
        #: the schema version after open()
        self.schema_version = 0

    # ------------------------------------------------------------------ lifetime

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicebot-sqlite")
        try:
            self.schema_version = await self._run(self._connect_and_migrate)
            self._seen_seq = await self._run(
                lambda: self._db().execute("SELECT COALESCE(MAX(seq), 0) FROM change_log").fetchone()[0])
        except BaseException:
            await self.close()
            raise
        log.info("call store %s at schema version %d", self.path, self.schema_version)
        self._wake = asyncio.Event()
        self._poller = asyncio.create_task(self._poll_changes(), name=f"voicebot-sqlite-changes {self.path.name}")
        if self._recover:
            await self.recover_interrupted()

    async def close(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        self._hub.close()
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

        def insert(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO calls (call_id, name, caller_id, engine, started_at, updated_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", row)
            self._emit(db, CallChange(report.call_id, "started"))

        await self._write(insert)

    async def save_progress(self, call_id: str, turns: Mapping[int, Turn], latency_ms: Sequence[float]) -> None:
        rows = [R.turn_row(call_id, seq, turn) for seq, turn in turns.items()]
        call = (json.dumps(list(latency_ms)), self._stamp(), call_id)

        def write(db: sqlite3.Connection) -> None:
            db.executemany(_TURN_UPSERT, rows)
            db.execute("UPDATE calls SET latency_ms = ?, updated_at = ? WHERE call_id = ?", call)
            self._emit(db, CallChange(call_id, "progress"))

        await self._write(write)

    async def save_intake(self, call_id: str, intake: IntakeForm) -> None:
        row = self._intake_row(call_id, intake)

        def write(db: sqlite3.Connection) -> None:
            db.execute(_INTAKE_UPSERT, row)
            db.execute("UPDATE calls SET updated_at = ? WHERE call_id = ?", (row[6], call_id))
            self._emit(db, CallChange(call_id, "intake"))

        await self._write(write)

    async def submit_intake(self, call_id: str, intake: IntakeForm) -> str:
        now = self._stamp()
        fields = json.dumps(intake.fields, ensure_ascii=False)

        def write(db: sqlite3.Connection) -> str:
            done = db.execute("SELECT reference FROM intakes WHERE call_id = ? AND form = ? AND status = 'submitted'",
                              (call_id, intake.form)).fetchone()
            if done is not None:
                return done[0]
            number = db.execute("INSERT INTO reference_numbers (call_id, issued_at) VALUES (?, ?)",
                                (call_id, now)).lastrowid
            reference = R.reference(number)
            db.execute(_INTAKE_UPSERT, (call_id, intake.form, "submitted", fields, reference, now, now, now))
            db.execute("UPDATE calls SET updated_at = ? WHERE call_id = ?", (now, call_id))
            self._emit(db, CallChange(call_id, "intake"))
            return reference

        return await self._write(write)

    async def end_call(self, report: CallReport) -> None:
        now = self._stamp()
        transfer = report.transfer
        call = (
            report.call_id, report.call, report.caller_id, report.engine, "ended", report.outcome,
            transfer.reason if transfer else None, transfer.queue if transfer else None,
            json.dumps(list(report.latency_ms)), report.started_at or now, report.ended_at or now,
            report.duration_s, now,
        )
        turns = [R.turn_row(report.call_id, seq, turn) for seq, turn in enumerate(report.turns)]
        intake = self._intake_row(report.call_id, report.intake) if report.intake else None

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO calls ({_CALL_WRITE_COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
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
            self._emit(db, CallChange(report.call_id, "ended"))

        await self._write(write)

    async def recover_interrupted(self) -> int:
        def mark(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "UPDATE calls SET status = 'interrupted', outcome = 'abandoned', ended_at = updated_at, "
                "duration_s = (SELECT COALESCE(MAX(end_s), 0) FROM turns WHERE turns.call_id = calls.call_id) "
                "WHERE status = 'active' RETURNING call_id"
            ).fetchall()
            for (call_id,) in rows:
                self._emit(db, CallChange(call_id, "interrupted"))
            return [r[0] for r in rows]

        call_ids = await self._write(mark)
        return R.log_recovered(call_ids)

    # ------------------------------------------------------------------ reads

    async def get_call(self, call_id: str) -> CallRecord | None:
        def read() -> CallRecord | None:
            db = self._db()
            row = db.execute(f"SELECT {R.CALL_COLUMNS} FROM calls WHERE call_id = ?", (call_id,)).fetchone()
            if row is None:
                return None
            turns = db.execute(f"SELECT {R.TURN_COLUMNS} "
                               "FROM turns WHERE call_id = ? ORDER BY seq", (call_id,)).fetchall()
            intake = db.execute("SELECT form, status, fields, reference FROM intakes WHERE call_id = ? "
                                "ORDER BY updated_at DESC, rowid DESC LIMIT 1", (call_id,)).fetchone()
            return R.call_record(row, turns, intake)

        return await self._run(read)

    async def list_calls(self, limit: int = 50) -> list[CallSummary]:
        R.check_limit(limit)

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
        R.check_limit(limit)
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

    async def set_recording(self, call_id: str, path: str) -> None:
        await self._write(lambda db: db.execute("UPDATE calls SET recording_path = ? WHERE call_id = ?",
                                                (path, call_id)))

    async def day_figures(self, since: datetime, until: datetime, now: datetime | None = None) -> DayFigures:
        start, end = int(since.timestamp()), int(until.timestamp())
        # the calls' times are their reports' ISO text: the index narrows by text (a day's margin for
        # any UTC offset), the parsed time decides
        lo, hi = text_margin(since, until)
        moment = _ts(now or self._now())

        def read(db: sqlite3.Connection) -> tuple[list[CallGroup], list[WaitGroup]]:
            calls = db.execute(
                "SELECT (CAST(strftime('%s', c.started_at) AS INTEGER) - ?1) / 3600, c.status, c.outcome, "
                "COALESCE(c.transfer_reason, (SELECT q.reason FROM queue_entries q WHERE q.call_id = c.call_id "
                "  ORDER BY q.entry_id DESC LIMIT 1)) AS reason, COUNT(*) "
                "FROM calls c WHERE c.started_at >= ?3 AND c.started_at < ?4 "
                "AND CAST(strftime('%s', c.started_at) AS INTEGER) >= ?1 "
                "AND CAST(strftime('%s', c.started_at) AS INTEGER) < ?2 "
                "GROUP BY 1, 2, 3, 4", (start, end, lo, hi)).fetchall()
            waits = db.execute(
                "SELECT (CAST(strftime('%s', enqueued_at) AS INTEGER) - ?1) / 3600, state, COUNT(*), "
                "COALESCE(SUM(CASE WHEN state != 'waiting' THEN wait_s END), 0), "
                "COUNT(CASE WHEN state != 'waiting' THEN wait_s END), "
                "MAX(CASE WHEN state = 'waiting' THEN MAX(0, (julianday(?4) - julianday(enqueued_at)) * 86400) "
                "    ELSE wait_s END) "
                "FROM queue_entries WHERE enqueued_at >= ?2 AND enqueued_at < ?3 GROUP BY 1, 2",
                (start, _ts(since), _ts(until), moment)).fetchall()
            return [CallGroup(*r) for r in calls], [WaitGroup(*r) for r in waits]

        calls, waits = await self._read(read)
        return fold_figures(since, until, calls, waits)

    # ------------------------------------------------------------------ the live-agent queue

    async def enqueue(self, call_id: str, queue: str, *, priority: int = 0, reason: str = "",
                      caller_id: str = "") -> QueueEntry:
        row = (call_id, queue, priority, reason, caller_id, _ts(self._now()))

        def write(db: sqlite3.Connection) -> QueueEntry:
            entry = self._entry(db.execute(
                "INSERT INTO queue_entries (call_id, queue, priority, reason, caller_id, enqueued_at) "
                f"VALUES (?, ?, ?, ?, ?, ?) RETURNING {R.QUEUE_COLUMNS}", row).fetchone())
            return self._queue_changed(db, entry)

        return await self._write(write)

    async def get_queue_entry(self, entry_id: int) -> QueueEntry | None:
        return await self._read(lambda db: self._entry(db.execute(
            f"SELECT {R.QUEUE_COLUMNS} FROM queue_entries WHERE entry_id = ?", (entry_id,)).fetchone()))

    async def queue_position(self, entry_id: int, *, default_handling_s: float = 180.0,
                             recent: int = 20) -> QueuePosition | None:
        def read(db: sqlite3.Connection) -> QueuePosition | None:
            me = db.execute("SELECT queue, priority, enqueued_at FROM queue_entries "
                            "WHERE entry_id = ? AND state = 'waiting'", (entry_id,)).fetchone()
            if me is None:
                return None
            queue, priority, enqueued_at = me
            position, waiting = db.execute(
                "SELECT COUNT(*) FILTER (WHERE priority > ?2 OR (priority = ?2 AND (enqueued_at < ?3 "
                "   OR (enqueued_at = ?3 AND entry_id <= ?4)))), COUNT(*) "
                "FROM queue_entries WHERE queue = ?1 AND state = 'waiting'",
                (queue, priority, enqueued_at, entry_id)).fetchone()
            handling_s = db.execute(
                "SELECT AVG(handled_s) FROM (SELECT handled_s FROM queue_entries "
                "WHERE queue = ? AND state = 'done' AND handled_s IS NOT NULL ORDER BY ended_at DESC LIMIT ?)",
                (queue, recent)).fetchone()[0]
            agents = db.execute(
                "SELECT COUNT(*) FROM agents WHERE state != 'away' "
                "AND EXISTS (SELECT 1 FROM json_each(agents.queues) WHERE value = ?)", (queue,)).fetchone()[0]
            return QueuePosition(entry_id, queue, position, waiting, agents, R.estimate_wait_s(
                position, agents, default_handling_s if handling_s is None else handling_s))

        return await self._read(read)

    async def list_waiting(self, queue: str | None = None) -> list[QueueEntry]:
        return await self._read(lambda db: [self._entry(r) for r in db.execute(
            f"SELECT {R.QUEUE_COLUMNS} FROM queue_entries WHERE state = 'waiting' AND (?1 IS NULL OR queue = ?1) "
            "ORDER BY queue, priority DESC, enqueued_at, entry_id", (queue,))])

    async def list_queue(self, queue: str | None = None, states: Iterable[str] | None = None,
                         limit: int = 50) -> list[QueueEntry]:
        R.check_limit(limit)
        wanted = R.wanted_states("queue state", states, LIVE_QUEUE_STATES, QUEUE_STATES)
        return await self._read(lambda db: [self._entry(r) for r in db.execute(
            f"SELECT {R.QUEUE_COLUMNS} FROM queue_entries WHERE state IN (SELECT value FROM json_each(?1)) "
            "AND (?2 IS NULL OR queue = ?2) ORDER BY enqueued_at, entry_id LIMIT ?3",
            (json.dumps(wanted), queue, limit))])

    async def take_next(self, agent: str, queues: Sequence[str]) -> QueueEntry | None:
        now = self._now()
        names = json.dumps(list(queues))

        def write(db: sqlite3.Connection) -> QueueEntry | None:
            # BEGIN IMMEDIATE holds the file's write lock from the reads to the update: no other process between.
            if db.execute(f"SELECT 1 FROM queue_entries WHERE agent = ? AND state IN {_HANDLING_SQL} LIMIT 1",
                          (agent,)).fetchone() is not None:
                return None
            first = self._entry(db.execute(
                f"SELECT {R.QUEUE_COLUMNS} FROM queue_entries WHERE state = 'waiting' "
                "AND queue IN (SELECT value FROM json_each(?)) "
                "ORDER BY priority DESC, enqueued_at, entry_id LIMIT 1", (names,)).fetchone())
            if first is None:
                return None
            wait_s = (now - first.enqueued_at).total_seconds()
            return self._queue_changed(db, self._entry(db.execute(
                "UPDATE queue_entries SET state = 'connecting', agent = ?, wait_s = ? WHERE entry_id = ? "
                f"RETURNING {R.QUEUE_COLUMNS}", (agent, wait_s, first.entry_id)).fetchone()))

        return await self._write(write)

    async def mark_connected(self, entry_id: int) -> QueueEntry | None:
        now = self._now()

        def change(entry: QueueEntry) -> tuple[str, tuple]:
            return ("state = 'connected', connected_at = ?, wait_s = ?",
                    (_ts(now), (now - entry.enqueued_at).total_seconds()))

        return await self._transition(entry_id, ("connecting",), change)

    async def requeue(self, entry_id: int) -> QueueEntry | None:
        return await self._transition(entry_id, ("connecting",),
                                      lambda e: ("state = 'waiting', agent = NULL, wait_s = NULL", ()))

    async def leave_queue(self, entry_id: int, state: Literal["abandoned", "callback"]) -> QueueEntry | None:
        R.check_choice("state", state, ("abandoned", "callback"))
        now = self._now()
        return await self._transition(entry_id, R.LEAVE_FROM, lambda e: (
            "state = ?, ended_at = ?, wait_s = ?", (state, _ts(now), (now - e.enqueued_at).total_seconds())))

    async def finish(self, entry_id: int, note: str = "") -> QueueEntry | None:
        now = self._now()

        def change(entry: QueueEntry) -> tuple[str, tuple]:
            handled_s = (now - entry.connected_at).total_seconds() if entry.connected_at else None
            return "state = 'done', ended_at = ?, handled_s = ?, note = ?", (_ts(now), handled_s, note)

        return await self._transition(entry_id, ("connected",), change)

    async def _transition(self, entry_id: int, before: Sequence[str],
                          change: Callable[[QueueEntry], tuple[str, tuple]]) -> QueueEntry | None:
        """Move an entry from one of ``before`` to what ``change`` sets, atomically; None if it was elsewhere."""

        def write(db: sqlite3.Connection) -> QueueEntry | None:
            entry = self._entry(db.execute(f"SELECT {R.QUEUE_COLUMNS} FROM queue_entries WHERE entry_id = ?",
                                           (entry_id,)).fetchone())
            if entry is None or entry.state not in before:
                return None
            assignments, params = change(entry)
            return self._queue_changed(db, self._entry(db.execute(
                f"UPDATE queue_entries SET {assignments} WHERE entry_id = ? RETURNING {R.QUEUE_COLUMNS}",
                (*params, entry_id)).fetchone()))

        return await self._write(write)

    def _queue_changed(self, db: sqlite3.Connection, entry: QueueEntry) -> QueueEntry:
        self._emit(db, QueueChange(entry.entry_id, entry.call_id, entry.queue, entry.state))
        return entry

    @staticmethod
    def _entry(row: Sequence | None) -> Any:
        return None if row is None else R.queue_entry(row, _time)

    # ------------------------------------------------------------------ callbacks

    async def request_callback(self, call_id: str, queue: str, number: str, note: str = "") -> Callback:
        now = _ts(self._now())
        return await self._callback_write(
            "INSERT INTO callbacks (call_id, queue, number, note, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
            f"RETURNING {R.CALLBACK_COLUMNS}", (call_id, queue, number, note, now, now))

    async def get_callback(self, callback_id: int) -> Callback | None:
        return await self._read(lambda db: self._callback(db.execute(
            f"SELECT {R.CALLBACK_COLUMNS} FROM callbacks WHERE callback_id = ?", (callback_id,)).fetchone()))

    async def list_callbacks(self, states: Iterable[CallbackState] | None = None, queue: str | None = None,
                             limit: int = 50) -> list[Callback]:
        R.check_limit(limit)
        wanted = R.wanted_states("callback state", states, CALLBACK_STATES, CALLBACK_STATES)
        return await self._read(lambda db: [self._callback(r) for r in db.execute(
            f"SELECT {R.CALLBACK_COLUMNS} FROM callbacks WHERE state IN (SELECT value FROM json_each(?1)) "
            "AND (?2 IS NULL OR queue = ?2) ORDER BY created_at, callback_id LIMIT ?3",
            (json.dumps(wanted), queue, limit))])

    async def claim_callback(self, callback_id: int, agent: str) -> Callback | None:
        return await self._callback_write(
            "UPDATE callbacks SET state = 'claimed', claimed_by = ?, updated_at = ? "
            f"WHERE callback_id = ? AND state = 'open' RETURNING {R.CALLBACK_COLUMNS}",
            (agent, _ts(self._now()), callback_id))

    async def close_callback(self, callback_id: int, state: Literal["done", "failed"],
                             note: str = "") -> Callback | None:
        R.check_choice("state", state, ("done", "failed"))
        return await self._callback_write(
            "UPDATE callbacks SET state = ?, note = ?, updated_at = ? "
            f"WHERE callback_id = ? AND state = 'claimed' RETURNING {R.CALLBACK_COLUMNS}",
            (state, note, _ts(self._now()), callback_id))

    async def _callback_write(self, sql: str, params: tuple) -> Any:
        def write(db: sqlite3.Connection) -> Callback | None:
            callback = self._callback(db.execute(sql, params).fetchone())
            if callback is not None:
                self._emit(db, CallbackChange(callback.callback_id, callback.queue, callback.state))
            return callback

        return await self._write(write)

    @staticmethod
    def _callback(row: Sequence | None) -> Any:
        return None if row is None else R.callback(row, _time)

    # ------------------------------------------------------------------ agents

    async def save_agent(self, name: str, sip_uri: str, queues: Sequence[str]) -> Agent:
        row = (name, sip_uri, json.dumps(list(queues)), _ts(self._now()))
        return await self._agent_write(
            "INSERT INTO agents (name, sip_uri, queues, state_since) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET sip_uri = excluded.sip_uri, queues = excluded.queues "
            f"RETURNING {R.AGENT_COLUMNS}", row)

    async def set_agent_state(self, name: str, state: AgentState) -> Agent | None:
        R.check_choice("agent state", state, AGENT_STATES)
        return await self._agent_write(
            "UPDATE agents SET state = ?1, state_since = CASE WHEN state = ?1 THEN state_since ELSE ?2 END "
            f"WHERE name = ?3 RETURNING {R.AGENT_COLUMNS}", (state, _ts(self._now()), name))

    async def get_agent(self, name: str) -> Agent | None:
        return await self._read(lambda db: self._agent(db.execute(
            f"SELECT {R.AGENT_COLUMNS} FROM agents WHERE name = ?", (name,)).fetchone()))

    async def list_agents(self, queue: str | None = None) -> list[Agent]:
        return await self._read(lambda db: [self._agent(r) for r in db.execute(
            f"SELECT {R.AGENT_COLUMNS} FROM agents WHERE ?1 IS NULL "
            "OR EXISTS (SELECT 1 FROM json_each(agents.queues) WHERE value = ?1) ORDER BY name", (queue,))])

    async def delete_agent(self, name: str) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            gone = db.execute("DELETE FROM agents WHERE name = ?", (name,)).rowcount > 0
            if gone:
                self._emit(db, AgentChange(name, None))
            return gone

        return await self._write(write)

    async def _agent_write(self, sql: str, params: tuple) -> Any:
        def write(db: sqlite3.Connection) -> Agent | None:
            agent = self._agent(db.execute(sql, params).fetchone())
            if agent is not None:
                self._emit(db, AgentChange(agent.name, agent.state))
            return agent

        return await self._write(write)

    @staticmethod
    def _agent(row: Sequence | None) -> Any:
        return None if row is None else R.agent(row, _time, _queues)

    # ------------------------------------------------------------------ users, tokens, sessions

    async def add_user(self, user: User) -> User:
        R.check_choice("role", user.role, ROLES)
        row = (user.name, user.role, user.password_hash, _ts(user.created_at or self._now()), user.disabled)

        def write(db: sqlite3.Connection) -> User:
            try:
                return R.user(db.execute(
                    "INSERT INTO users (name, role, password_hash, created_at, disabled) VALUES (?, ?, ?, ?, ?) "
                    f"RETURNING {R.USER_COLUMNS}", row).fetchone(), _time)
            except sqlite3.IntegrityError:
                raise StoreError(f"a user named {user.name!r} already exists") from None

        return await self._write(write)

    async def get_user(self, name: str) -> User | None:
        row = await self._read(lambda db: db.execute(f"SELECT {R.USER_COLUMNS} FROM users WHERE name = ?",
                                                     (name,)).fetchone())
        return None if row is None else R.user(row, _time)

    async def list_users(self) -> list[User]:
        rows = await self._read(lambda db: db.execute(f"SELECT {R.USER_COLUMNS} FROM users ORDER BY name").fetchall())
        return [R.user(r, _time) for r in rows]

    async def set_password_hash(self, name: str, password_hash: str) -> bool:
        return await self._write(lambda db: db.execute("UPDATE users SET password_hash = ? WHERE name = ?",
                                                       (password_hash, name)).rowcount > 0)

    async def set_user_disabled(self, name: str, disabled: bool) -> bool:
        return await self._write(lambda db: db.execute("UPDATE users SET disabled = ? WHERE name = ?",
                                                       (disabled, name)).rowcount > 0)

    async def delete_user(self, name: str) -> bool:
        return await self._write(lambda db: db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0)

    async def add_api_token(self, user: str, token_hash: str, label: str = "") -> ApiToken:
        row = (token_hash, user, label, _ts(self._now()))

        def write(db: sqlite3.Connection) -> ApiToken:
            try:
                return R.api_token(db.execute(
                    "INSERT INTO api_tokens (token_hash, user_name, label, created_at) VALUES (?, ?, ?, ?) "
                    f"RETURNING {R.TOKEN_COLUMNS}", row).fetchone(), _time)
            except sqlite3.IntegrityError:
                raise StoreError(f"no user {user!r}, or that token exists already") from None

        return await self._write(write)

    async def user_for_token(self, token_hash: str) -> User | None:
        row = await self._read(lambda db: db.execute(
            f"SELECT {', '.join('u.' + c for c in R.USER_COLUMNS.split(', '))} FROM api_tokens t "
            "JOIN users u ON u.name = t.user_name WHERE t.token_hash = ? AND NOT u.disabled", (token_hash,)).fetchone())
        return None if row is None else R.user(row, _time)

    async def list_api_tokens(self, user: str) -> list[ApiToken]:
        rows = await self._read(lambda db: db.execute(
            f"SELECT {R.TOKEN_COLUMNS} FROM api_tokens WHERE user_name = ? ORDER BY created_at", (user,)).fetchall())
        return [R.api_token(r, _time) for r in rows]

    async def revoke_api_token(self, token_hash: str) -> bool:
        return await self._write(lambda db: db.execute("DELETE FROM api_tokens WHERE token_hash = ?",
                                                       (token_hash,)).rowcount > 0)

    async def save_session(self, session: LoginSession) -> None:
        row = (session.session_hash, session.user, session.csrf_token, _ts(session.created_at),
               _ts(session.expires_at))

        def write(db: sqlite3.Connection) -> None:
            try:
                db.execute("INSERT INTO sessions (session_hash, user_name, csrf_token, created_at, expires_at) "
                           "VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_hash) DO UPDATE SET "
                           "csrf_token = excluded.csrf_token, expires_at = excluded.expires_at", row)
            except sqlite3.IntegrityError:
                raise StoreError(f"no user {session.user!r}") from None

        await self._write(write)

    async def get_session(self, session_hash: str) -> tuple[LoginSession, User] | None:
        row = await self._read(lambda db: db.execute(
            f"SELECT {', '.join('s.' + c for c in R.SESSION_COLUMNS.split(', '))}, "
            f"{', '.join('u.' + c for c in R.USER_COLUMNS.split(', '))} FROM sessions s "
            "JOIN users u ON u.name = s.user_name WHERE s.session_hash = ? AND s.expires_at > ? AND NOT u.disabled",
            (session_hash, _ts(self._now()))).fetchone())
        return None if row is None else (R.login_session(row[:5], _time), R.user(row[5:], _time))

    async def delete_session(self, session_hash: str) -> bool:
        return await self._write(lambda db: db.execute("DELETE FROM sessions WHERE session_hash = ?",
                                                       (session_hash,)).rowcount > 0)

    # ------------------------------------------------------------------ audit and retention

    async def audit(self, user: str, action: str, call_id: str | None = None, detail: str = "") -> AuditEntry:
        row = (_ts(self._now()), user, action, call_id, detail)
        found = await self._write(lambda db: db.execute(
            "INSERT INTO audit_log (at, user_name, action, call_id, detail) VALUES (?, ?, ?, ?, ?) "
            f"RETURNING {R.AUDIT_COLUMNS}", row).fetchone())
        return R.audit_entry(found, _time)

    async def list_audit(self, call_id: str | None = None, limit: int = 50) -> list[AuditEntry]:
        R.check_limit(limit)
        rows = await self._read(lambda db: db.execute(
            f"SELECT {R.AUDIT_COLUMNS} FROM audit_log WHERE ?1 IS NULL OR call_id = ?1 "
            "ORDER BY at DESC, audit_id DESC LIMIT ?2", (call_id, limit)).fetchall())
        return [R.audit_entry(r, _time) for r in rows]

    async def apply_retention(self, days: float) -> RetentionReport:
        now = self._now()
        cutoff = R.retention_cutoff(days, now)
        call_cutoff, cutoff_ts = R.call_stamp(cutoff), _ts(cutoff)

        def write(db: sqlite3.Connection) -> RetentionReport:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS expired (call_id TEXT PRIMARY KEY)")
            db.execute("DELETE FROM expired")
            db.execute(
                "INSERT INTO expired SELECT call_id FROM calls c WHERE status != 'active' AND updated_at < ? AND "
                "(caller_id != '' OR recording_path IS NOT NULL OR EXISTS (SELECT 1 FROM turns t WHERE "
                "t.call_id = c.call_id) OR EXISTS (SELECT 1 FROM intakes i WHERE i.call_id = c.call_id))",
                (call_cutoff,))
            paths = tuple(p for (p,) in db.execute(
                "SELECT recording_path FROM calls WHERE recording_path IS NOT NULL "
                "AND call_id IN (SELECT call_id FROM expired) ORDER BY call_id"))
            calls = db.execute("SELECT COUNT(*) FROM expired").fetchone()[0]
            db.execute("DELETE FROM turns WHERE call_id IN (SELECT call_id FROM expired)")
            intakes = db.execute("DELETE FROM intakes WHERE call_id IN (SELECT call_id FROM expired)").rowcount
            db.execute("UPDATE calls SET caller_id = '', recording_path = NULL "
                       "WHERE call_id IN (SELECT call_id FROM expired)")
            db.execute("UPDATE queue_entries SET caller_id = '', note = '' WHERE ended_at < ? "
                       "AND (caller_id != '' OR note != '')", (cutoff_ts,))
            callbacks = db.execute("DELETE FROM callbacks WHERE state IN ('done', 'failed') AND updated_at < ?",
                                   (cutoff_ts,)).rowcount
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (_ts(now),))
            db.execute("DELETE FROM expired")
            return RetentionReport(calls, intakes, callbacks, paths)

        return R.log_retention(days, await self._write(write))

    # ------------------------------------------------------------------ change feed

    def changes(self) -> ChangeFeed:
        # not this store's own changes logged before now, which the poller may not have read yet
        # (SQLite commits one writer at a time, so the numbers of committed changes run in order)
        return self._hub.feed(skip=range(max(self._seen_seq, self._written_seq) + 1))

    def _emit(self, db: sqlite3.Connection, change: StoreChange) -> None:
        """Log a change in the caller's transaction; the poller publishes it once committed."""
        self._logged = True
        seq = self._written_seq = db.execute("INSERT INTO change_log (payload) VALUES (?)", (change_to_json(change),)).lastrowid
        if seq % 100 == 0:
            db.execute("DELETE FROM change_log WHERE seq <= ?", (seq - CHANGE_LOG_KEPT,))

    async def _poll_changes(self) -> None:
        """Publish change log rows past the last seen one: at once after this store's writes, else every poll."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                rows = await self._run(lambda: self._db().execute(
                    "SELECT seq, payload FROM change_log WHERE seq > ? ORDER BY seq", (self._seen_seq,)).fetchall())
            except StoreError as e:
                log.warning("change feed: %s", e)
                continue
            if rows and rows[0][0] > self._seen_seq + 1 and self._seen_seq:
                self._hub.publish(ChangesMissed())
            for seq, payload in rows:
                self._seen_seq = seq
                self._hub.publish(change_from_json(payload), seq)

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

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in a write transaction; wakes the change feed after, in case it logged a change."""

        def write() -> T:
            with self._transaction() as db:
                return fn(db)

        try:
            return await self._run(write)
        finally:
            if self._logged:
                self._logged = False
                self._wake.set()

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(lambda: fn(self._db()))

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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy_timeout_s)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open call store {self.path}: {e}") from None
        self._conn = db
        try:
            mode = self._journal_to_wal(db)
            if mode != "wal":
                log.warning("call store %s: WAL journal not available here, using %s", self.path, mode)
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open call store {self.path}: {e}") from None
        return self._migrate()

    def _journal_to_wal(self, db: sqlite3.Connection) -> str:
        """WAL mode, waiting out another process that converts the same new file at the same moment.

        The switch needs the file to itself, and SQLite reports "database is locked" at once for it
        instead of calling the busy handler (1 in 15 openings of a new file by two stores together).
        """
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                return db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self) -> int:
        """Alembic on its own connection, the whole upgrade one transaction under SQLite's write lock.

        A database already at the latest version (every worker process opening the service's store)
        is read and left alone: no write lock, so processes starting together do not queue for it.
        """
        from sqlalchemy import URL, create_engine, event
        from sqlalchemy.exc import SQLAlchemyError
        from sqlalchemy.pool import NullPool

        from voicebot.storage.migrations import latest_version, upgrade

        latest = latest_version(self.backend)
        if self._current_version() == latest:
            return latest

        engine = create_engine(URL.create("sqlite", database=str(self.path)), poolclass=NullPool,
                               connect_args={"timeout": self._busy_timeout_s})

        # pysqlite would commit before each DDL statement; take the transaction over (SQLAlchemy's recipe)
        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        try:
            with engine.connect() as connection, connection.begin():
                before, after = upgrade(connection, self.backend, f"call store {self.path}")
        except SQLAlchemyError as e:
            raise StoreError(f"call store {self.path}: cannot bring the schema up to date: "
                             f"{str(e.orig if hasattr(e, 'orig') else e).splitlines()[0]}") from None
        finally:
            engine.dispose()
        if after != before:
            log.info("call store %s: schema upgraded from version %d to %d", self.path, before, after)
        return after

    def _current_version(self) -> int | None:
        """The schema version alembic recorded, read without a write lock; None when there is none."""
        assert self._conn is not None
        try:
            row = self._conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.DatabaseError:
            return None
        try:
            return int(row[0]) if row else None
        except ValueError:
            return None

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # ------------------------------------------------------------------ helpers

    def _stamp(self) -> str:
        return R.call_stamp(self._now())

    def _intake_row(self, call_id: str, intake: IntakeForm) -> tuple:
        now = self._stamp()
        submitted_at = now if intake.status == "submitted" else None
        return (call_id, intake.form, intake.status, json.dumps(intake.fields, ensure_ascii=False), intake.reference,
                now, now, submitted_at)
