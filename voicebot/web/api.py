"""The service's HTTP API: calls, applications, the audit log, health and Prometheus metrics.

Every ``/api/*`` route needs a login (voicebot.web.auth): a supervisor sees every
call and application; an agent sees the calls of the queues they serve. Personal
identity codes are masked in every answer (voicebot.privacy.mask_json); the agent
handling a caller opens the code through ``POST /api/calls/{id}/personal-id``,
which the audit log records. ``/healthz`` is open to all, ``/metrics`` to this
machine (a login from elsewhere).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Callable, NoReturn

from aiohttp import web

from voicebot.events import Transfer
from voicebot.metrics import CallMetrics
from voicebot.privacy import mask_json, personal_ids
from voicebot.retention import retention_context
from voicebot.storage.base import INTAKE_STATUSES, MAX_LIST_LIMIT, CallStore, StoreError
from voicebot.storage.records import DEFAULT_QUEUE, HANDLING_STATES, LIVE_QUEUE_STATES, QueueEntry
from voicebot.web.auth import (
    Auth, Principal, auth_middleware, current_user, public, public_on_loopback, roles, setup_auth,
)
from voicebot.web.agent_pages import add_agent_routes
from voicebot.web.dashboard import add_dashboard
from voicebot.web.pages import add_page_routes
from voicebot.web.queue_api import add_queue_routes

if TYPE_CHECKING:
    from voicebot.config import RetentionSettings

log = logging.getLogger("voicebot.web")

STORE = web.AppKey("store", CallStore)
METRICS = web.AppKey("metrics", CallMetrics)
HEALTH_TIMEOUT_S = web.AppKey("health_timeout_s", float)
#: what else must be up for the service to be healthy: a one-line problem, or None when all is well
HEALTH_CHECK = web.AppKey("health_check", Callable[[], "str | None"])

DEFAULT_LIMIT = 50
#: the audit log's action for opening a personal identity code, and for being refused it
UNMASK_ACTION = "unmask_personal_id"
UNMASK_REFUSED_ACTION = "unmask_personal_id_refused"


def make_app(store: CallStore, metrics: CallMetrics, *, owns_store: bool = False,
             health_timeout_s: float = 2.0, health_check: Callable[[], str | None] | None = None,
             auth: Auth | None = None, retention: "RetentionSettings | None" = None,
             recordings_dir: Path | None = None) -> web.Application:
    """The API over ``store``. With ``owns_store`` the app opens the store on start-up and closes it on cleanup;
    with ``retention`` it deletes old personal data (store and ``recordings_dir``) while it runs."""
    app = web.Application(middlewares=[_json_errors, auth_middleware])
    app[STORE] = store
    app[METRICS] = metrics
    app[HEALTH_TIMEOUT_S] = health_timeout_s
    app[HEALTH_CHECK] = health_check or (lambda: None)
    setup_auth(app, auth or Auth(store))
    if owns_store:
        app.cleanup_ctx.append(_store_lifetime)
    if retention is not None:
        app.cleanup_ctx.append(retention_context(store, retention.days, retention.interval_s, recordings_dir))
    app.add_routes([
        web.get("/api/me", me),
        web.get("/api/calls", list_calls),
        web.get("/api/calls/{call_id}", get_call),
        web.post("/api/calls/{call_id}/personal-id", unmask_personal_id),
        web.get("/api/applications", list_applications),
        web.get("/api/audit", list_audit),
        web.get("/healthz", healthz),
        web.get("/metrics", metrics_text),
    ])
    add_page_routes(app)
    add_queue_routes(app, store)
    add_dashboard(app, store)
    add_agent_routes(app, store)
    return app


async def _store_lifetime(app: web.Application) -> AsyncIterator[None]:
    await app[STORE].open()
    yield
    await app[STORE].close()


# ---------------------------------------------------------------------- handlers


async def me(request: web.Request) -> web.Response:
    """Who is logged in, the queues they see, and (for a browser session) the CSRF token for scripts."""
    return web.json_response(current_user(request).to_json())


async def list_calls(request: web.Request) -> web.Response:
    """Newest first; an agent's list holds the calls of their queues among the newest ``MAX_LIST_LIMIT``."""
    limit = _limit(request)
    user = current_user(request)
    store = request.app[STORE]
    if user.is_supervisor:
        calls = await store.list_calls(limit)
    else:
        live = await _live_calls(store, user)
        calls = [c for c in await store.list_calls(MAX_LIST_LIMIT)
                 if c.call_id in live or _serves(user, c.transfer)][:limit]
    return _masked({"calls": [c.to_json() for c in calls], "limit": limit})


async def get_call(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    user = current_user(request)
    store = request.app[STORE]
    record = await store.get_call(call_id)
    if record is None or not (user.is_supervisor or _serves(user, record.report.transfer)
                              or call_id in await _live_calls(store, user)):
        _fail(web.HTTPNotFound, f"no call with id {call_id!r}")
    return _masked(record.to_json())


async def unmask_personal_id(request: web.Request) -> web.Response:
    """The caller's personal identity code(s), unmasked, for the agent handling that caller only; audited."""
    call_id = request.match_info["call_id"]
    user = current_user(request)
    store = request.app[STORE]
    handling = user.role == "agent" and any(
        e.call_id == call_id and e.agent == user.name
        for e in await store.list_queue(None, states=HANDLING_STATES, limit=MAX_LIST_LIMIT))
    if not handling:
        await store.audit(user.name, UNMASK_REFUSED_ACTION, call_id, "not the agent handling this caller")
        _fail(web.HTTPForbidden, "only the agent handling this caller may open the personal identity code")
    record = await store.get_call(call_id)
    intake = record.report.intake if record is not None else None
    codes = personal_ids(intake.fields) if intake is not None else {}
    await store.audit(user.name, UNMASK_ACTION, call_id, f"fields: {', '.join(codes) or 'none'}")
    log.info("call %s: %s opened the personal identity code (fields: %s)", call_id, user.name,
             ", ".join(codes) or "none")
    return web.json_response({"call_id": call_id, "form": intake.form if intake else None, "personal_ids": codes})


@roles("supervisor")
async def list_applications(request: web.Request) -> web.Response:
    limit = _limit(request)
    status = request.query.get("status")
    if status is not None and status not in INTAKE_STATUSES:
        _fail(web.HTTPBadRequest, f"status must be one of {', '.join(INTAKE_STATUSES)}, not {status!r}")
    applications = await request.app[STORE].list_applications(status, limit)  # type: ignore[arg-type]
    return _masked({"applications": [a.to_json() for a in applications], "limit": limit})


@roles("supervisor")
async def list_audit(request: web.Request) -> web.Response:
    """Newest first; ``?call_id=`` for one call's entries."""
    limit = _limit(request)
    entries = await request.app[STORE].list_audit(request.query.get("call_id") or None, limit)
    return _masked({"entries": [e.to_json() for e in entries], "limit": limit})


@public
async def healthz(request: web.Request) -> web.Response:
    timeout_s = request.app[HEALTH_TIMEOUT_S]
    try:
        await asyncio.wait_for(request.app[STORE].ping(), timeout_s)
    except TimeoutError:
        return web.json_response({"status": "unavailable", "error": f"store did not answer within {timeout_s:g} s"},
                                 status=503)
    except Exception as e:  # noqa: BLE001 - a health check answers, whatever broke
        return web.json_response({"status": "unavailable", "error": str(e) or e.__class__.__name__}, status=503)
    problem = request.app[HEALTH_CHECK]()
    if problem is not None:
        return web.json_response({"status": "unavailable", "error": problem}, status=503)
    return web.json_response({"status": "ok"})


@public_on_loopback
async def metrics_text(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    return web.Response(body=metrics.render(), headers={"Content-Type": metrics.content_type})


# ---------------------------------------------------------------------- who sees which call


def _serves(user: Principal, transfer: Transfer | None) -> bool:
    """A call transferred to one of the user's queues (a transfer naming no queue went to the default one)."""
    return transfer is not None and user.serves(transfer.queue or DEFAULT_QUEUE)


async def _live_calls(store: CallStore, user: Principal) -> set[str]:
    """Calls on the line in the user's queues (their transfer is stored only when the call ends)."""
    entries: list[QueueEntry] = await store.list_queue(None, states=LIVE_QUEUE_STATES, limit=MAX_LIST_LIMIT)
    return {e.call_id for e in entries if user.serves(e.queue)}


def _masked(data: dict, status: int = 200) -> web.Response:
    return web.json_response(mask_json(data), status=status)


# ---------------------------------------------------------------------- errors as one-line JSON


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        _fail(web.HTTPBadRequest, f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}, not {raw!r}")
    return limit


def _fail(error: type[web.HTTPException], message: str) -> NoReturn:
    raise error(text=json.dumps({"error": message}), content_type="application/json")


@web.middleware
async def _json_errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise
        return web.json_response({"error": e.reason}, status=e.status)
    except StoreError as e:
        log.error("%s %s: %s", request.method, request.path, e)
        return web.json_response({"error": str(e)}, status=503)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": "internal error"}, status=500)
