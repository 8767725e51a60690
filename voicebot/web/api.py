"""The service's HTTP API: calls, applications, health and Prometheus metrics.

No logins yet, so the API answers on the loopback interface only by default
(see voicebot.web.server) and returns records as stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import AsyncIterator, Callable, NoReturn

from aiohttp import web

from voicebot.metrics import CallMetrics
from voicebot.storage.base import INTAKE_STATUSES, MAX_LIST_LIMIT, CallStore, StoreError

log = logging.getLogger("voicebot.web")

STORE = web.AppKey("store", CallStore)
METRICS = web.AppKey("metrics", CallMetrics)
HEALTH_TIMEOUT_S = web.AppKey("health_timeout_s", float)
#: what else must be up for the service to be healthy: a one-line problem, or None when all is well
HEALTH_CHECK = web.AppKey("health_check", Callable[[], "str | None"])

DEFAULT_LIMIT = 50


def make_app(store: CallStore, metrics: CallMetrics, *, owns_store: bool = False,
             health_timeout_s: float = 2.0, health_check: Callable[[], str | None] | None = None) -> web.Application:
    """The API over ``store``. With ``owns_store`` the app opens the store on start-up and closes it on cleanup."""
    app = web.Application(middlewares=[_json_errors])
    app[STORE] = store
    app[METRICS] = metrics
    app[HEALTH_TIMEOUT_S] = health_timeout_s
    app[HEALTH_CHECK] = health_check or (lambda: None)
    if owns_store:
        app.cleanup_ctx.append(_store_lifetime)
    app.add_routes([
        web.get("/api/calls", list_calls),
        web.get("/api/calls/{call_id}", get_call),
        web.get("/api/applications", list_applications),
        web.get("/healthz", healthz),
        web.get("/metrics", metrics_text),
    ])
    return app


async def _store_lifetime(app: web.Application) -> AsyncIterator[None]:
    await app[STORE].open()
    yield
    await app[STORE].close()


# ---------------------------------------------------------------------- handlers


async def list_calls(request: web.Request) -> web.Response:
    limit = _limit(request)
    calls = await request.app[STORE].list_calls(limit)
    return web.json_response({"calls": [c.to_json() for c in calls], "limit": limit})


async def get_call(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    record = await request.app[STORE].get_call(call_id)
    if record is None:
        _fail(web.HTTPNotFound, f"no call with id {call_id!r}")
    return web.json_response(record.to_json())


async def list_applications(request: web.Request) -> web.Response:
    limit = _limit(request)
    status = request.query.get("status")
    if status is not None and status not in INTAKE_STATUSES:
        _fail(web.HTTPBadRequest, f"status must be one of {', '.join(INTAKE_STATUSES)}, not {status!r}")
    applications = await request.app[STORE].list_applications(status, limit)  # type: ignore[arg-type]
    return web.json_response({"applications": [a.to_json() for a in applications], "limit": limit})


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


async def metrics_text(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    return web.Response(body=metrics.render(), headers={"Content-Type": metrics.content_type})


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
