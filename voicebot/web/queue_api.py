"""Replayed calls in a running service's queue: the routes ``voicebot replay --server URL`` uses, and its client.

The replay runs the bot itself (recognizer, synthesizer, dialogue) and keeps the
service informed over HTTP, so testers and supervisors see a replayed call in
the dashboard as they would a live one: its record as it goes (transcript,
intents, the form; through the service's own StoreRecorder) and its place in
the queue (joining, where it stands, an agent taking it or not being reached,
a callback, hanging up).

Supervisors only, by API token (``Authorization: Bearer ...``; ``voicebot users
token``). The replay only ever touches the calls it reported itself: queue routes
name the call and the entry, and the two must belong together.

Wire format: JSON; a call is ``CallReport.to_json()`` with each turn's ``counted`` added.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import asdict
from typing import Any, AsyncIterator, NoReturn

import aiohttp
from aiohttp import web

from voicebot.calls.queue import AgentTook, Gone, QueueError, QueueStatus, StoreQueue, Waiting
from voicebot.calls.report import CallReport, Turn
from voicebot.dialogue.validators import Parsed, validate_phone_number
from voicebot.errors import VoicebotError
from voicebot.events import IntakeForm, Transfer
from voicebot.storage.base import CallStore
from voicebot.storage.recorder import StoreRecorder
from voicebot.web.auth import current_user, roles

log = logging.getLogger("voicebot.web.queue")

#: the service's record keeper for replayed calls (without metrics: replays are not the service's calls)
REPLAY_RECORDER = web.AppKey("replay_recorder", StoreRecorder)
REPLAY_QUEUE = web.AppKey("replay_queue", StoreQueue)
REPORT_EVENTS = ("started", "progress", "ended")
QUEUE_OUTCOMES = ("connected", "abandoned", "callback", "back_in_line")
#: how often a replay asks whether an agent took its call
POLL_INTERVAL_S = 1.0
#: a request to the service may take this long
REQUEST_TIMEOUT_S = 15.0


def add_queue_routes(app: web.Application, store: CallStore) -> None:
    """Register the replay routes on the service's app (``store`` is the app's store)."""
    app[REPLAY_RECORDER] = StoreRecorder(store)
    app[REPLAY_QUEUE] = StoreQueue(store)
    app.add_routes([
        web.get("/api/replays", whoami),
        web.put("/api/replays/{call_id}", report_call),
        web.post("/api/replays/{call_id}/intake", save_intake),
        web.post("/api/replays/{call_id}/queue", join_queue),
        web.get("/api/replays/{call_id}/queue/{entry_id}", queue_status),
        web.post("/api/replays/{call_id}/queue/{entry_id}/{outcome}", leave_queue),
    ])


# ---------------------------------------------------------------------- the service's side


@roles("supervisor")
async def whoami(request: web.Request) -> web.Response:
    """Lets a replay check the URL and its token before it starts."""
    return web.json_response({"user": current_user(request).name})


@roles("supervisor")
async def report_call(request: web.Request) -> web.Response:
    """The call's record: ``started`` once, ``progress`` as turns come, ``ended`` with the final report."""
    body = await _body(request)
    event = body.get("event")
    if event not in REPORT_EVENTS:
        _fail(web.HTTPBadRequest, f"event must be one of {', '.join(REPORT_EVENTS)}")
    report = _report(request, body)
    recorder = request.app[REPLAY_RECORDER]
    if event == "started":
        report.caller_id = report.caller_id or "replay"
        await recorder.call_started(report)
        log.info("replayed call %s (%s) reported by %s", report.call_id, report.call, current_user(request).name)
    elif event == "progress" and report.turns:
        await recorder.turn_added(report, report.turns[-1])
    elif event == "ended":
        await recorder.call_ended(report)
    return web.json_response({"call_id": report.call_id})


@roles("supervisor")
async def save_intake(request: web.Request) -> web.Response:
    body = await _body(request)
    report = _report(request, body)
    try:
        intake = IntakeForm(**body["intake"])
    except (KeyError, TypeError) as e:
        _fail(web.HTTPBadRequest, f"intake: {e}")
    recorder = request.app[REPLAY_RECORDER]
    if body.get("submit"):
        return web.json_response({"reference": await recorder.submit_intake(report, intake)})
    await recorder.intake_saved(report, intake)
    return web.json_response({"reference": None})


@roles("supervisor")
async def join_queue(request: web.Request) -> web.Response:
    body = await _body(request)
    report = _report(request, body)
    queue, reason, priority = body.get("queue"), body.get("reason"), body.get("priority", 0)
    if not isinstance(queue, str) or not queue or not isinstance(reason, str) or not isinstance(priority, int):
        _fail(web.HTTPBadRequest, "queue and reason (text) and priority (a whole number) are needed")
    entry_id = await _queue_call(request.app[REPLAY_QUEUE].join(report, queue, priority=priority, reason=reason))
    return web.json_response({"entry_id": entry_id}, status=201)


@roles("supervisor")
async def queue_status(request: web.Request) -> web.Response:
    entry_id = await _entry_of_call(request)
    return web.json_response(status_to_json(await _queue_call(request.app[REPLAY_QUEUE].status(entry_id))))


@roles("supervisor")
async def leave_queue(request: web.Request) -> web.Response:
    entry_id = await _entry_of_call(request)
    outcome = request.match_info["outcome"]
    queue = request.app[REPLAY_QUEUE]
    if outcome == "connected":
        await _queue_call(queue.connected(entry_id))
    elif outcome == "abandoned":
        await _queue_call(queue.leave(entry_id))
    elif outcome == "back_in_line":
        await _queue_call(queue.back_in_line(entry_id))
    elif outcome == "callback":
        number = (await _body(request)).get("number")
        if not isinstance(number, str) or not isinstance(validate_phone_number(number), Parsed):
            _fail(web.HTTPBadRequest, "number must be 5 to 15 digits, optionally after a '+'")
        await _queue_call(queue.callback(entry_id, number))
    else:
        _fail(web.HTTPNotFound, f"outcome must be one of {', '.join(QUEUE_OUTCOMES)}")
    return web.json_response({"entry_id": entry_id, "outcome": outcome})


async def _entry_of_call(request: web.Request) -> int:
    """The entry the path names, which must be the named call's: a replay touches only its own calls."""
    try:
        entry_id = int(request.match_info["entry_id"])
    except ValueError:
        _fail(web.HTTPNotFound, "no such queue entry")
    entry = await request.app[REPLAY_QUEUE].entry(entry_id)
    if entry is None or entry.call_id != request.match_info["call_id"]:
        _fail(web.HTTPNotFound, f"call {request.match_info['call_id']!r} has no queue entry {entry_id}")
    return entry_id


async def _body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        _fail(web.HTTPBadRequest, "the body must be a JSON object")
    return body


def _report(request: web.Request, body: dict) -> CallReport:
    try:
        report = report_from_json(body["call"])
    except (KeyError, TypeError, ValueError) as e:
        _fail(web.HTTPBadRequest, f"call: not a call report ({e.__class__.__name__}: {e})")
    if report.call_id != request.match_info["call_id"]:
        _fail(web.HTTPBadRequest, "the report's call_id differs from the path's")
    return report


async def _queue_call(step: Any) -> Any:
    try:
        return await step
    except QueueError as e:
        _fail(web.HTTPServiceUnavailable, str(e))


def _fail(error: type[web.HTTPException], message: str) -> NoReturn:
    raise error(text=json.dumps({"error": message}), content_type="application/json")


# ---------------------------------------------------------------------- wire format


def report_to_json(report: CallReport) -> dict:
    data = report.to_json()
    for turn_json, turn in zip(data["turns"], report.turns):
        turn_json["counted"] = turn.counted
    return data


def report_from_json(data: dict) -> CallReport:
    transfer = data.get("transfer")
    intake = data.get("intake")
    return CallReport(
        call=str(data["call"]), call_id=str(data["call_id"]), caller_id=str(data.get("caller_id") or ""),
        engine=str(data.get("engine") or ""), outcome=data.get("outcome") or "abandoned",
        transfer=Transfer(**transfer) if transfer else None, intake=IntakeForm(**intake) if intake else None,
        turns=[Turn(speaker=t["speaker"], text=str(t["text"]), start_s=float(t["start_s"]), end_s=float(t["end_s"]),
                    intent=t.get("intent"), confidence=float(t.get("confidence", 0.0)),
                    interrupted=bool(t.get("interrupted", False)), counted=bool(t.get("counted", True)))
               for t in data.get("turns", [])],
        latency_ms=[float(x) for x in data.get("latency_ms", [])], started_at=str(data.get("started_at") or ""),
        ended_at=str(data.get("ended_at") or ""), duration_s=float(data.get("duration_s") or 0.0),
    )


def status_to_json(status: QueueStatus) -> dict:
    if isinstance(status, Waiting):
        return {"state": "waiting", "position": status.position, "estimated_wait_s": status.estimated_wait_s}
    if isinstance(status, AgentTook):
        return {"state": "connecting", "agent": status.agent, "sip_uri": status.sip_uri}
    return {"state": status.state}


def status_from_json(data: dict) -> QueueStatus:
    if data["state"] == "waiting":
        wait_s = data.get("estimated_wait_s")
        return Waiting(int(data["position"]), None if wait_s is None else float(wait_s))
    if data["state"] == "connecting" and data.get("sip_uri"):
        return AgentTook(str(data["agent"]), str(data["sip_uri"]))
    return Gone(str(data["state"]))


# ---------------------------------------------------------------------- the replay's side


class ServiceError(VoicebotError):
    """The service is unreachable, refused the token, or answered with an error (one line)."""


class ServiceLink:
    """A replay's connection to a running service: a call recorder and a queue backend over its HTTP API."""

    def __init__(self, base_url: str, token: str, http: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._headers = {"Authorization": f"Bearer {token}"}
        self.recorder = ServiceRecorder(self)
        self.queue = ServiceQueue(self)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, base_url: str, token: str) -> AsyncIterator[ServiceLink]:
        """Connect and check the URL and token at once, so a wrong one fails before any call is replayed."""
        if not token:
            raise ServiceError("--server needs an API token: --token or VOICEBOT_API_TOKEN (voicebot users token)")
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            link = cls(base_url, token, http)
            who = await link.request("GET", "/api/replays")
            log.info("replaying into %s as %s", link.base_url, who.get("user"))
            yield link

    async def request(self, method: str, path: str, body: dict | None = None) -> dict:
        url = self.base_url + path
        try:
            async with self._http.request(method, url, json=body, headers=self._headers) as response:
                text = await response.text()
                if response.status >= 400:
                    raise ServiceError(f"{method} {url}: {response.status} {_error_of(text) or response.reason}")
                return json.loads(text) if text else {}
        except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as e:
            raise ServiceError(f"{method} {url}: {e.__class__.__name__}: {e}") from None


def _error_of(text: str) -> str:
    try:
        return str(json.loads(text).get("error", ""))
    except (json.JSONDecodeError, AttributeError):
        return text[:200]


class ServiceRecorder:
    """CallRecorder: the replayed call's record goes to the service's store as it happens."""

    def __init__(self, link: ServiceLink) -> None:
        self._link = link

    async def call_started(self, report: CallReport) -> None:
        await self._put(report, "started")

    async def turn_added(self, report: CallReport, turn: Turn) -> None:
        await self._put(report, "progress")

    async def intake_saved(self, report: CallReport, intake: IntakeForm) -> None:
        await self._intake(report, intake, submit=False)

    async def submit_intake(self, report: CallReport, intake: IntakeForm) -> str:
        return str(await self._intake(report, intake, submit=True))

    async def call_ended(self, report: CallReport) -> None:
        await self._put(report, "ended")

    async def _put(self, report: CallReport, event: str) -> None:
        await self._link.request("PUT", f"/api/replays/{report.call_id}",
                                 {"event": event, "call": report_to_json(report)})

    async def _intake(self, report: CallReport, intake: IntakeForm, *, submit: bool) -> str | None:
        answer = await self._link.request("POST", f"/api/replays/{report.call_id}/intake", {
            "call": report_to_json(report), "intake": asdict(intake), "submit": submit})
        return answer.get("reference")


class ServiceQueue:
    """QueueBackend: the service's queue, for a replayed call."""

    def __init__(self, link: ServiceLink) -> None:
        self._link = link
        #: entry id -> call id, for the paths
        self._calls: dict[int, str] = {}

    async def join(self, report: CallReport, queue: str, *, priority: int, reason: str) -> int:
        answer = await self._queue("POST", f"/api/replays/{report.call_id}/queue", {
            "call": report_to_json(report), "queue": queue, "priority": priority, "reason": reason})
        entry_id = int(answer["entry_id"])
        self._calls[entry_id] = report.call_id
        return entry_id

    async def status(self, entry_id: int) -> QueueStatus:
        return status_from_json(await self._queue("GET", self._path(entry_id)))

    async def connected(self, entry_id: int) -> None:
        await self._queue("POST", f"{self._path(entry_id)}/connected")

    async def leave(self, entry_id: int) -> None:
        await self._queue("POST", f"{self._path(entry_id)}/abandoned")
        self._calls.pop(entry_id, None)

    async def back_in_line(self, entry_id: int) -> None:
        await self._queue("POST", f"{self._path(entry_id)}/back_in_line")

    async def callback(self, entry_id: int, number: str) -> None:
        await self._queue("POST", f"{self._path(entry_id)}/callback", {"number": number})
        self._calls.pop(entry_id, None)

    async def watch(self, entry_id: int) -> AsyncIterator[None]:
        """The service's change feed does not reach a replay: ask every POLL_INTERVAL_S instead."""
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            yield None

    def _path(self, entry_id: int) -> str:
        call_id = self._calls.get(entry_id)
        if call_id is None:
            raise QueueError(f"queue entry {entry_id} was not joined through this link")
        return f"/api/replays/{call_id}/queue/{entry_id}"

    async def _queue(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            return await self._link.request(method, path, body)
        except ServiceError as e:
            raise QueueError(str(e)) from None
