"""Listening for HTTP: the ``serve`` command runs the app inside ``run_http``."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from dataclasses import dataclass
from typing import AsyncIterator

from aiohttp import web

from voicebot.errors import VoicebotError

log = logging.getLogger("voicebot.web")

#: loopback unless configured otherwise: every page and /api/* needs a login, but passwords and session
#: cookies should cross a network only inside TLS (a reverse proxy in front)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class HttpError(VoicebotError):
    """The HTTP server cannot start (one line)."""


@dataclass(frozen=True, slots=True)
class HttpEndpoint:
    host: str
    #: the bound port (the one the OS chose when asked for 0)
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def run_http(app: web.Application, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
                   ) -> AsyncIterator[HttpEndpoint]:
    """Serve ``app`` until the block ends, then finish requests and run the app's cleanup."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as e:
            raise HttpError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        bound_port = runner.addresses[0][1]
        if not _loopback(host):
            log.warning("HTTP API on %s:%d answers beyond this machine: serve it to browsers through a TLS proxy,"
                        " or passwords and session cookies cross the network in clear", host, bound_port)
        yield HttpEndpoint(host, bound_port)
    finally:
        await runner.cleanup()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
