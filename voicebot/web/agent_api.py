"""The agents' side of the queue over HTTP: who is waiting, the callbacks, and an agent's own desk.

For integrations and for the agent view (voicebot.web.agent_pages):

- ``GET /api/queue``: entries with position, wait_s, reason, call id and queue (``?state=``
  waiting by default, any queue states comma-separated; ``?queue=``; ``?limit=``)
- ``GET /api/callbacks``: callback requests (``?state=`` open,claimed by default; ``?queue=``)
- ``GET /api/agent``: an agent's desk: their state, the caller in hand, the next caller with
  what the bot learned (transfer reason, transcript, intents, the partly filled form)
- ``POST /api/agent/state`` ``{"state": "available"|"away"}``
- ``POST /api/queue/next``: accept the next caller of one's queues (the call worker holding
  that caller connects it to the agent's SIP URI, by REFER or bridge as configured)
- ``POST /api/queue/{entry_id}/done`` ``{"note": "..."}``
- ``POST /api/callbacks/{id}/claim``, ``.../done``, ``.../failed`` ``{"note": "..."}``

Role-aware: an agent sees and works the queues they serve (their agents row); a
supervisor sees every queue and takes no calls. Every answer is masked (mask_json):
the identity code is opened only by the agent handling the caller, through
``POST /api/calls/{id}/personal-id``, which the audit log records.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Awaitable, Callable, Iterable, Sequence

from aiohttp import web

from voicebot.privacy import mask_json
from voicebot.storage.base import MAX_LIST_LIMIT, CallRecord, CallStore
from voicebot.storage.records import (
    CALLBACK_STATES, HANDLING_STATES, QUEUE_STATES, Agent, AgentState, Callback, CallbackState, QueueEntry, QueueState,
)
from voicebot.web.auth import AUTH, Principal, current_user, roles

log = logging.getLogger("voicebot.web.agents")

DESK_STORE = web.AppKey("desk_store", CallStore)
#: None when callers may be connected to an agent's SIP URI, else why not (one line); ``voicebot serve`` sets
#: it from ``[sip.transfer] agent_domains``, so an agent whose phone the service may not call takes no caller
AGENT_URI_CHECK = web.AppKey("agent_uri_check", Callable[[str], "str | None"])

#: what an agent sets by hand ("busy" comes with a caller and goes when it is marked done)
SETTABLE_STATES: tuple[AgentState, ...] = ("available", "away")
DEFAULT_CALLBACK_STATES: tuple[CallbackState, ...] = ("open", "claimed")
CLOSED_CALLBACK_STATES = ("done", "failed")
MAX_NOTE_CHARS = 2000
DEFAULT_LIMIT = 50


class DeskRefusal(Exception):
    """What an agent asked cannot be done: an HTTP status and one line that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class QueueView:
    """A queue entry as agents see it now."""

    entry: QueueEntry
    #: 1 = next in its queue; None unless waiting
    position: int | None
    #: seconds waited so far while waiting, the recorded wait once out of line
    wait_s: float

    def to_json(self) -> dict:
        return {**self.entry.to_json(), "position": self.position, "wait_s": round(self.wait_s, 1)}


@dataclass(frozen=True, slots=True)
class CallerContext:
    """What the bot learned of a caller, for the agent about to take the call or holding it."""

    view: QueueView
    #: the call as stored so far (None if the store has no record of it, e.g. removed by retention)
    record: CallRecord | None

    def to_json(self) -> dict:
        report = self.record.report if self.record is not None else None
        return {
            **self.view.to_json(),
            "started_at": report.started_at if report else None,
            "transcript": [t.to_json() for t in report.turns] if report else [],
            "intents": report.intents if report else [],
            "form": asdict(report.intake) if report and report.intake else None,
        }


@dataclass(frozen=True, slots=True)
class Desk:
    """An agent's view of their work."""

    agent: Agent
    #: the caller this agent took: being connected to their phone, or talking with them
    current: CallerContext | None
    #: the caller accepting would give them now
    next: CallerContext | None
    #: callers waiting in the agent's queues
    waiting: int

    def to_json(self) -> dict:
        return {"agent": self.agent.to_json(), "current": self.current.to_json() if self.current else None,
                "next": self.next.to_json() if self.next else None, "waiting": self.waiting}


def any_sip_uri(uri: str) -> str | None:
    """The check when nothing narrower is configured: a sip: or sips: URI."""
    return None if uri.lower().startswith(("sip:", "sips:")) else f"{uri!r} is not a sip: URI"


def add_agent_api_routes(app: web.Application, store: CallStore) -> None:
    app[DESK_STORE] = store
    app[AGENT_URI_CHECK] = any_sip_uri
    app.add_routes([
        web.get("/api/queue", get_queue),
        web.post("/api/queue/next", accept_next),
        web.post("/api/queue/{entry_id}/done", mark_done),
        web.get("/api/callbacks", get_callbacks),
        web.post("/api/callbacks/{callback_id}/{action}", work_callback),
        web.get("/api/agent", get_desk),
        web.post("/api/agent/state", set_state),
    ])


def web_now(request: web.Request) -> datetime:
    """The web side's clock (the one sessions expire by; tests move it)."""
    return request.app[AUTH].now()


# ---------------------------------------------------------------------- what agents see


async def queue_views(store: CallStore, user: Principal, now: datetime, *,
                      states: Sequence[QueueState] = ("waiting",), queue: str | None = None,
                      limit: int = DEFAULT_LIMIT) -> list[QueueView]:
    """Entries of the queues ``user`` sees: waiting ones in the order an agent serving all of them would take
    them (priority, then arrival), then the others in ``states`` oldest first."""
    views: list[QueueView] = []
    if "waiting" in states:
        positions: dict[str, int] = {}
        for entry in await store.list_waiting(queue):
            positions[entry.queue] = positions.get(entry.queue, 0) + 1
            if user.serves(entry.queue):
                views.append(QueueView(entry, positions[entry.queue],
                                       max(0.0, (now - entry.enqueued_at).total_seconds())))
        views.sort(key=lambda v: (-v.entry.priority, v.entry.enqueued_at, v.entry.entry_id))
    others = [s for s in states if s != "waiting"]
    if others:
        views += [QueueView(e, None, e.wait_s or 0.0)
                  for e in await store.list_queue(queue, states=others, limit=MAX_LIST_LIMIT) if user.serves(e.queue)]
    return views[:limit]


async def callbacks_for(store: CallStore, user: Principal, *, states: Sequence[CallbackState] = DEFAULT_CALLBACK_STATES,
                        queue: str | None = None, limit: int = DEFAULT_LIMIT) -> list[Callback]:
    """Callback requests of the queues ``user`` sees, oldest first."""
    found = await store.list_callbacks(states, queue, MAX_LIST_LIMIT)
    return [c for c in found if user.serves(c.queue)][:limit]


async def in_hand(store: CallStore, name: str) -> QueueEntry | None:
    """The caller agent ``name`` took and is being connected to or talking with."""
    entries = await store.list_queue(None, states=HANDLING_STATES, limit=MAX_LIST_LIMIT)
    return next((e for e in entries if e.agent == name), None)


async def context_of(store: CallStore, view: QueueView) -> CallerContext:
    return CallerContext(view, await store.get_call(view.entry.call_id))


async def desk_of(store: CallStore, user: Principal, now: datetime) -> Desk:
    agent = await _agent(store, user)
    current = None
    entry = await in_hand(store, agent.name)
    if entry is not None:
        current = await context_of(store, QueueView(entry, None, entry.wait_s or 0.0))
    waiting = await queue_views(store, user, now, limit=MAX_LIST_LIMIT)
    following = await context_of(store, waiting[0]) if waiting else None
    return Desk(agent, current, following, len(waiting))


# ---------------------------------------------------------------------- what agents do


async def set_agent_state(store: CallStore, user: Principal, state: object) -> Agent:
    if state not in SETTABLE_STATES:
        raise DeskRefusal(400, f"state must be one of {', '.join(SETTABLE_STATES)}")
    agent = await _agent(store, user)
    changed = await store.set_agent_state(agent.name, state)  # type: ignore[arg-type]
    if changed is None:
        raise DeskRefusal(404, f"agent {agent.name} is gone")
    log.info("agent %s is %s", agent.name, state)
    return changed


async def accept(store: CallStore, user: Principal, uri_check: Callable[[str], str | None]) -> CallerContext:
    """Take the next caller of the agent's queues; the call worker holding it connects it to the agent's phone."""
    agent = await _agent(store, user)
    if not agent.sip_uri:
        raise DeskRefusal(409, f"agent {agent.name} has no SIP URI to connect callers to (set with voicebot users add"
                               " --sip-uri)")
    problem = uri_check(agent.sip_uri)
    if problem is not None:
        raise DeskRefusal(409, f"callers cannot be connected to {agent.name}'s phone: {problem}")
    # the store refuses a second caller in the same transaction that would take it (two tabs, a double click)
    entry = await store.take_next(agent.name, agent.queues)
    if entry is None:
        if await in_hand(store, agent.name) is not None:
            raise DeskRefusal(409, "you already have a caller: mark it done first")
        raise DeskRefusal(409, "no caller is waiting in your queues")
    await store.set_agent_state(agent.name, "busy")
    log.info("agent %s took call %s from queue %s (entry %d) after %.0f s", agent.name, entry.call_id, entry.queue,
             entry.entry_id, entry.wait_s or 0.0)
    return await context_of(store, QueueView(entry, None, entry.wait_s or 0.0))


async def finish(store: CallStore, user: Principal, entry_id: int, note: object) -> QueueEntry:
    """The agent is done with their caller; they are available again."""
    text = _note(note)
    agent = await _agent(store, user)
    entry = await store.get_queue_entry(entry_id)
    if entry is None or entry.agent != agent.name:
        raise DeskRefusal(404, f"you have no caller with queue entry {entry_id}")
    if entry.state != "connected":
        why = "is still being connected to your phone" if entry.state == "connecting" else f"is {entry.state}"
        raise DeskRefusal(409, f"the caller of queue entry {entry_id} {why}")
    done = await store.finish(entry_id, text)
    if done is None:
        raise DeskRefusal(409, f"queue entry {entry_id} changed meanwhile")
    if agent.state == "busy":
        await store.set_agent_state(agent.name, "available")
    log.info("agent %s is done with call %s (entry %d)", agent.name, done.call_id, entry_id)
    return done


async def claim(store: CallStore, user: Principal, callback_id: int) -> Callback:
    agent = await _agent(store, user)
    callback = await _callback(store, user, callback_id)
    claimed = await store.claim_callback(callback_id, agent.name)
    if claimed is None:
        taken = await store.get_callback(callback_id) or callback
        by = f" by {taken.claimed_by}" if taken.claimed_by else ""
        raise DeskRefusal(409, f"callback {callback_id} is already {taken.state}{by}")
    log.info("agent %s claimed callback %d", agent.name, callback_id)
    return claimed


async def close(store: CallStore, user: Principal, callback_id: int, state: CallbackState, note: object) -> Callback:
    """The agent who claimed the callback marks it done or failed."""
    text = _note(note)
    agent = await _agent(store, user)
    callback = await _callback(store, user, callback_id)
    if callback.state != "claimed" or callback.claimed_by != agent.name:
        raise DeskRefusal(409, f"callback {callback_id} is {callback.state}"
                               f"{f' by {callback.claimed_by}' if callback.claimed_by else ''}, not claimed by you")
    closed = await store.close_callback(callback_id, state, text)  # type: ignore[arg-type]
    if closed is None:
        raise DeskRefusal(409, f"callback {callback_id} changed meanwhile")
    log.info("agent %s marked callback %d %s", agent.name, callback_id, state)
    return closed


async def _agent(store: CallStore, user: Principal) -> Agent:
    if user.role != "agent":
        raise DeskRefusal(403, "this needs the agent role")
    agent = await store.get_agent(user.name)
    if agent is None:
        raise DeskRefusal(409, f"{user.name} has no agent entry (SIP URI, queues)")
    return agent


async def _callback(store: CallStore, user: Principal, callback_id: int) -> Callback:
    callback = await store.get_callback(callback_id)
    if callback is None or not user.serves(callback.queue):
        raise DeskRefusal(404, f"no callback {callback_id} in your queues")
    return callback


def _note(note: object) -> str:
    if note is None:
        return ""
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise DeskRefusal(400, f"note must be text of at most {MAX_NOTE_CHARS} characters")
    return note.strip()


# ---------------------------------------------------------------------- JSON handlers


def _refusals_as_json(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except DeskRefusal as e:
            return web.json_response({"error": e.message}, status=e.status)

    return answer


def _masked(data: dict, status: int = 200) -> web.Response:
    return web.json_response(mask_json(data), status=status)


@_refusals_as_json
async def get_queue(request: web.Request) -> web.Response:
    states = _states(request, QUEUE_STATES, ("waiting",))
    views = await queue_views(request.app[DESK_STORE], current_user(request), web_now(request), states=states,
                              queue=request.query.get("queue") or None, limit=_limit(request))
    return _masked({"entries": [v.to_json() for v in views], "states": list(states)})


@_refusals_as_json
async def get_callbacks(request: web.Request) -> web.Response:
    states = _states(request, CALLBACK_STATES, DEFAULT_CALLBACK_STATES)
    found = await callbacks_for(request.app[DESK_STORE], current_user(request), states=states,
                                queue=request.query.get("queue") or None, limit=_limit(request))
    return _masked({"callbacks": [c.to_json() for c in found], "states": list(states)})


@roles("agent")
@_refusals_as_json
async def get_desk(request: web.Request) -> web.Response:
    desk = await desk_of(request.app[DESK_STORE], current_user(request), web_now(request))
    return _masked(desk.to_json())


@roles("agent")
@_refusals_as_json
async def set_state(request: web.Request) -> web.Response:
    agent = await set_agent_state(request.app[DESK_STORE], current_user(request), (await _body(request)).get("state"))
    return _masked({"agent": agent.to_json()})


@roles("agent")
@_refusals_as_json
async def accept_next(request: web.Request) -> web.Response:
    taken = await accept(request.app[DESK_STORE], current_user(request), request.app[AGENT_URI_CHECK])
    return _masked({"entry": taken.to_json()})


@roles("agent")
@_refusals_as_json
async def mark_done(request: web.Request) -> web.Response:
    body = await _body(request)
    done = await finish(request.app[DESK_STORE], current_user(request), _int(request, "entry_id"), body.get("note"))
    return _masked({"entry": done.to_json()})


@roles("agent")
@_refusals_as_json
async def work_callback(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    store, user, callback_id = request.app[DESK_STORE], current_user(request), _int(request, "callback_id")
    if action == "claim":
        callback = await claim(store, user, callback_id)
    elif action in CLOSED_CALLBACK_STATES:
        callback = await close(store, user, callback_id, action, (await _body(request)).get("note"))  # type: ignore[arg-type]
    else:
        raise DeskRefusal(404, "a callback is claimed, done or failed")
    return _masked({"callback": callback.to_json()})


# ---------------------------------------------------------------------- request parts


def _states(request: web.Request, known: Iterable[str], default: Sequence[str]) -> tuple:
    raw = request.query.get("state")
    if not raw:
        return tuple(default)
    states = tuple(dict.fromkeys(s.strip() for s in raw.split(",") if s.strip()))
    unknown = [s for s in states if s not in known]
    if unknown or not states:
        raise DeskRefusal(400, f"state must be one or more of {', '.join(known)} (comma-separated)")
    return states


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST_LIMIT:
        raise DeskRefusal(400, f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}")
    return int(raw)


def _int(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit():
        raise DeskRefusal(404, f"no {name.replace('_', ' ')} {raw!r}")
    return int(raw)


async def _body(request: web.Request) -> dict:
    """A JSON object, or nothing at all (an empty object)."""
    if not request.body_exists:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise DeskRefusal(400, "the body must be a JSON object")
    return body
