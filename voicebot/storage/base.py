"""The call store's interface, the same for every database behind it.

A call is written while it happens: ``start_call`` when it is answered,
``save_progress`` whenever turns are added or change, ``save_intake`` after every
filled field, ``submit_intake`` to get a reference number, ``end_call`` with the
final report. A call that never reached ``end_call`` (the process was killed)
is found by ``recover_interrupted`` at the next start: its status becomes
``interrupted``, its outcome ``abandoned`` and its intake stays ``incomplete``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Iterable, Literal, Mapping, Protocol, Sequence

from voicebot.calls.report import CallReport, Turn
from voicebot.errors import VoicebotError
from voicebot.events import IntakeForm, IntakeStatus, Outcome, Transfer
from voicebot.storage.feed import ChangeFeed
from voicebot.storage.figures import DayFigures
from voicebot.storage.records import (
    Agent, AgentState, ApiToken, AuditEntry, Callback, CallbackState, LoginSession, QueueEntry, QueuePosition,
    RetentionReport, User,
)

#: active: in progress; ended: ended normally; interrupted: left open by a crash
CallStatus = Literal["active", "ended", "interrupted"]
CALL_STATUSES: tuple[CallStatus, ...] = ("active", "ended", "interrupted")
INTAKE_STATUSES: tuple[IntakeStatus, ...] = ("submitted", "incomplete")
#: the most rows one listing returns
MAX_LIST_LIMIT = 500


class StoreError(VoicebotError):
    """The store cannot be opened or does not answer (one line)."""


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A stored call: the replay report plus where the call stands."""

    report: CallReport
    status: CallStatus
    #: the call's recording file, when one was made (and retention has not removed it)
    recording_path: str | None = None

    def to_json(self) -> dict:
        data = self.report.to_json()
        if self.status == "active":
            data["outcome"] = None
        data["status"] = self.status
        if self.recording_path is not None:
            data["recording_path"] = self.recording_path
        return data


@dataclass(frozen=True, slots=True)
class CallSummary:
    """One line of the call list."""

    call_id: str
    call: str
    caller_id: str
    status: CallStatus
    outcome: Outcome | None
    transfer: Transfer | None
    started_at: str
    ended_at: str | None
    duration_s: float | None
    turn_count: int
    intake_status: IntakeStatus | None
    reference: str | None

    def to_json(self) -> dict:
        data = asdict(self)
        if self.duration_s is not None:
            data["duration_s"] = round(self.duration_s, 3)
        return data


@dataclass(frozen=True, slots=True)
class ApplicationRecord:
    """A stored intake form with the call it came from."""

    call_id: str
    caller_id: str
    call_status: CallStatus
    intake: IntakeForm
    created_at: str
    updated_at: str
    submitted_at: str | None

    def to_json(self) -> dict:
        return {
            "call_id": self.call_id, "caller_id": self.caller_id, "call_status": self.call_status,
            **asdict(self.intake),
            "created_at": self.created_at, "updated_at": self.updated_at, "submitted_at": self.submitted_at,
        }


class CallStore(Protocol):
    async def open(self) -> None:
        """Connect, bring the schema up to date, and (by default) recover interrupted calls."""

    async def close(self) -> None: ...

    async def __aenter__(self) -> "CallStore":
        """Open; ``async with`` closes on the way out."""

    async def __aexit__(self, *exc: object) -> None: ...

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""

    async def start_call(self, report: CallReport) -> None: ...

    async def save_progress(self, call_id: str, turns: Mapping[int, Turn], latency_ms: Sequence[float]) -> None:
        """Insert or replace the turns at the given positions (0 = first turn of the call)."""

    async def save_intake(self, call_id: str, intake: IntakeForm) -> None:
        """Insert or update the call's form; a submitted form is never turned back to incomplete."""

    async def submit_intake(self, call_id: str, intake: IntakeForm) -> str:
        """Store the form as submitted under a new reference number, unique for the store's life."""

    async def end_call(self, report: CallReport) -> None:
        """Write the final report: every turn, the intake, outcome, transfer, latencies, times."""

    async def recover_interrupted(self) -> int:
        """Mark every call still active as interrupted; returns how many."""

    async def get_call(self, call_id: str) -> CallRecord | None: ...

    async def list_calls(self, limit: int = 50) -> list[CallSummary]:
        """Newest first."""

    async def list_applications(self, status: IntakeStatus | None = None, limit: int = 50) -> list[ApplicationRecord]:
        """Intakes, newest first, optionally only those with ``status``."""

    async def set_recording(self, call_id: str, path: str) -> None:
        """Remember where the call's recording is (retention hands the path back for deletion)."""

    async def day_figures(self, since: datetime, until: datetime, now: datetime | None = None) -> DayFigures:
        """Calls, containment, transfers, abandons and waits of the calls started and the callers queued in
        ``[since, until)``, per hour too (voicebot.storage.figures); ``now`` (default: the store's clock)
        ends the waits still going on."""

    # ------------------------------------------------------------------ the live-agent queue

    async def enqueue(self, call_id: str, queue: str, *, priority: int = 0, reason: str = "",
                      caller_id: str = "") -> QueueEntry:
        """Put a transferred call at the end of its priority's line in ``queue``."""

    async def get_queue_entry(self, entry_id: int) -> QueueEntry | None: ...

    async def queue_position(self, entry_id: int, *, default_handling_s: float = 180.0,
                             recent: int = 20) -> QueuePosition | None:
        """Where a waiting entry stands (None unless waiting). The estimate averages the handling
        times of the queue's last ``recent`` handled calls (``default_handling_s`` before there are any)."""

    async def list_waiting(self, queue: str | None = None) -> list[QueueEntry]:
        """Waiting entries in the order they will be served (per queue: index + 1 is the position)."""

    async def list_queue(self, queue: str | None = None, states: Iterable[str] | None = None,
                         limit: int = 50) -> list[QueueEntry]:
        """Entries in ``states`` (default: callers still on the line), oldest first."""

    async def take_next(self, agent: str, queues: Sequence[str]) -> QueueEntry | None:
        """Atomically hand the first waiting caller of ``queues`` to ``agent`` (state ``connecting``).
        Never gives one caller to two agents, nor a second caller to an agent who has one connecting or
        connected (None then, as when nobody waits), whatever the number of processes sharing the database."""

    async def mark_connected(self, entry_id: int) -> QueueEntry | None:
        """connecting -> connected (the agent answered); None if the entry was not connecting."""

    async def requeue(self, entry_id: int) -> QueueEntry | None:
        """connecting -> waiting at the caller's old place (the agent did not answer)."""

    async def leave_queue(self, entry_id: int, state: Literal["abandoned", "callback"]) -> QueueEntry | None:
        """A waiting or connecting caller hung up (abandoned) or asked for a callback; wait_s is set."""

    async def finish(self, entry_id: int, note: str = "") -> QueueEntry | None:
        """connected -> done with the agent's note; handled_s feeds the wait estimate."""

    # ------------------------------------------------------------------ callbacks

    async def request_callback(self, call_id: str, queue: str, number: str, note: str = "") -> Callback: ...

    async def get_callback(self, callback_id: int) -> Callback | None: ...

    async def list_callbacks(self, states: Iterable[CallbackState] | None = None, queue: str | None = None,
                             limit: int = 50) -> list[Callback]:
        """Oldest first, so the longest waiting are called back first."""

    async def claim_callback(self, callback_id: int, agent: str) -> Callback | None:
        """open -> claimed by ``agent``; None if someone else was first."""

    async def close_callback(self, callback_id: int, state: Literal["done", "failed"],
                             note: str = "") -> Callback | None:
        """claimed -> done or failed."""

    # ------------------------------------------------------------------ agents

    async def save_agent(self, name: str, sip_uri: str, queues: Sequence[str]) -> Agent:
        """Create or update an agent's address and queues; a new agent starts away, an existing one keeps its state."""

    async def set_agent_state(self, name: str, state: AgentState) -> Agent | None: ...

    async def get_agent(self, name: str) -> Agent | None: ...

    async def list_agents(self, queue: str | None = None) -> list[Agent]:
        """By name; with ``queue`` only those serving it."""

    async def delete_agent(self, name: str) -> bool: ...

    # ------------------------------------------------------------------ users, tokens, sessions

    async def add_user(self, user: User) -> User:
        """Raises StoreError if the name is taken."""

    async def get_user(self, name: str) -> User | None: ...

    async def list_users(self) -> list[User]: ...

    async def set_password_hash(self, name: str, password_hash: str) -> bool: ...

    async def set_user_disabled(self, name: str, disabled: bool) -> bool: ...

    async def delete_user(self, name: str) -> bool:
        """Also removes the user's tokens and sessions."""

    async def add_api_token(self, user: str, token_hash: str, label: str = "") -> ApiToken: ...

    async def user_for_token(self, token_hash: str) -> User | None:
        """The (enabled) user an API token belongs to."""

    async def list_api_tokens(self, user: str) -> list[ApiToken]: ...

    async def revoke_api_token(self, token_hash: str) -> bool: ...

    async def save_session(self, session: LoginSession) -> None: ...

    async def get_session(self, session_hash: str) -> tuple[LoginSession, User] | None:
        """An unexpired session of an enabled user."""

    async def delete_session(self, session_hash: str) -> bool: ...

    # ------------------------------------------------------------------ audit and retention

    async def audit(self, user: str, action: str, call_id: str | None = None, detail: str = "") -> AuditEntry: ...

    async def list_audit(self, call_id: str | None = None, limit: int = 50) -> list[AuditEntry]:
        """Newest first."""

    async def apply_retention(self, days: float) -> RetentionReport:
        """Delete the transcripts, caller numbers, recording paths and intake data of calls last written
        more than ``days`` ago (calls in progress are never touched), closed callbacks as old, and
        expired sessions. Call rows stay, without personal data, for the statistics; so does the audit log."""

    # ------------------------------------------------------------------ change feed

    def changes(self) -> ChangeFeed:
        """Every queue, callback, agent and call change from now on, from every process sharing the database."""
