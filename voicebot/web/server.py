"""Listening for HTTP: the ``serve`` command runs the app inside ``run_http``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import AsyncIterator

from aiohttp import web

from voicebot.errors import VoicebotError

#: loopback only until the API has logins
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
        yield HttpEndpoint(host, bound_port)
    finally:
        await runner.cleanup()
