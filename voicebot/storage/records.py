"""What the store keeps for the live-agent queue, agents, logins and the audit log.

The same frozen dataclasses come out of every backend. Times are timezone-aware
UTC ``datetime``s (microseconds kept) so waits can be computed without parsing;
``to_json`` renders them as ISO 8601.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar, Literal, Union

#: waiting: in line; connecting: an agent took it and is being rung; connected: talking to the agent;
#: abandoned: hung up before reaching an agent; callback: left the line asking to be called back;
#: done: the agent marked it handled
QueueState = Literal["waiting", "connecting", "connected", "abandoned", "callback", "done"]
QUEUE_STATES: tuple[QueueState, ...] = ("waiting", "connecting", "connected", "abandoned", "callback", "done")
#: the states of a caller still on the line
LIVE_QUEUE_STATES: tuple[QueueState, ...] = ("waiting", "connecting", "connected")
#: the states of a caller an agent has in hand (being rung, or talking): one at a time per agent
HANDLING_STATES: tuple[QueueState, ...] = ("connecting", "connected")

CallbackState = Literal["open", "claimed", "done", "failed"]
CALLBACK_STATES: tuple[CallbackState, ...] = ("open", "claimed", "done", "failed")

AgentState = Literal["available", "away", "busy"]
AGENT_STATES: tuple[AgentState, ...] = ("available", "away", "busy")

Role = Literal["supervisor", "agent"]
ROLES: tuple[Role, ...] = ("supervisor", "agent")

#: the default queue when a transfer names none
DEFAULT_QUEUE = "general"


def _json(obj: Any) -> dict:
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, float):
            value = round(value, 3)
        out[f.name] = value
    return out


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One transferred call's place in a named queue, from enqueue until it is handled or gone."""

    entry_id: int
    call_id: str
    queue: str
    #: higher is served first; equal priorities are served in enqueue order
    priority: int
    #: the transfer reason (not_understood, complex_case, asked_for_agent, ...)
    reason: str
    caller_id: str
    state: QueueState
    enqueued_at: datetime
    #: the agent who took it (set from ``connecting`` on)
    agent: str | None = None
    #: seconds from enqueue until an agent took it, or until the caller left; None while waiting
    wait_s: float | None = None
    connected_at: datetime | None = None
    ended_at: datetime | None = None
    #: seconds the agent spent on it (connected until done): the estimated wait is made of these
    handled_s: float | None = None
    #: the agent's note when marking it done
    note: str = ""

    def to_json(self) -> dict:
        return _json(self)


@dataclass(frozen=True, slots=True)
class QueuePosition:
    """Where a waiting caller stands, for the hold announcement."""

    entry_id: int
    queue: str
    #: 1 = next to be served
    position: int
    #: callers waiting in this queue, this one included
    waiting: int
    #: agents serving this queue who are not away
    agents: int
    #: position x average recent handling time / agents; None while no agent serves the queue
    estimated_wait_s: float | None

    def to_json(self) -> dict:
        return _json(self)


@dataclass(frozen=True, slots=True)
class Callback:
    """A caller's request to be called back, worked by agents."""

    callback_id: int
    call_id: str
    queue: str
    #: the number to call, as confirmed by the caller
    number: str
    state: CallbackState
    created_at: datetime
    updated_at: datetime
    claimed_by: str | None = None
    note: str = ""

    def to_json(self) -> dict:
        return _json(self)


@dataclass(frozen=True, slots=True)
class Agent:
    """A person who takes transferred calls at ``sip_uri``; an agent login has the same name."""

    name: str
    sip_uri: str
    queues: tuple[str, ...]
    state: AgentState = "away"
    #: when ``state`` last changed
    state_since: datetime | None = None

    def to_json(self) -> dict:
        return _json(self)


@dataclass(frozen=True, slots=True)
class User:
    """A login. Only the argon2 hash of the password is stored, never the password."""

    name: str
    role: Role
    password_hash: str
    created_at: datetime | None = None
    disabled: bool = False

    def to_json(self) -> dict:
        """Without the hash: nothing that leaves the service needs it."""
        data = _json(self)
        del data["password_hash"]
        return data


@dataclass(frozen=True, slots=True)
class ApiToken:
    """An API token for ``/api/*``: the store holds only a hash of the token (sha256 hex, say)."""

    token_hash: str
    user: str
    label: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LoginSession:
    """A browser login; in the store so every service process knows it and it survives a restart.

    ``session_hash`` is a hash of the cookie's value, so a copy of the database
    cannot be used to log in; the CSRF token is sent to the page anyway.
    """

    session_hash: str
    user: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who did what to whose personal data, and when (e.g. opened an unmasked identity code)."""

    audit_id: int
    at: datetime
    user: str
    #: e.g. "unmask_personal_id"
    action: str
    call_id: str | None
    detail: str = ""

    def to_json(self) -> dict:
        return _json(self)


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention pass removed."""

    #: calls whose transcript (turns), caller number and recording path were removed
    calls: int
    #: intake forms deleted
    intakes: int
    #: closed callbacks deleted (they hold a phone number)
    callbacks: int
    #: recording files the service should now delete from disk (the store keeps no files)
    recording_paths: tuple[str, ...]


# ---------------------------------------------------------------------- change feed


@dataclass(frozen=True, slots=True)
class QueueChange:
    """A queue entry was added or changed state."""

    kind: ClassVar[str] = "queue"
    entry_id: int
    call_id: str
    queue: str
    state: QueueState


@dataclass(frozen=True, slots=True)
class CallbackChange:
    kind: ClassVar[str] = "callback"
    callback_id: int
    queue: str
    state: CallbackState


@dataclass(frozen=True, slots=True)
class AgentChange:
    """An agent was added, changed or removed (``state`` None when removed)."""

    kind: ClassVar[str] = "agent"
    name: str
    state: AgentState | None


#: started: answered; progress: turns added or changed; intake: its form saved or submitted;
#: ended: its final report written; interrupted: found left open by a crash
CallEvent = Literal["started", "progress", "intake", "ended", "interrupted"]


@dataclass(frozen=True, slots=True)
class CallChange:
    """A call's record changed (so a dashboard can show the transcript as it happens)."""

    kind: ClassVar[str] = "call"
    call_id: str
    event: CallEvent


@dataclass(frozen=True, slots=True)
class ChangesMissed:
    """The feed may have lost changes (a lost database connection, a slow reader): reload everything."""

    kind: ClassVar[str] = "missed"


StoreChange = Union[QueueChange, CallbackChange, AgentChange, CallChange, ChangesMissed]
_CHANGE_TYPES: dict[str, type] = {t.kind: t for t in (QueueChange, CallbackChange, AgentChange, CallChange,
                                                      ChangesMissed)}


def change_to_json(change: StoreChange) -> str:
    """One line of JSON, as it travels between processes (NOTIFY payload, SQLite change log)."""
    return json.dumps({"kind": change.kind, **{f.name: getattr(change, f.name) for f in fields(change)}})


def change_from_json(text: str) -> StoreChange:
    data = json.loads(text)
    return _CHANGE_TYPES[data.pop("kind")](**data)
