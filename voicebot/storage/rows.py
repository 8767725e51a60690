"""What the backends share: rows to records (each passes its own way of reading a time), checks, logging."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Self, Sequence

from voicebot.calls.report import CallReport, Turn
from voicebot.events import IntakeForm, Transfer
from voicebot.storage.base import MAX_LIST_LIMIT, CallRecord
from voicebot.storage.feed import ChangeFeed, ChangeHub
from voicebot.storage.records import (
    Agent, ApiToken, AuditEntry, Callback, LoginSession, QueueEntry, QueueState, RetentionReport, User,
)

log = logging.getLogger("voicebot.storage")

#: a time column as the backend returns it -> an aware UTC datetime (or None)
TimeReader = Callable[[Any], "datetime | None"]

REFERENCE_PREFIX = "HA"

QUEUE_COLUMNS = ("entry_id, call_id, queue, priority, reason, caller_id, state, enqueued_at, agent, wait_s, "
                 "connected_at, ended_at, handled_s, note")
CALLBACK_COLUMNS = "callback_id, call_id, queue, number, state, created_at, updated_at, claimed_by, note"
AGENT_COLUMNS = "name, sip_uri, queues, state, state_since"
USER_COLUMNS = "name, role, password_hash, created_at, disabled"
TOKEN_COLUMNS = "token_hash, user_name, label, created_at"
SESSION_COLUMNS = "session_hash, user_name, csrf_token, created_at, expires_at"
AUDIT_COLUMNS = "audit_id, at, user_name, action, call_id, detail"
CALL_COLUMNS = ("call_id, name, caller_id, engine, status, outcome, transfer_reason, transfer_queue, latency_ms, "
                "started_at, ended_at, duration_s, recording_path")
TURN_COLUMNS = "speaker, text, start_s, end_s, intent, confidence, interrupted, counted"

#: the queue transitions: allowed states before -> state after
LEAVE_FROM: tuple[QueueState, ...] = ("waiting", "connecting")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def call_stamp(moment: datetime) -> str:
    """The text form of the call tables' store-made times (as schema version 1 wrote them)."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be from 1 to {MAX_LIST_LIMIT}, not {limit}")


def check_choice(what: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(map(str, allowed))}, not {value!r}")


def turn_row(call_id: str, seq: int, t: Turn) -> tuple:
    return (call_id, seq, t.speaker, t.text, t.start_s, t.end_s, t.intent, t.confidence, bool(t.interrupted),
            bool(t.counted))


def reference(number: int) -> str:
    return f"{REFERENCE_PREFIX}{number:06d}"


def call_record(row: Sequence, turns: Sequence[Sequence], intake: Sequence | None) -> CallRecord:
    (call_id, name, caller_id, engine, status, outcome, reason, queue, latency_ms, started_at, ended_at,
     duration_s, recording_path) = row
    report = CallReport(
        call=name, call_id=call_id, caller_id=caller_id, engine=engine, outcome=outcome or "abandoned",
        transfer=Transfer(reason, queue) if reason else None,
        intake=IntakeForm(intake[0], intake[1], json.loads(intake[2]), intake[3]) if intake else None,
        turns=[Turn(t[0], t[1], t[2], t[3], t[4], t[5], bool(t[6]), bool(t[7])) for t in turns],
        latency_ms=json.loads(latency_ms), started_at=started_at, ended_at=ended_at or "",
        duration_s=duration_s or 0.0,
    )
    return CallRecord(report, status, recording_path)


def queue_entry(r: Sequence, t: TimeReader) -> QueueEntry:
    return QueueEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], t(r[7]), r[8], r[9], t(r[10]), t(r[11]), r[12], r[13])


def callback(r: Sequence, t: TimeReader) -> Callback:
    return Callback(r[0], r[1], r[2], r[3], r[4], t(r[5]), t(r[6]), r[7], r[8])


def agent(r: Sequence, t: TimeReader, queues: Callable[[Any], Sequence[str]]) -> Agent:
    return Agent(r[0], r[1], tuple(queues(r[2])), r[3], t(r[4]))


def user(r: Sequence, t: TimeReader) -> User:
    return User(r[0], r[1], r[2], t(r[3]), bool(r[4]))


def api_token(r: Sequence, t: TimeReader) -> ApiToken:
    return ApiToken(r[0], r[1], r[2], t(r[3]))


def login_session(r: Sequence, t: TimeReader) -> LoginSession:
    return LoginSession(r[0], r[1], r[2], t(r[3]), t(r[4]))


def audit_entry(r: Sequence, t: TimeReader) -> AuditEntry:
    return AuditEntry(r[0], t(r[1]), r[2], r[3], r[4], r[5])


def estimate_wait_s(position: int, agents: int, handling_s: float) -> float | None:
    """Position x average handling time, shared among the agents serving the queue; unknown with none."""
    if agents <= 0:
        return None
    return position * handling_s / agents


def wanted_states(what: str, states: Iterable[str] | None, default: Sequence[str],
                  allowed: Sequence[str]) -> list[str]:
    """The states a listing asks for (``default`` when None), each checked."""
    wanted = list(default if states is None else states)
    for state in wanted:
        check_choice(what, state, allowed)
    return wanted


def retention_cutoff(days: float, now: datetime) -> datetime:
    if days <= 0:
        raise ValueError(f"retention must be a positive number of days, not {days}")
    return now - timedelta(days=days)


def log_retention(days: float, report: RetentionReport) -> RetentionReport:
    log.info("retention (%g days): personal data of %d call(s), %d intake(s), %d callback(s) deleted",
             days, report.calls, report.intakes, report.callbacks)
    return report


def log_recovered(call_ids: Sequence[str]) -> int:
    if call_ids:
        log.warning("%d call(s) left open by an earlier crash marked interrupted: %s",
                    len(call_ids), ", ".join(call_ids))
    return len(call_ids)


class StoreBase:
    """What every backend does alike: ``async with`` opens and closes, ``changes()`` reads its hub."""

    _hub: ChangeHub

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def changes(self) -> ChangeFeed:
        return self._hub.feed()
