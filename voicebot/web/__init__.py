"""The service's web side: the HTTP API and the server that carries it."""

from __future__ import annotations

from voicebot.web.api import METRICS, STORE, make_app
from voicebot.web.auth import Auth, AuthPolicy, Principal, current_user
from voicebot.web.server import DEFAULT_HOST, DEFAULT_PORT, HttpEndpoint, HttpError, run_http

__all__ = ["Auth", "AuthPolicy", "Principal", "current_user", "DEFAULT_HOST", "DEFAULT_PORT", "METRICS", "STORE", "HttpEndpoint", "HttpError", "make_app", "run_http"]
