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
from typing import Literal, Mapping, Protocol, Sequence

from voicebot.calls.report import CallReport, Turn
from voicebot.errors import VoicebotError
from voicebot.events import IntakeForm, IntakeStatus, Outcome, Transfer

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

    def to_json(self) -> dict:
        data = self.report.to_json()
        if self.status == "active":
            data["outcome"] = None
        data["status"] = self.status
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
