"""The supervisors' dashboard: the queue, the bot's calls as they happen, agents, callbacks, applications and
today's figures, live in the browser.

``GET /dashboard`` is a server-rendered page; its script (``dashboard.js``, no
build step) opens ``/dashboard/ws``, a WebSocket that sends a snapshot of every
section and then each section again whenever the store's change feed says it
changed. The feed reaches every process sharing the database (PostgreSQL
NOTIFY, SQLite's change log), so the page shows what any service process does.
Messages carry a section's HTML (rendered here, escaped) and its data (masked).

One ``Dashboard`` per app reads the feed (started and stopped with the app
through ``cleanup_ctx``) and marks what a change touches; one builder reloads
what is marked and sends it to every open socket. Changes that arrive while it
reloads are gathered into the next round, so a burst costs one reload, not one
per change. A browser that falls behind gets a fresh snapshot instead of the
backlog. Each socket re-checks its login every ``recheck_s`` and is closed
(code 4401) once the login is gone; the page then reloads into the login form.

Also: an application's detail page, ``GET /api/dashboard`` (the snapshot's data,
for programs), ``GET /api/dashboard/figures?day=YYYY-MM-DD`` and the application
exports ``GET /api/applications/export.csv|json``. Supervisors only; personal
data masked everywhere (voicebot.web.dashboard_views).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from html import escape
from importlib import resources
from string import Template
from typing import AsyncIterator, Callable, Iterable, NoReturn

from aiohttp import WSCloseCode, WSMsgType, web

from voicebot.storage.base import INTAKE_STATUSES, MAX_LIST_LIMIT, ApplicationRecord, CallStore, StoreError
from voicebot.storage.figures import DayFigures, day_window
from voicebot.storage.records import (
    LIVE_QUEUE_STATES, AgentChange, CallbackChange, CallChange, QueueChange, StoreChange,
)
from voicebot.storage.rows import utc_now
from voicebot.web.auth import AUTH, current_user, roles
from voicebot.web.dashboard_views import (
    AgentRow, ApplicationView, CallbackRow, CallView, applications_csv, queue_rows, render_agents,
    render_application, render_applications, render_call, render_callbacks, render_calls, render_figures,
    render_queue,
)
from voicebot.web.pages import logout_form, message_page

log = logging.getLogger("voicebot.web.dashboard")

SECTIONS = ("figures", "queue", "calls", "agents", "callbacks", "applications")
#: the WebSocket close code for "your login is gone": the page reloads (into the login form)
CLOSE_LOGIN_GONE = 4401
STATIC_FILES = {"dashboard.js": "application/javascript", "dashboard.css": "text/css"}
#: the dashboard's pages run only their own script and open sockets only to their own site
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
#: a call's change that touches more than its own card
_CALL_EVENTS_FOR_FIGURES = ("started", "ended", "interrupted")


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    #: the day's time zone for "today" and the clock times shown; None: this machine's
    tz: tzinfo | None = None
    now: Callable[[], datetime] = utc_now
    #: how often an open socket checks that its login still holds
    recheck_s: float = 30.0
    #: how often the figures are recomputed while nothing changes (waits grow, hours turn)
    figures_refresh_s: float = 60.0
    #: messages a browser may fall behind before it gets a fresh snapshot instead
    client_backlog: int = 64
    #: the last turns of each active call shown
    transcript_turns: int = 12
    #: rows shown at most in the queue (with context) and the lists
    queue_rows: int = 200
    applications: int = 50
    callbacks: int = 200
    #: a browser that does not answer pings for this long is dropped
    heartbeat_s: float = 30.0
    #: after a store error the builder tries again this much later
    retry_s: float = 2.0

    def zone(self) -> tzinfo:
        """``tz``, else this machine's offset from UTC now (so a daylight-saving change is followed)."""
        return self.tz or datetime.now().astimezone().tzinfo  # type: ignore[return-value]


# ---------------------------------------------------------------------- one browser


#: in a socket's outbox: send a fresh snapshot
RESYNC = object()


@dataclass(eq=False)
class Client:
    """One open socket: what is still to be sent to it."""

    ws: web.WebSocketResponse
    backlog: int
    outbox: asyncio.Queue = field(init=False)

    def __post_init__(self) -> None:
        self.outbox = asyncio.Queue(self.backlog)
        self.outbox.put_nowait(RESYNC)  # a snapshot first

    def offer(self, text: str) -> None:
        try:
            self.outbox.put_nowait(text)
        except asyncio.QueueFull:  # too far behind: drop the backlog, send a snapshot instead
            while not self.outbox.empty():
                self.outbox.get_nowait()
            self.outbox.put_nowait(RESYNC)


# ---------------------------------------------------------------------- the live side


class Dashboard:
    """Loads the dashboard's sections from the store and keeps every open socket up to date."""

    def __init__(self, store: CallStore, settings: DashboardSettings | None = None) -> None:
        self.store = store
        self.settings = settings or DashboardSettings()
        self.clients: set[Client] = set()
        self._dirty: set[str] = set()
        self._dirty_calls: set[str] = set()
        self._wake = asyncio.Event()
        #: calls in the queue at the last look (their progress changes the queue's context)
        self._queued_calls: set[str] = set()
        self.static: dict[str, bytes] = {}

    @property
    def tz(self) -> tzinfo:
        return self.settings.zone()

    # ------------------------------------------------------------------ lifetime

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self.static = await asyncio.to_thread(_read_static)
        self._wake = asyncio.Event()
        feed = self.store.changes()
        tasks = [asyncio.create_task(self._read_changes(feed), name="dashboard-changes"),
                 asyncio.create_task(self._build_loop(), name="dashboard-builder")]
        try:
            yield
        finally:
            await feed.aclose()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close_sockets(self) -> None:
        """Say goodbye to every browser (the service is stopping); they reconnect to whichever process is up."""
        clients, self.clients = list(self.clients), set()
        await asyncio.gather(*(c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"service stopping")
                               for c in clients), return_exceptions=True)

    # ------------------------------------------------------------------ changes -> what to reload

    async def _read_changes(self, feed: AsyncIterator[StoreChange]) -> None:
        async for change in feed:
            self.mark(change)

    def mark(self, change: StoreChange) -> None:
        """What ``change`` touches is reloaded in the builder's next round."""
        if isinstance(change, QueueChange):
            self._dirty.update(("queue", "figures", "agents"))
        elif isinstance(change, CallbackChange):
            self._dirty.add("callbacks")
        elif isinstance(change, AgentChange):
            self._dirty.add("agents")
        elif isinstance(change, CallChange):
            self._dirty_calls.add(change.call_id)
            if change.event in _CALL_EVENTS_FOR_FIGURES:
                self._dirty.add("figures")
            if change.event in ("intake", "ended", "interrupted"):
                self._dirty.add("applications")
            if change.call_id in self._queued_calls:
                self._dirty.add("queue")
        else:  # ChangesMissed: anything may have changed
            self._dirty.update(SECTIONS)
        self._wake.set()

    async def _build_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.settings.figures_refresh_s):
                    await self._wake.wait()
            except TimeoutError:
                self._dirty.add("figures")
            self._wake.clear()
            sections, calls = self._dirty, self._dirty_calls
            self._dirty, self._dirty_calls = set(), set()
            if not self.clients:
                continue  # nobody to tell; a browser that connects gets a snapshot
            try:
                messages = await self.updates(sections, calls)
            except StoreError as e:
                log.warning("dashboard: %s; trying again in %g s", e, self.settings.retry_s)
                self._dirty |= sections
                self._dirty_calls |= calls
                await asyncio.sleep(self.settings.retry_s)
                self._wake.set()
                continue
            for message in messages:
                text = json.dumps(message)
                for client in list(self.clients):
                    client.offer(text)

    # ------------------------------------------------------------------ loading

    async def updates(self, sections: Iterable[str], calls: Iterable[str]) -> list[dict]:
        """The messages for the sections and active calls that changed."""
        now = self.settings.now()
        out = [{"type": "section", "name": name, "now": now.isoformat(), **await self.section(name, now)}
               for name in SECTIONS if name in set(sections)]
        for call_id in sorted(set(calls)):
            out.append({"type": "call", "call_id": call_id, "now": now.isoformat(), **await self.call(call_id)})
        return out

    async def snapshot(self) -> dict:
        now = self.settings.now()
        return {"type": "snapshot", "now": now.isoformat(),
                "sections": {name: await self.section(name, now) for name in SECTIONS}}

    async def section(self, name: str, now: datetime) -> dict:
        """``{"html": ..., "data": ...}`` of one section."""
        s = self.settings
        if name == "figures":
            figures = await self.figures(now.astimezone(self.tz).date(), now)
            return {"html": render_figures(figures, self.tz), "data": figures.to_json()}
        if name == "queue":
            entries = await self.store.list_queue(None, states=LIVE_QUEUE_STATES, limit=MAX_LIST_LIMIT)
            waiting = await self.store.list_waiting()
            self._queued_calls = {e.call_id for e in entries}
            shown = entries[:s.queue_rows]
            records = {}
            for entry in shown:
                record = await self.store.get_call(entry.call_id)
                if record is not None:
                    records[entry.call_id] = record
            rows = queue_rows(shown, waiting, records, now)
            return {"html": render_queue(rows), "data": [r.to_json() for r in rows]}
        if name == "calls":
            views = await self.active_calls()
            return {"html": render_calls(views, self.tz), "data": [v.to_json() for v in views]}
        if name == "agents":
            handling = {e.agent: e.call_id for e in await self.store.list_queue(
                None, states=("connecting", "connected"), limit=MAX_LIST_LIMIT) if e.agent}
            rows = [AgentRow.of(a, handling) for a in await self.store.list_agents()]
            return {"html": render_agents(rows, self.tz), "data": [r.to_json() for r in rows]}
        if name == "callbacks":
            rows = [CallbackRow.of(c) for c in await self.store.list_callbacks(("open", "claimed"),
                                                                                limit=s.callbacks)]
            return {"html": render_callbacks(rows, self.tz), "data": [r.to_json() for r in rows]}
        if name == "applications":
            views = [ApplicationView.of(a) for a in await self.store.list_applications(None, s.applications)]
            return {"html": render_applications(views, self.tz), "data": [v.to_json() for v in views]}
        raise ValueError(f"no dashboard section {name!r}")

    async def call(self, call_id: str) -> dict:
        """An active call's card, or ``None`` for both when the call is over (the page drops its card)."""
        record = await self.store.get_call(call_id)
        if record is None or record.status != "active":
            return {"html": None, "data": None}
        view = CallView.of(record, self.settings.transcript_turns)
        return {"html": render_call(view, self.tz), "data": view.to_json()}

    async def active_calls(self) -> list[CallView]:
        views = []
        for summary in await self.store.list_calls(MAX_LIST_LIMIT):
            if summary.status != "active":
                continue
            record = await self.store.get_call(summary.call_id)
            if record is not None and record.status == "active":
                views.append(CallView.of(record, self.settings.transcript_turns))
        return views

    async def figures(self, day: date, now: datetime | None = None) -> DayFigures:
        since, until = day_window(day, self.tz)
        return await self.store.day_figures(since, until, now or self.settings.now())


DASHBOARD = web.AppKey("dashboard", Dashboard)


def add_dashboard(app: web.Application, store: CallStore) -> None:
    """The dashboard's routes and live side on the service's app. A test may put its own ``Dashboard``
    (a clock, a time zone) in ``app[DASHBOARD]`` before the app starts."""
    app[DASHBOARD] = Dashboard(store)
    app.cleanup_ctx.append(_lifetime)
    app.on_shutdown.append(_close_sockets)
    app.add_routes([
        web.get("/dashboard", page),
        web.get("/dashboard/ws", websocket),
        web.get("/dashboard/static/{name}", static_file),
        web.get("/dashboard/applications/{call_id}", application_page),
        web.get("/api/dashboard", snapshot_json),
        web.get("/api/dashboard/figures", figures_json),
        web.get("/api/applications/export.csv", export_csv),
        web.get("/api/applications/export.json", export_json),
        web.get("/api/applications/{call_id}", application_json),
    ])


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    async with app[DASHBOARD].running():
        yield


async def _close_sockets(app: web.Application) -> None:
    await app[DASHBOARD].close_sockets()


def _read_static() -> dict[str, bytes]:
    folder = resources.files("voicebot.web") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_FILES}


# ---------------------------------------------------------------------- pages

_PAGE = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title · voicebot</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/dashboard/static/dashboard.css">
$script</head>
<body data-live="$live">
<header class="top"><strong>voicebot</strong> supervisors' dashboard
<span class="live" id="live-status" role="status">$live_text</span>
<span class="user">$user</span>$logout</header>
<main>
$body
</main>
</body></html>
""")

_SECTION = Template("""<section id="$name" aria-labelledby="$name-title"><h2 id="$name-title">$title</h2>
<div class="body" data-section="$name">$html</div></section>""")

_TITLES = {"figures": "Today", "queue": "Queue", "calls": "Calls with the bot", "agents": "Agents",
           "callbacks": "Callbacks", "applications": "Applications"}


def _page(request: web.Request, title: str, body: str, *, live: bool, status: int = 200) -> web.Response:
    user = current_user(request)
    text = _PAGE.substitute(
        title=escape(title), body=body, user=f"{escape(user.name)} ({escape(user.role)})", logout=logout_form(request),
        script='<script src="/dashboard/static/dashboard.js" defer></script>' if live else "",
        live="connecting" if live else "static", live_text="connecting…" if live else "")
    response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = CSP
    return response


@roles("supervisor")
async def page(request: web.Request) -> web.Response:
    snapshot = await request.app[DASHBOARD].snapshot()
    body = "\n".join(_SECTION.substitute(name=name, title=escape(_TITLES[name]), html=snapshot["sections"][name]["html"])
                     for name in SECTIONS)
    return _page(request, "Dashboard", f'<div class="grid">{body}</div>', live=True)


@roles("supervisor")
async def application_page(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    found = await _application(request)
    if found is None:
        return message_page(404, "No application for that call.")
    view, call = found
    return _page(request, f"Application {view.reference or ''}".strip(),
                 render_application(view, call, dashboard.tz), live=False)


@roles("supervisor")
async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = request.app[DASHBOARD].static.get(name)
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(body=body, content_type=STATIC_FILES[name], charset="utf-8")


# ---------------------------------------------------------------------- the socket


@roles("supervisor")
async def websocket(request: web.Request) -> web.StreamResponse:
    """Snapshot first, then updates. The browser sends nothing; reading only answers pings and closes."""
    dashboard = request.app[DASHBOARD]
    ws = web.WebSocketResponse(heartbeat=dashboard.settings.heartbeat_s, max_msg_size=4096)
    if not ws.can_prepare(request).ok:
        raise web.HTTPBadRequest(text=json.dumps({"error": "this is a WebSocket"}), content_type="application/json")
    await ws.prepare(request)
    client = Client(ws, dashboard.settings.client_backlog)
    dashboard.clients.add(client)
    sender = asyncio.create_task(_send(request, dashboard, client), name="dashboard-socket")
    try:
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        dashboard.clients.discard(client)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await ws.close()
    return ws


async def _send(request: web.Request, dashboard: Dashboard, client: Client) -> None:
    try:
        await _send_loop(request, dashboard, client)
    except Exception:  # noqa: BLE001 - a socket that gets nothing more must not stay open looking live
        log.exception("dashboard socket failed")
        await client.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")


async def _send_loop(request: web.Request, dashboard: Dashboard, client: Client) -> None:
    ws = client.ws
    auth = request.app[AUTH]
    while not ws.closed:
        try:
            async with asyncio.timeout(dashboard.settings.recheck_s):
                item = await client.outbox.get()
        except TimeoutError:
            user = await auth.from_request(request)
            if user is None or not user.is_supervisor:
                log.info("dashboard socket of %s closed: the login is gone", current_user(request).name)
                await ws.close(code=CLOSE_LOGIN_GONE, message=b"login gone")
                return
            continue
        try:
            text = json.dumps(await dashboard.snapshot()) if item is RESYNC else item
            await ws.send_str(text)
        except StoreError as e:
            log.warning("dashboard: %s", e)
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"store unavailable")
            return
        except ConnectionResetError:
            return


# ---------------------------------------------------------------------- JSON and exports


@roles("supervisor")
async def snapshot_json(request: web.Request) -> web.Response:
    snapshot = await request.app[DASHBOARD].snapshot()
    return web.json_response({"now": snapshot["now"],
                              **{name: s["data"] for name, s in snapshot["sections"].items()}})


@roles("supervisor")
async def figures_json(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    raw = request.query.get("day")
    try:
        day = date.fromisoformat(raw) if raw else dashboard.settings.now().astimezone(dashboard.tz).date()
    except ValueError:
        _fail(web.HTTPBadRequest, f"day must be a date as YYYY-MM-DD, not {raw!r}")
    return web.json_response((await dashboard.figures(day)).to_json())


@roles("supervisor")
async def export_csv(request: web.Request) -> web.Response:
    views = await _export(request)
    return web.Response(text=applications_csv(views), content_type="text/csv", charset="utf-8",
                        headers=_attachment(request, "csv"))


@roles("supervisor")
async def export_json(request: web.Request) -> web.Response:
    views = await _export(request)
    dashboard = request.app[DASHBOARD]
    body = {"exported_at": dashboard.settings.now().isoformat(), "status": request.query.get("status"),
            "applications": [v.to_json() for v in views]}
    return web.json_response(body, headers=_attachment(request, "json"))


@roles("supervisor")
async def application_json(request: web.Request) -> web.Response:
    found = await _application(request)
    if found is None:
        _fail(web.HTTPNotFound, f"no application for call {request.match_info['call_id']!r}")
    view, call = found
    return web.json_response({**view.to_json(), "turns": [t.to_json() for t in call.turns] if call else []})


async def _export(request: web.Request) -> list[ApplicationView]:
    status = request.query.get("status") or None
    if status is not None and status not in INTAKE_STATUSES:
        _fail(web.HTTPBadRequest, f"status must be one of {', '.join(INTAKE_STATUSES)}, not {status!r}")
    records = await request.app[DASHBOARD].store.list_applications(status, MAX_LIST_LIMIT)  # type: ignore[arg-type]
    return [ApplicationView.of(r) for r in records]


async def _application(request: web.Request) -> tuple[ApplicationView, CallView | None] | None:
    """The newest application of the path's call, and the call's whole transcript."""
    dashboard = request.app[DASHBOARD]
    call_id = request.match_info["call_id"]
    record = await dashboard.store.get_call(call_id)
    if record is None or record.report.intake is None:
        return None
    intake = record.report.intake
    application = next((a for a in await dashboard.store.list_applications(None, MAX_LIST_LIMIT)
                        if a.call_id == call_id and a.intake.form == intake.form), None)
    if application is None:  # older than the newest MAX_LIST_LIMIT: its times are the call's
        application = ApplicationRecord(call_id, record.report.caller_id, record.status, intake,
                                        record.report.started_at, record.report.ended_at or record.report.started_at,
                                        None)
    return ApplicationView.of(application), CallView.of(record, len(record.report.turns))


def _attachment(request: web.Request, extension: str) -> dict[str, str]:
    dashboard = request.app[DASHBOARD]
    day = dashboard.settings.now().astimezone(dashboard.tz).strftime("%Y%m%d")
    status = request.query.get("status")
    name = f"applications-{status + '-' if status else ''}{day}.{extension}"
    return {"Content-Disposition": f'attachment; filename="{name}"'}


def _fail(error: type[web.HTTPException], message: str) -> NoReturn:
    raise error(text=json.dumps({"error": message}), content_type="application/json")
