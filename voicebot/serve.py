"""``voicebot serve``: the phone service.

The store is opened first (calls a crash left open are marked interrupted,
keeping what they collected), then the HTTP API, then the call side: by
default Kamailio as the SIP front on the public SIP port with call workers
behind it on loopback ports (PJSIP holds four calls per process); with
``sip.workers = 0``, one PJSIP endpoint in this process instead.

The first SIGTERM (or Ctrl-C) drains: new calls get 503, calls in progress may
finish for ``sip.drain_timeout_s``, then hear that the service is closing; a
second one ends them at once. Every call is saved either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import random
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from voicebot.config import Settings
from voicebot.metrics import CallMetrics
from voicebot.shutdown import ShutdownSignals
from voicebot.storage import open_store
from voicebot.storage.base import CallStore
from voicebot.web import run_http
from voicebot.web.agent_api import AGENT_URI_CHECK
from voicebot.web.api import make_app

log = logging.getLogger("voicebot")


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    #: where callers dial: "host:port" (UDP and TCP)
    sip_address: str
    http_url: str
    #: call-answering processes (0: PJSIP in the service process)
    workers: int
    max_calls: int


async def run_service(settings: Settings, *, on_ready: Callable[[ServiceInfo], None] | None = None,
                      shutdown: ShutdownSignals | None = None) -> None:
    """Serve until shut down by signals (or by ``shutdown.request()``)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if shutdown is None:
            shutdown = stack.enter_context(ShutdownSignals())
        async with open_store(settings) as store:
            await _check_agents(settings, store)
            if settings.sip.worker_count == 0:
                await _serve_in_process(settings, store, shutdown, on_ready)
            else:
                await _serve_with_workers(settings, store, shutdown, on_ready)
    log.info("service stopped")


async def _serve_in_process(settings: Settings, store: CallStore, shutdown: ShutdownSignals,
                            on_ready: Callable[[ServiceInfo], None] | None) -> None:
    from voicebot.app import open_runtime, service_queue
    from voicebot.sip.service import open_sip_service
    from voicebot.storage.recorder import StoreRecorder

    log.warning("sip workers = 0: PJSIP in the service process, at most %d calls, no SIP front (no scanner"
                " blocking or rate limits): for development", settings.sip.capacity)
    metrics = CallMetrics()
    app = make_app(store, metrics, retention=settings.retention, recordings_dir=settings.recordings_dir)
    app[AGENT_URI_CHECK] = agent_uri_check(settings)
    async with run_http(app, settings.http.host, settings.http.port) as http:
        async with open_runtime(settings, StoreRecorder(store, metrics),
                                queue=service_queue(settings, store)) as runtime:
            recordings = settings.recordings_dir if settings.recording.enabled else None
            async with open_sip_service(runtime, settings.sip, recordings_dir=recordings) as sip:
                assert sip.address is not None
                _ready(on_ready, ServiceInfo(f"{sip.address.host}:{sip.address.port}", http.url, 0,
                                             settings.sip.capacity))
                await sip.serve_until(shutdown.drain, shutdown.now)


async def _serve_with_workers(settings: Settings, store: CallStore, shutdown: ShutdownSignals,
                              on_ready: Callable[[ServiceInfo], None] | None) -> None:
    from voicebot.sip.front import WORKER_SIDE_HOST, WorkerAddress, open_front
    from voicebot.sip.pool import WORKER_HOST, open_worker_pool

    sip = settings.sip
    count = sip.worker_count
    any_port = sip.port == 0  # tests: the front on a free port, each worker on the one it finds
    if any_port:
        settings = replace(settings, sip=replace(sip, port=_free_port()))
        sip = settings.sip
    run_dir = settings.data_dir / "run"
    metrics_dir = run_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    metrics = CallMetrics(multiprocess_dir=metrics_dir)
    parts: dict[str, Any] = {}

    def health() -> str | None:
        front, pool = parts.get("front"), parts.get("pool")
        if front is None or pool is None:
            return "starting"
        if not front.running:
            return "the SIP front (Kamailio) is not running"
        if pool.running == 0:
            return "no call worker is running"
        return None

    app = make_app(store, metrics, health_check=health, retention=settings.retention,
                   recordings_dir=settings.recordings_dir)
    app[AGENT_URI_CHECK] = agent_uri_check(settings)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(run_http(app, settings.http.host, settings.http.port))
        pool_args = dict(metrics_dir=str(metrics_dir), on_exit=metrics.worker_exited)
        front_address = f"{WORKER_SIDE_HOST}:{sip.port}"  # the workers' outbound proxy
        if any_port:  # workers first: the front's list needs the ports they found
            pool = await stack.enter_async_context(open_worker_pool(settings, [0] * count, front_address, **pool_args))
            front = await stack.enter_async_context(
                open_front(sip, [WorkerAddress(p, WORKER_HOST) for p in pool.ports], run_dir))
        else:  # the workers' loopback ports follow the public one
            ports = [sip.port + 1 + i for i in range(count)]
            front = await stack.enter_async_context(
                open_front(sip, [WorkerAddress(p, WORKER_HOST) for p in ports], run_dir))
            pool = await stack.enter_async_context(
                open_worker_pool(settings, ports, front_address, **pool_args))
        await front.reset_workers()  # into the rotation now, not at the front's next probe
        parts.update(front=front, pool=pool)
        dial = f"{sip.public_address or front.host}:{front.port}"
        _ready(on_ready, ServiceInfo(dial, http.url, count, min(sip.max_calls, count * sip.capacity)))
        await shutdown.drain.wait()
        pool.drain()
        ended = asyncio.create_task(pool.wait())
        cut_short = asyncio.create_task(shutdown.now.wait())
        await asyncio.wait({ended, cut_short}, return_when=asyncio.FIRST_COMPLETED)
        if cut_short.done():
            pool.end_calls()
        cut_short.cancel()
        await asyncio.gather(ended, cut_short, return_exceptions=True)


def agent_uri_check(settings: Settings) -> Callable[[str], str | None]:
    """What the agent view asks before it gives an agent a caller: the service connects callers only to
    agents' phones on ``[sip.transfer] agent_domains`` (the workers refuse, and the front relays, nothing else)."""
    transfer = settings.sip.transfer

    def check(uri: str) -> str | None:
        if transfer.admits_agent(uri):
            return None
        return (f"{uri} is on none of the service's [sip.transfer] agent_domains"
                f" ({', '.join(transfer.agent_domains) or 'none set'})")

    return check


async def _check_agents(settings: Settings, store: CallStore) -> None:
    """Say at start what would keep waiting callers from reaching agents."""
    if not settings.queue.enabled:
        log.info("queue off: transfers go to [sip.transfer] target_uri at once")
        return
    transfer = settings.sip.transfer
    if not transfer.agent_domains:
        log.warning("transferred callers wait in the queue, but [sip.transfer] agent_domains is empty: no agent can"
                    " be connected (docs/agents.md)")
        return
    for agent in await store.list_agents():
        if agent.sip_uri and not transfer.admits_agent(agent.sip_uri):
            log.warning("agent %s cannot take callers: %s is on none of [sip.transfer] agent_domains", agent.name,
                        agent.sip_uri)


def _ready(on_ready: Callable[[ServiceInfo], None] | None, info: ServiceInfo) -> None:
    log.warning("voicebot answers calls at sip:voicebot@%s (UDP and TCP, up to %d at once); HTTP API at %s",
                info.sip_address, info.max_calls, info.http_url)
    if on_ready is not None:
        on_ready(info)


def _free_port() -> int:
    """A port free for UDP and TCP now, outside the kernel's ephemeral range (for tests that ask for port 0).

    The front binds it only after the workers have started; a port the kernel
    hands out for "any port" could be given to another process in between.
    """
    try:
        low, _ = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, max(20001, low))  # below: baresip's and many PBXs' RTP ports
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                t.bind(("", port))
                u.bind(("", port))
            except OSError:
                continue
        return port
    raise OSError("no free port for the SIP front")
