"""The call store on PostgreSQL: several service processes (or machines) share one queue and one store.

asyncpg, a pool of connections, and one more connection that LISTENs for the
change feed. Every write that changes the queue, a callback, an agent or a call sends
``pg_notify`` in its own transaction, so every process hears it once it is
committed, this one included. ``take_next`` claims its row with ``FOR UPDATE
SKIP LOCKED``: two agents asking at once get two different callers, and neither
waits for the other; one agent asking twice at once waits for the first answer
(an advisory lock on their name) and gets no second caller.

Behaves as the SQLite store does, to the byte: the call's report times are kept
as the report's text, and times the store makes read back in the same form.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from datetime import datetime
from typing import Any, AsyncIterator, Callable, Iterable, Literal, Mapping, Sequence

import asyncpg

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

#: the NOTIFY channel of the change feed
CHANNEL = "voicebot_changes"
#: the longest wait between attempts to get the LISTEN connection back
RELISTEN_MAX_S = 30.0

_TURN_UPSERT = """
INSERT INTO turns (call_id, seq, speaker, text, start_s, end_s, intent, confidence, interrupted, counted)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (call_id, seq) DO UPDATE SET
    speaker = excluded.speaker, text = excluded.text, start_s = excluded.start_s, end_s = excluded.end_s,
    intent = excluded.intent, confidence = excluded.confidence, interrupted = excluded.interrupted,
    counted = excluded.counted
"""

# A submitted form keeps its status, fields and reference whatever is saved after it.
_INTAKE_UPSERT = """
INSERT INTO intakes (call_id, form, status, fields, reference, created_at, updated_at, submitted_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (call_id, form) DO UPDATE SET
    fields = CASE WHEN intakes.status = 'submitted' THEN intakes.fields ELSE excluded.fields END,
    reference = CASE WHEN intakes.status = 'submitted' THEN intakes.reference ELSE excluded.reference END,
    submitted_at = CASE WHEN intakes.status = 'submitted' THEN intakes.submitted_at ELSE excluded.submitted_at END,
    status = CASE WHEN intakes.status = 'submitted' THEN 'submitted' ELSE excluded.status END,
    updated_at = excluded.updated_at
"""

# SQLite's "ended_at = updated_at" for a call left open: the same text as the store's stamps.
_STAMP_SQL = """to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"+00:00"')"""


def _time(value: datetime | None) -> datetime | None:
    return value


def _stamp_text(value: datetime | None) -> str | None:
    return None if value is None else R.call_stamp(value)


def _queues(value: Sequence[str]) -> list[str]:
    return list(value)


def _columns(prefix: str, columns: str) -> str:
    return ", ".join(f"{prefix}.{c}" for c in columns.split(", "))


def postgres_dsn(url: str) -> str:
    """What asyncpg takes (it knows postgres:// and postgresql://, not SQLAlchemy's +driver forms)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgres", "postgresql"):
        raise StoreError(f"not a PostgreSQL URL: {safe_url(url)!r}")
    return f"postgresql://{rest}"


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


class PostgresCallStore(R.StoreBase):
    backend = "postgres"

    def __init__(self, url: str, *, recover: bool = True, now: Callable[[], datetime] = R.utc_now,
                 pool_size: int = 10, connect_timeout_s: float = 10.0) -> None:
        self._dsn = postgres_dsn(url)
        self.where = f"call store {safe_url(self._dsn)}"
        self._recover = recover
        self._now = now
        self._pool_size = pool_size
        self._connect_timeout_s = connect_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._hub = ChangeHub()
        self._listener: asyncio.Task | None = None
        #: names this store's own notifications, which are numbered by ``_sent``
        self._origin = uuid.uuid4().hex
        self._sent = 0
        #: numbers of changes in transactions still open, per connection
        self._emitted: dict[asyncpg.Connection, list[int]] = {}
        #: numbers of this store's committed changes whose notification has not come back yet
        self._unheard: set[int] = set()
        #: numbers of this store's changes heard before their commit returned
        self._early: set[int] = set()
        #: the schema version after open()
        self.schema_version = 0

    # ------------------------------------------------------------------ lifetime

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self.schema_version = await self._migrate()
            self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._pool_size,
                                                   timeout=self._connect_timeout_s)
            listening = asyncio.get_running_loop().create_future()
            self._listener = asyncio.create_task(self._listen(listening), name="voicebot-postgres-changes")
            await asyncio.wait_for(asyncio.shield(listening), self._connect_timeout_s)
        except BaseException as e:
            await self.close()
            if isinstance(e, (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)):
                raise StoreError(f"cannot open {self.where}: {_one_line(e)}") from None
            raise
        log.info("%s at schema version %d", self.where, self.schema_version)
        if self._recover:
            await self.recover_interrupted()

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        self._hub.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ping(self) -> None:
        async with self._connection() as db:
            await db.fetchval("SELECT 1")

    async def _migrate(self) -> int:
        """Alembic through SQLAlchemy's asyncpg dialect, one transaction under an advisory lock."""
        from voicebot.storage.migrations import preload

        await asyncio.get_running_loop().run_in_executor(None, preload, self.backend)
        from sqlalchemy.exc import SQLAlchemyError
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        from voicebot.storage.migrations import PG_MIGRATION_LOCK, upgrade

        engine = create_async_engine(self._dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
                                     poolclass=NullPool, connect_args={"timeout": self._connect_timeout_s})
        try:
            async with engine.begin() as connection:
                await connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})")
                before, after = await connection.run_sync(upgrade, self.backend, self.where)
        except SQLAlchemyError as e:
            raise StoreError(f"cannot open {self.where}: {_one_line(getattr(e, 'orig', None) or e)}") from None
        finally:
            await engine.dispose()
        if after != before:
            log.info("%s: schema upgraded from version %d to %d", self.where, before, after)
        return after

    # ------------------------------------------------------------------ calls: writes

    async def start_call(self, report: CallReport) -> None:
        now = self._now()
        async with self._transaction() as db:
            await db.execute("INSERT INTO calls (call_id, name, caller_id, engine, started_at, updated_at) "
                             "VALUES ($1, $2, $3, $4, $5, $6)", report.call_id, report.call, report.caller_id,
                             report.engine, report.started_at or R.call_stamp(now), now)
            await self._emit(db, CallChange(report.call_id, "started"))

    async def save_progress(self, call_id: str, turns: Mapping[int, Turn], latency_ms: Sequence[float]) -> None:
        rows = [R.turn_row(call_id, seq, turn) for seq, turn in turns.items()]
        async with self._transaction() as db:
            if rows:
                await db.executemany(_TURN_UPSERT, rows)
            await db.execute("UPDATE calls SET latency_ms = $1, updated_at = $2 WHERE call_id = $3",
                             json.dumps(list(latency_ms)), self._now(), call_id)
            await self._emit(db, CallChange(call_id, "progress"))

    async def save_intake(self, call_id: str, intake: IntakeForm) -> None:
        row = self._intake_row(call_id, intake)
        async with self._transaction() as db:
            await db.execute(_INTAKE_UPSERT, *row)
            await db.execute("UPDATE calls SET updated_at = $1 WHERE call_id = $2", row[6], call_id)
            await self._emit(db, CallChange(call_id, "intake"))

    async def submit_intake(self, call_id: str, intake: IntakeForm) -> str:
        now = self._now()
        async with self._transaction() as db:
            # one submission at a time per call and form, so the check below sees any earlier one
            await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{call_id}\n{intake.form}")
            done = await db.fetchval("SELECT reference FROM intakes WHERE call_id = $1 AND form = $2 "
                                     "AND status = 'submitted'", call_id, intake.form)
            if done is not None:
                return done
            number = await db.fetchval("INSERT INTO reference_numbers (call_id, issued_at) VALUES ($1, $2) "
                                       "RETURNING number", call_id, now)
            reference = R.reference(number)
            await db.execute(_INTAKE_UPSERT, call_id, intake.form, "submitted",
                             json.dumps(intake.fields, ensure_ascii=False), reference, now, now, now)
            await db.execute("UPDATE calls SET updated_at = $1 WHERE call_id = $2", now, call_id)
            await self._emit(db, CallChange(call_id, "intake"))
            return reference

    async def end_call(self, report: CallReport) -> None:
        now = self._now()
        transfer = report.transfer
        turns = [R.turn_row(report.call_id, seq, turn) for seq, turn in enumerate(report.turns)]
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO calls (call_id, name, caller_id, engine, status, outcome, transfer_reason, "
                "transfer_queue, latency_ms, started_at, ended_at, duration_s, updated_at) "
                "VALUES ($1, $2, $3, $4, 'ended', $5, $6, $7, $8, $9, $10, $11, $12) "
                "ON CONFLICT (call_id) DO UPDATE SET caller_id = excluded.caller_id, engine = excluded.engine, "
                "status = excluded.status, outcome = excluded.outcome, transfer_reason = excluded.transfer_reason, "
                "transfer_queue = excluded.transfer_queue, latency_ms = excluded.latency_ms, "
                "ended_at = excluded.ended_at, duration_s = excluded.duration_s, updated_at = excluded.updated_at",
                report.call_id, report.call, report.caller_id, report.engine, report.outcome,
                transfer.reason if transfer else None, transfer.queue if transfer else None,
                json.dumps(list(report.latency_ms)), report.started_at or R.call_stamp(now),
                report.ended_at or R.call_stamp(now), report.duration_s, now,
            )
            if turns:
                await db.executemany(_TURN_UPSERT, turns)
            await db.execute("DELETE FROM turns WHERE call_id = $1 AND seq >= $2", report.call_id, len(turns))
            if report.intake:
                await db.execute(_INTAKE_UPSERT, *self._intake_row(report.call_id, report.intake))
            await self._emit(db, CallChange(report.call_id, "ended"))

    async def recover_interrupted(self) -> int:
        async with self._transaction() as db:
            rows = await db.fetch(
                f"UPDATE calls SET status = 'interrupted', outcome = 'abandoned', ended_at = {_STAMP_SQL}, "
                "duration_s = (SELECT COALESCE(MAX(end_s), 0) FROM turns WHERE turns.call_id = calls.call_id) "
                "WHERE status = 'active' RETURNING call_id")
            for row in rows:
                await self._emit(db, CallChange(row[0], "interrupted"))
        call_ids = [r[0] for r in rows]
        return R.log_recovered(call_ids)

    async def set_recording(self, call_id: str, path: str) -> None:
        async with self._transaction() as db:
            await db.execute("UPDATE calls SET recording_path = $1 WHERE call_id = $2", path, call_id)

    # ------------------------------------------------------------------ calls: reads

    async def get_call(self, call_id: str) -> CallRecord | None:
        async with self._connection() as db:
            row = await db.fetchrow(f"SELECT {R.CALL_COLUMNS} FROM calls WHERE call_id = $1", call_id)
            if row is None:
                return None
            turns = await db.fetch(f"SELECT {R.TURN_COLUMNS} FROM turns WHERE call_id = $1 ORDER BY seq", call_id)
            intake = await db.fetchrow("SELECT form, status, fields, reference FROM intakes WHERE call_id = $1 "
                                       "ORDER BY updated_at DESC, row_no DESC LIMIT 1", call_id)
        return R.call_record(row, turns, intake)

    async def list_calls(self, limit: int = 50) -> list[CallSummary]:
        R.check_limit(limit)
        async with self._connection() as db:
            rows = await db.fetch(
                "SELECT c.call_id, c.name, c.caller_id, c.status, c.outcome, c.transfer_reason, c.transfer_queue, "
                "c.started_at, c.ended_at, c.duration_s, "
                "(SELECT COUNT(*) FROM turns t WHERE t.call_id = c.call_id), "
                "(SELECT status FROM intakes i WHERE i.call_id = c.call_id ORDER BY updated_at DESC LIMIT 1), "
                "(SELECT reference FROM intakes i WHERE i.call_id = c.call_id AND reference IS NOT NULL "
                " ORDER BY updated_at DESC LIMIT 1) "
                "FROM calls c ORDER BY c.started_at DESC, c.row_no DESC LIMIT $1", limit)
        return [CallSummary(r[0], r[1], r[2], r[3], r[4], Transfer(r[5], r[6]) if r[5] else None,
                            r[7], r[8], r[9], r[10], r[11], r[12]) for r in rows]

    async def list_applications(self, status: IntakeStatus | None = None, limit: int = 50) -> list[ApplicationRecord]:
        R.check_limit(limit)
        if status is not None and status not in INTAKE_STATUSES:
            raise ValueError(f"status must be one of {', '.join(INTAKE_STATUSES)}, not {status!r}")
        async with self._connection() as db:
            rows = await db.fetch(
                "SELECT i.call_id, c.caller_id, c.status, i.form, i.status, i.fields, i.reference, "
                "i.created_at, i.updated_at, i.submitted_at "
                "FROM intakes i JOIN calls c ON c.call_id = i.call_id "
                "WHERE $1::text IS NULL OR i.status = $1 ORDER BY i.created_at DESC, i.row_no DESC LIMIT $2",
                status, limit)
        return [ApplicationRecord(r[0], r[1], r[2], IntakeForm(r[3], r[4], json.loads(r[5]), r[6]),
                                  R.call_stamp(r[7]), R.call_stamp(r[8]), _stamp_text(r[9])) for r in rows]

    async def day_figures(self, since: datetime, until: datetime, now: datetime | None = None) -> DayFigures:
        # the calls' times are their reports' ISO text: the index narrows by text (a day's margin for
        # any UTC offset), the parsed time decides
        lo, hi = text_margin(since, until)
        async with self._connection() as db:
            calls = await db.fetch(
                "SELECT floor(extract(epoch FROM c.started_at::timestamptz - $1) / 3600)::int, c.status, c.outcome, "
                "COALESCE(c.transfer_reason, (SELECT q.reason FROM queue_entries q WHERE q.call_id = c.call_id "
                "  ORDER BY q.entry_id DESC LIMIT 1)) AS reason, COUNT(*)::int "
                "FROM calls c WHERE c.started_at >= $3 AND c.started_at < $4 "
                r"AND c.started_at ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d' "
                "AND c.started_at::timestamptz >= $1 AND c.started_at::timestamptz < $2 "
                "GROUP BY 1, 2, 3, 4", since, until, lo, hi)
            waits = await db.fetch(
                "SELECT floor(extract(epoch FROM enqueued_at - $1) / 3600)::int, state, COUNT(*)::int, "
                "COALESCE(SUM(wait_s) FILTER (WHERE state != 'waiting'), 0)::float8, "
                "COUNT(wait_s) FILTER (WHERE state != 'waiting')::int, "
                "MAX(CASE WHEN state = 'waiting' THEN GREATEST(0, extract(epoch FROM $3 - enqueued_at))::float8 "
                "    ELSE wait_s END) "
                "FROM queue_entries WHERE enqueued_at >= $1 AND enqueued_at < $2 GROUP BY 1, 2",
                since, until, now or self._now())
        return fold_figures(since, until, [CallGroup(*r) for r in calls], [WaitGroup(*r) for r in waits])

    # ------------------------------------------------------------------ the live-agent queue

    async def enqueue(self, call_id: str, queue: str, *, priority: int = 0, reason: str = "",
                      caller_id: str = "") -> QueueEntry:
        async with self._transaction() as db:
            entry = R.queue_entry(await db.fetchrow(
                "INSERT INTO queue_entries (call_id, queue, priority, reason, caller_id, enqueued_at) "
                f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {R.QUEUE_COLUMNS}",
                call_id, queue, priority, reason, caller_id, self._now()), _time)
            return await self._queue_changed(db, entry)

    async def get_queue_entry(self, entry_id: int) -> QueueEntry | None:
        async with self._connection() as db:
            row = await db.fetchrow(f"SELECT {R.QUEUE_COLUMNS} FROM queue_entries WHERE entry_id = $1", entry_id)
        return None if row is None else R.queue_entry(row, _time)

    async def queue_position(self, entry_id: int, *, default_handling_s: float = 180.0,
                             recent: int = 20) -> QueuePosition | None:
        async with self._connection() as db:
            me = await db.fetchrow("SELECT queue, priority, enqueued_at FROM queue_entries "
                                   "WHERE entry_id = $1 AND state = 'waiting'", entry_id)
            if me is None:
                return None
            queue, priority, enqueued_at = me
            position, waiting = await db.fetchrow(
                "SELECT COUNT(*) FILTER (WHERE priority > $2 OR (priority = $2 AND (enqueued_at < $3 "
                "   OR (enqueued_at = $3 AND entry_id <= $4)))), COUNT(*) "
                "FROM queue_entries WHERE queue = $1 AND state = 'waiting'", queue, priority, enqueued_at, entry_id)
            handling_s = await db.fetchval(
                "SELECT AVG(handled_s) FROM (SELECT handled_s FROM queue_entries "
                "WHERE queue = $1 AND state = 'done' AND handled_s IS NOT NULL ORDER BY ended_at DESC LIMIT $2) r",
                queue, recent)
            agents = await db.fetchval("SELECT COUNT(*) FROM agents WHERE state != 'away' AND queues @> ARRAY[$1]",
                                       queue)
        return QueuePosition(entry_id, queue, position, waiting, agents, R.estimate_wait_s(
            position, agents, default_handling_s if handling_s is None else handling_s))

    async def list_waiting(self, queue: str | None = None) -> list[QueueEntry]:
        async with self._connection() as db:
            rows = await db.fetch(
                f"SELECT {R.QUEUE_COLUMNS} FROM queue_entries WHERE state = 'waiting' "
                "AND ($1::text IS NULL OR queue = $1) "
                'ORDER BY queue COLLATE "C", priority DESC, enqueued_at, entry_id', queue)
        return [R.queue_entry(r, _time) for r in rows]

    async def list_queue(self, queue: str | None = None, states: Iterable[str] | None = None,
                         limit: int = 50) -> list[QueueEntry]:
        R.check_limit(limit)
        wanted = R.wanted_states("queue state", states, LIVE_QUEUE_STATES, QUEUE_STATES)
        async with self._connection() as db:
            rows = await db.fetch(
                f"SELECT {R.QUEUE_COLUMNS} FROM queue_entries WHERE state = ANY($1::text[]) "
                "AND ($2::text IS NULL OR queue = $2) ORDER BY enqueued_at, entry_id LIMIT $3", wanted, queue, limit)
        return [R.queue_entry(r, _time) for r in rows]

    async def take_next(self, agent: str, queues: Sequence[str]) -> QueueEntry | None:
        async with self._transaction() as db:
            # One take at a time per agent (two tabs, a double click, two processes), so the check below
            # sees a caller the other take gave them once it commits; other agents do not wait for it.
            await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"take_next\n{agent}")
            if await db.fetchval("SELECT 1 FROM queue_entries WHERE agent = $1 AND state = ANY($2::text[]) LIMIT 1",
                                 agent, list(HANDLING_STATES)) is not None:
                return None
            # SKIP LOCKED: a row another process is taking right now is passed over, not waited for.
            row = await db.fetchrow(
                "UPDATE queue_entries SET state = 'connecting', agent = $1, "
                "wait_s = EXTRACT(EPOCH FROM ($3::timestamptz - enqueued_at))::double precision "
                "WHERE entry_id = (SELECT entry_id FROM queue_entries WHERE state = 'waiting' "
                "AND queue = ANY($2::text[]) ORDER BY priority DESC, enqueued_at, entry_id "
                "LIMIT 1 FOR UPDATE SKIP LOCKED) "
                f"RETURNING {R.QUEUE_COLUMNS}", agent, list(queues), self._now())
            if row is None:
                return None
            return await self._queue_changed(db, R.queue_entry(row, _time))

    async def mark_connected(self, entry_id: int) -> QueueEntry | None:
        return await self._transition(
            entry_id, ("connecting",), "state = 'connected', connected_at = $3, "
            "wait_s = EXTRACT(EPOCH FROM ($3 - enqueued_at))::double precision", self._now())

    async def requeue(self, entry_id: int) -> QueueEntry | None:
        return await self._transition(entry_id, ("connecting",), "state = 'waiting', agent = NULL, wait_s = NULL")

    async def leave_queue(self, entry_id: int, state: Literal["abandoned", "callback"]) -> QueueEntry | None:
        R.check_choice("state", state, ("abandoned", "callback"))
        return await self._transition(
            entry_id, R.LEAVE_FROM, "state = $3, ended_at = $4, "
            "wait_s = EXTRACT(EPOCH FROM ($4 - enqueued_at))::double precision", state, self._now())

    async def finish(self, entry_id: int, note: str = "") -> QueueEntry | None:
        return await self._transition(
            entry_id, ("connected",), "state = 'done', ended_at = $3, note = $4, "
            "handled_s = EXTRACT(EPOCH FROM ($3 - connected_at))::double precision", self._now(), note)

    async def _transition(self, entry_id: int, before: Sequence[str], assignments: str,
                          *params: Any) -> QueueEntry | None:
        """Move an entry from one of ``before`` by ``assignments`` (params from $3 on); None if it was elsewhere."""
        async with self._transaction() as db:
            row = await db.fetchrow(f"UPDATE queue_entries SET {assignments} "
                                    f"WHERE entry_id = $1 AND state = ANY($2::text[]) RETURNING {R.QUEUE_COLUMNS}",
                                    entry_id, list(before), *params)
            if row is None:
                return None
            return await self._queue_changed(db, R.queue_entry(row, _time))

    async def _queue_changed(self, db: asyncpg.Connection, entry: QueueEntry) -> QueueEntry:
        await self._emit(db, QueueChange(entry.entry_id, entry.call_id, entry.queue, entry.state))
        return entry

    # ------------------------------------------------------------------ callbacks

    async def request_callback(self, call_id: str, queue: str, number: str, note: str = "") -> Callback:
        now = self._now()
        return await self._callback_write(
            "INSERT INTO callbacks (call_id, queue, number, note, created_at, updated_at) "
            f"VALUES ($1, $2, $3, $4, $5, $5) RETURNING {R.CALLBACK_COLUMNS}", call_id, queue, number, note, now)

    async def get_callback(self, callback_id: int) -> Callback | None:
        async with self._connection() as db:
            row = await db.fetchrow(f"SELECT {R.CALLBACK_COLUMNS} FROM callbacks WHERE callback_id = $1", callback_id)
        return None if row is None else R.callback(row, _time)

    async def list_callbacks(self, states: Iterable[CallbackState] | None = None, queue: str | None = None,
                             limit: int = 50) -> list[Callback]:
        R.check_limit(limit)
        wanted = R.wanted_states("callback state", states, CALLBACK_STATES, CALLBACK_STATES)
        async with self._connection() as db:
            rows = await db.fetch(
                f"SELECT {R.CALLBACK_COLUMNS} FROM callbacks WHERE state = ANY($1::text[]) "
                "AND ($2::text IS NULL OR queue = $2) ORDER BY created_at, callback_id LIMIT $3", wanted, queue, limit)
        return [R.callback(r, _time) for r in rows]

    async def claim_callback(self, callback_id: int, agent: str) -> Callback | None:
        return await self._callback_write(
            "UPDATE callbacks SET state = 'claimed', claimed_by = $1, updated_at = $2 "
            f"WHERE callback_id = $3 AND state = 'open' RETURNING {R.CALLBACK_COLUMNS}",
            agent, self._now(), callback_id)

    async def close_callback(self, callback_id: int, state: Literal["done", "failed"],
                             note: str = "") -> Callback | None:
        R.check_choice("state", state, ("done", "failed"))
        return await self._callback_write(
            "UPDATE callbacks SET state = $1, note = $2, updated_at = $3 "
            f"WHERE callback_id = $4 AND state = 'claimed' RETURNING {R.CALLBACK_COLUMNS}",
            state, note, self._now(), callback_id)

    async def _callback_write(self, sql: str, *params: Any) -> Any:
        async with self._transaction() as db:
            row = await db.fetchrow(sql, *params)
            if row is None:
                return None
            callback = R.callback(row, _time)
            await self._emit(db, CallbackChange(callback.callback_id, callback.queue, callback.state))
            return callback

    # ------------------------------------------------------------------ agents

    async def save_agent(self, name: str, sip_uri: str, queues: Sequence[str]) -> Agent:
        return await self._agent_write(
            "INSERT INTO agents (name, sip_uri, queues, state_since) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (name) DO UPDATE SET sip_uri = excluded.sip_uri, queues = excluded.queues "
            f"RETURNING {R.AGENT_COLUMNS}", name, sip_uri, list(queues), self._now())

    async def set_agent_state(self, name: str, state: AgentState) -> Agent | None:
        R.check_choice("agent state", state, AGENT_STATES)
        return await self._agent_write(
            "UPDATE agents SET state = $1, state_since = CASE WHEN state = $1 THEN state_since ELSE $2 END "
            f"WHERE name = $3 RETURNING {R.AGENT_COLUMNS}", state, self._now(), name)

    async def get_agent(self, name: str) -> Agent | None:
        async with self._connection() as db:
            row = await db.fetchrow(f"SELECT {R.AGENT_COLUMNS} FROM agents WHERE name = $1", name)
        return None if row is None else R.agent(row, _time, _queues)

    async def list_agents(self, queue: str | None = None) -> list[Agent]:
        async with self._connection() as db:
            rows = await db.fetch(f"SELECT {R.AGENT_COLUMNS} FROM agents WHERE $1::text IS NULL "
                                  'OR queues @> ARRAY[$1::text] ORDER BY name COLLATE "C"', queue)
        return [R.agent(r, _time, _queues) for r in rows]

    async def delete_agent(self, name: str) -> bool:
        async with self._transaction() as db:
            gone = await db.fetchval("DELETE FROM agents WHERE name = $1 RETURNING name", name)
            if gone is not None:
                await self._emit(db, AgentChange(name, None))
        return gone is not None

    async def _agent_write(self, sql: str, *params: Any) -> Any:
        async with self._transaction() as db:
            row = await db.fetchrow(sql, *params)
            if row is None:
                return None
            agent = R.agent(row, _time, _queues)
            await self._emit(db, AgentChange(agent.name, agent.state))
            return agent

    # ------------------------------------------------------------------ users, tokens, sessions

    async def add_user(self, user: User) -> User:
        R.check_choice("role", user.role, ROLES)
        try:
            async with self._transaction() as db:
                row = await db.fetchrow(
                    "INSERT INTO users (name, role, password_hash, created_at, disabled) VALUES ($1, $2, $3, $4, $5) "
                    f"RETURNING {R.USER_COLUMNS}", user.name, user.role, user.password_hash,
                    user.created_at or self._now(), user.disabled)
        except StoreError as e:
            if _refused(e):
                raise StoreError(f"a user named {user.name!r} already exists") from None
            raise
        return R.user(row, _time)

    async def get_user(self, name: str) -> User | None:
        async with self._connection() as db:
            row = await db.fetchrow(f"SELECT {R.USER_COLUMNS} FROM users WHERE name = $1", name)
        return None if row is None else R.user(row, _time)

    async def list_users(self) -> list[User]:
        async with self._connection() as db:
            rows = await db.fetch(f'SELECT {R.USER_COLUMNS} FROM users ORDER BY name COLLATE "C"')
        return [R.user(r, _time) for r in rows]

    async def set_password_hash(self, name: str, password_hash: str) -> bool:
        return await self._changed("UPDATE users SET password_hash = $2 WHERE name = $1", name, password_hash)

    async def set_user_disabled(self, name: str, disabled: bool) -> bool:
        return await self._changed("UPDATE users SET disabled = $2 WHERE name = $1", name, disabled)

    async def delete_user(self, name: str) -> bool:
        return await self._changed("DELETE FROM users WHERE name = $1", name)

    async def add_api_token(self, user: str, token_hash: str, label: str = "") -> ApiToken:
        try:
            async with self._transaction() as db:
                row = await db.fetchrow(
                    "INSERT INTO api_tokens (token_hash, user_name, label, created_at) VALUES ($1, $2, $3, $4) "
                    f"RETURNING {R.TOKEN_COLUMNS}", token_hash, user, label, self._now())
        except StoreError as e:
            if _refused(e):
                raise StoreError(f"no user {user!r}, or that token exists already") from None
            raise
        return R.api_token(row, _time)

    async def user_for_token(self, token_hash: str) -> User | None:
        async with self._connection() as db:
            row = await db.fetchrow(f"SELECT {_columns('u', R.USER_COLUMNS)} FROM api_tokens t "
                                    "JOIN users u ON u.name = t.user_name WHERE t.token_hash = $1 AND NOT u.disabled",
                                    token_hash)
        return None if row is None else R.user(row, _time)

    async def list_api_tokens(self, user: str) -> list[ApiToken]:
        async with self._connection() as db:
            rows = await db.fetch(f"SELECT {R.TOKEN_COLUMNS} FROM api_tokens WHERE user_name = $1 "
                                  "ORDER BY created_at", user)
        return [R.api_token(r, _time) for r in rows]

    async def revoke_api_token(self, token_hash: str) -> bool:
        return await self._changed("DELETE FROM api_tokens WHERE token_hash = $1", token_hash)

    async def save_session(self, session: LoginSession) -> None:
        try:
            async with self._transaction() as db:
                await db.execute(
                    "INSERT INTO sessions (session_hash, user_name, csrf_token, created_at, expires_at) "
                    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session_hash) DO UPDATE SET "
                    "csrf_token = excluded.csrf_token, expires_at = excluded.expires_at",
                    session.session_hash, session.user, session.csrf_token, session.created_at, session.expires_at)
        except StoreError as e:
            if _refused(e):
                raise StoreError(f"no user {session.user!r}") from None
            raise

    async def get_session(self, session_hash: str) -> tuple[LoginSession, User] | None:
        async with self._connection() as db:
            row = await db.fetchrow(
                f"SELECT {_columns('s', R.SESSION_COLUMNS)}, {_columns('u', R.USER_COLUMNS)} FROM sessions s "
                "JOIN users u ON u.name = s.user_name "
                "WHERE s.session_hash = $1 AND s.expires_at > $2 AND NOT u.disabled", session_hash, self._now())
        return None if row is None else (R.login_session(row[:5], _time), R.user(row[5:], _time))

    async def delete_session(self, session_hash: str) -> bool:
        return await self._changed("DELETE FROM sessions WHERE session_hash = $1", session_hash)

    # ------------------------------------------------------------------ audit and retention

    async def audit(self, user: str, action: str, call_id: str | None = None, detail: str = "") -> AuditEntry:
        async with self._transaction() as db:
            row = await db.fetchrow("INSERT INTO audit_log (at, user_name, action, call_id, detail) "
                                    f"VALUES ($1, $2, $3, $4, $5) RETURNING {R.AUDIT_COLUMNS}",
                                    self._now(), user, action, call_id, detail)
        return R.audit_entry(row, _time)

    async def list_audit(self, call_id: str | None = None, limit: int = 50) -> list[AuditEntry]:
        R.check_limit(limit)
        async with self._connection() as db:
            rows = await db.fetch(f"SELECT {R.AUDIT_COLUMNS} FROM audit_log WHERE $1::text IS NULL OR call_id = $1 "
                                  "ORDER BY at DESC, audit_id DESC LIMIT $2", call_id, limit)
        return [R.audit_entry(r, _time) for r in rows]

    async def apply_retention(self, days: float) -> RetentionReport:
        now = self._now()
        cutoff = R.retention_cutoff(days, now)
        async with self._transaction() as db:
            expired = await db.fetch(
                "SELECT call_id, recording_path FROM calls c WHERE status != 'active' AND updated_at < $1 AND "
                "(caller_id != '' OR recording_path IS NOT NULL OR EXISTS (SELECT 1 FROM turns t WHERE "
                "t.call_id = c.call_id) OR EXISTS (SELECT 1 FROM intakes i WHERE i.call_id = c.call_id)) "
                "ORDER BY call_id FOR UPDATE", cutoff)
            call_ids = [r[0] for r in expired]
            await db.execute("DELETE FROM turns WHERE call_id = ANY($1::text[])", call_ids)
            intakes = await db.fetchval("WITH gone AS (DELETE FROM intakes WHERE call_id = ANY($1::text[]) "
                                        "RETURNING 1) SELECT COUNT(*) FROM gone", call_ids)
            await db.execute("UPDATE calls SET caller_id = '', recording_path = NULL WHERE call_id = ANY($1::text[])",
                             call_ids)
            await db.execute("UPDATE queue_entries SET caller_id = '', note = '' WHERE ended_at < $1 "
                             "AND (caller_id != '' OR note != '')", cutoff)
            callbacks = await db.fetchval("WITH gone AS (DELETE FROM callbacks WHERE state IN ('done', 'failed') "
                                          "AND updated_at < $1 RETURNING 1) SELECT COUNT(*) FROM gone", cutoff)
            await db.execute("DELETE FROM sessions WHERE expires_at <= $1", now)
        return R.log_retention(days, RetentionReport(len(call_ids), intakes, callbacks,
                                                     tuple(r[1] for r in expired if r[1] is not None)))

    # ------------------------------------------------------------------ change feed

    def changes(self) -> ChangeFeed:
        # not this store's own changes committed before now whose notifications are still on their way
        return self._hub.feed(skip=frozenset(self._unheard))

    async def _emit(self, db: asyncpg.Connection, change: StoreChange) -> None:
        """NOTIFY in the caller's transaction: delivered to every listener (this process's too) on commit.
        The payload is "<store id>:<its change number>:<change JSON>"."""
        self._sent += 1
        self._emitted.setdefault(db, []).append(self._sent)
        await db.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{self._origin}:{self._sent}:{change_to_json(change)}")

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            origin, number, text = payload.split(":", 2)
            change = change_from_json(text)
        except (ValueError, KeyError, TypeError):
            log.warning("change feed: ignoring a notification that is not a change: %.80r", payload)
            return
        seq = None
        if origin == self._origin:
            seq = int(number)
            if seq in self._unheard:
                self._unheard.discard(seq)
            else:  # heard before its transaction's commit returned here
                self._early.add(seq)
        self._hub.publish(change, seq)

    async def _listen(self, listening: asyncio.Future) -> None:
        """Hold a LISTEN connection; when it is lost, tell readers they may have missed changes and get it back."""
        delay_s = 0.5
        while True:
            try:
                conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout_s)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
                if not listening.done():
                    listening.set_exception(e)
                    return
                log.warning("change feed: cannot reconnect to %s (%s); again in %.1f s", self.where,
                            _one_line(e), delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RELISTEN_MAX_S)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c: lost.set())
            try:
                await conn.add_listener(CHANNEL, self._on_notify)
                self._unheard.clear()  # what was sent while nobody listened is not coming
                self._early.clear()
                if listening.done():
                    log.warning("change feed: listening to %s again", self.where)
                    self._hub.publish(ChangesMissed())
                else:
                    listening.set_result(None)
                delay_s = 0.5
                await lost.wait()
                log.warning("change feed: lost the connection to %s", self.where)
                self._hub.publish(ChangesMissed())
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("change feed: %s", _one_line(e))
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))

    # ------------------------------------------------------------------ connections

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self._pool
        if pool is None:
            raise StoreError(f"{self.where} is closed")
        try:
            async with pool.acquire() as db:
                yield db
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
            raise StoreError(f"{self.where}: {_one_line(e)}") from e

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._connection() as db:
            try:
                async with db.transaction():
                    yield db
                for seq in self._emitted.get(db, ()):
                    if seq in self._early:
                        self._early.discard(seq)
                    else:
                        self._unheard.add(seq)
            finally:
                self._emitted.pop(db, None)

    async def _changed(self, sql: str, *params: Any) -> bool:
        """Run one write; whether it touched a row."""
        async with self._transaction() as db:
            status = await db.execute(sql, *params)
        return not status.endswith(" 0")

    def _intake_row(self, call_id: str, intake: IntakeForm) -> tuple:
        now = self._now()
        submitted_at = now if intake.status == "submitted" else None
        return (call_id, intake.form, intake.status, json.dumps(intake.fields, ensure_ascii=False), intake.reference,
                now, now, submitted_at)


def _refused(e: StoreError) -> bool:
    return isinstance(e.__cause__, (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError))


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
