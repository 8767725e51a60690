"""Who may use the web side: logins, sessions, API tokens, roles and CSRF checks.

Every route needs a login unless its handler says otherwise (``@public``,
``@public_on_loopback``); ``@roles("supervisor")`` narrows a route to a role.
A request proves who it is in one of two ways:

- a browser session: a random token in an HttpOnly, SameSite=Lax cookie (Secure
  over https); the store keeps only its SHA-256, so a copy of the database logs
  nobody in. A state-changing request (anything but GET/HEAD/OPTIONS) must also
  carry the session's CSRF token, in the ``X-CSRF-Token`` header or the
  ``csrf_token`` form field; a WebSocket handshake must come from this origin.
- an API token (``Authorization: Bearer vbt_...``), made by ``voicebot users
  token``; only its SHA-256 is stored. A browser never sends one on its own, so
  token requests need no CSRF token.

Passwords are hashed with argon2id (argon2-cffi's defaults) in an executor, as a
hash takes tens of milliseconds and 64 MiB. Password guessing is slowed per user
name and per address: after a few failures each further try must wait, doubling.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Awaitable, Callable, Literal, TypeVar

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from yarl import URL

from voicebot.storage.base import CallStore
from voicebot.storage.records import ROLES, LoginSession, Role, User
from voicebot.storage.rows import utc_now

log = logging.getLogger("voicebot.web.auth")

SESSION_COOKIE = "voicebot_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
#: API tokens start with this, so a leaked one is easy to recognise (and to search for)
TOKEN_PREFIX = "vbt_"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: bytes of randomness in session cookies, CSRF tokens and API tokens
SECRET_BYTES = 32
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024

H = TypeVar("H")


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """How long logins last and how hard password guessing is made."""

    #: a login lasts this long from the moment it was made (an agent's shift and then some)
    session_lifetime_s: float = 12 * 3600.0
    #: failed logins per user name, and per address, before further tries must wait
    free_failures: int = 5
    #: the wait after the first failure beyond those; it doubles with each further failure
    first_delay_s: float = 1.0
    max_delay_s: float = 300.0
    #: failures older than this are forgotten
    failure_window_s: float = 3600.0
    #: names and addresses tracked at most (the longest quiet are forgotten first)
    tracked_keys: int = 10_000
    #: argon2 hashes computed at once (each needs 64 MiB with the library's defaults)
    hashing_concurrency: int = 4
    #: where a login goes when it was not sent from a page: each role to the page it works in
    supervisor_home: str = "/dashboard"
    agent_home: str = "/agent"

    def __post_init__(self) -> None:
        if self.failure_window_s < self.max_delay_s:
            raise ValueError("failure_window_s must be at least max_delay_s, or a wait outlives its failures")

    def home_of(self, role: Role) -> str:
        """The page a user of ``role`` lands on after signing in without a page to go back to."""
        return self.agent_home if role == "agent" else self.supervisor_home


@dataclass(frozen=True, slots=True)
class Principal:
    """The user a request was made by."""

    name: str
    role: Role
    #: the queues an agent serves (from the agents table); a supervisor sees every queue
    queues: tuple[str, ...]
    via: Literal["session", "token"]
    #: the session's CSRF token, for forms and the X-CSRF-Token header ("" for token requests)
    csrf_token: str = ""
    #: the stored hash of the session cookie ("" for token requests)
    session_hash: str = ""

    @property
    def is_supervisor(self) -> bool:
        return self.role == "supervisor"

    def serves(self, queue: str) -> bool:
        """Whether this user may see callers of ``queue``."""
        return self.is_supervisor or queue in self.queues

    def to_json(self) -> dict:
        data = {"name": self.name, "role": self.role, "queues": list(self.queues), "via": self.via}
        if self.csrf_token:
            data["csrf_token"] = self.csrf_token
        return data


class LoginRefused(Exception):
    """Wrong name or password, or a disabled user: the same answer for each, so names cannot be probed."""


class LoginThrottled(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


# ---------------------------------------------------------------------- secrets and passwords


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def new_api_token() -> str:
    return TOKEN_PREFIX + new_secret()


def secret_hash(secret: str) -> str:
    """What the store keeps of a session cookie or API token: a random secret needs no slow hash."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def same_secret(sent: str | None, expected: str) -> bool:
    """Constant-time comparison (a timing difference must not tell how much of a token was right)."""
    if not sent or not expected:
        return False
    return hmac.compare_digest(sent.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def check_password_rules(password: str) -> None:
    """Raise ValueError for a password too short to resist guessing (or absurdly long)."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"a password may have at most {MAX_PASSWORD_CHARS} characters")


class Passwords:
    """argon2id hashing with argon2-cffi's defaults, off the event loop and a few at a time."""

    def __init__(self, hasher: PasswordHasher | None = None, concurrency: int = 4) -> None:
        self.hasher = hasher or PasswordHasher()
        self._concurrency = concurrency
        self._slots: asyncio.Semaphore | None = None
        self._decoy: str | None = None

    def hash_now(self, password: str) -> str:
        """Blocking: for the command line."""
        return self.hasher.hash(password)

    def needs_rehash(self, password_hash: str) -> bool:
        """The hash was made with other parameters than the library's current defaults."""
        try:
            return self.hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True

    async def hash(self, password: str) -> str:
        return await self._run(self.hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        def check() -> bool:
            try:
                return self.hasher.verify(password_hash, password)
            except (VerificationError, InvalidHashError):
                return False

        return await self._run(check)

    async def spend(self, password: str) -> None:
        """Take as long as a real check, for a name with no usable hash (else its absence could be timed)."""
        if self._decoy is None:
            self._decoy = await self.hash(new_secret())
        await self.verify(self._decoy, password)

    async def _run(self, fn: Callable[..., H], *args: object) -> H:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._concurrency)
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# ---------------------------------------------------------------------- slowing down guessing


class LoginThrottle:
    """Failed logins per key (a user name, an address): after ``free_failures`` each further try must wait.

    In memory, per process: with several service processes an attacker gets each one's
    allowance, which still leaves guessing at a few tries per ``max_delay_s``.
    """

    def __init__(self, policy: AuthPolicy, now: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._now = now
        #: key -> (failures, time of the last one); least recently failed first
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def wait_s(self, *keys: str) -> float:
        """How long the slowest of ``keys`` must still wait before its next try (0: may try now)."""
        now = self._now()
        return max((self._wait_for(key, now) for key in keys), default=0.0)

    def failed(self, *keys: str) -> None:
        now = self._now()
        for key in keys:
            count, last = self._failures.pop(key, (0, now))
            if now - last > self._policy.failure_window_s:
                count = 0
            self._failures[key] = (count + 1, now)
        while len(self._failures) > self._policy.tracked_keys:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def _wait_for(self, key: str, now: float) -> float:
        found = self._failures.get(key)
        if found is None:
            return 0.0
        count, last = found
        if now - last > self._policy.failure_window_s:
            del self._failures[key]
            return 0.0
        beyond = count - self._policy.free_failures
        if beyond < 0:
            return 0.0
        delay = min(self._policy.first_delay_s * 2.0 ** beyond, self._policy.max_delay_s)
        return max(0.0, last + delay - now)


# ---------------------------------------------------------------------- the service's logins


@dataclass(frozen=True, slots=True)
class NewLogin:
    """A session just made: ``cookie`` goes to the browser, only its hash went to the store."""

    cookie: str
    session: LoginSession
    #: the user's role, which decides where the browser goes next
    role: Role


class Auth:
    """Logins against the store, and who a request is."""

    def __init__(self, store: CallStore, policy: AuthPolicy | None = None, *,
                 now: Callable[[], datetime] | None = None, passwords: Passwords | None = None,
                 throttle_clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.policy = policy or AuthPolicy()
        self.now = now or utc_now
        self.passwords = passwords or Passwords(concurrency=self.policy.hashing_concurrency)
        self.throttle = LoginThrottle(self.policy, throttle_clock)

    async def login(self, name: str, password: str, address: str) -> NewLogin:
        """A new session for a right name and password; LoginThrottled while this name or address
        must wait, LoginRefused otherwise. The password's hash is renewed if the hashing defaults changed."""
        keys = (f"user:{name.casefold()}", f"addr:{address}")
        wait_s = self.throttle.wait_s(*keys)
        if wait_s > 0:
            raise LoginThrottled(wait_s)
        user = await self.store.get_user(name) if name else None
        if user is None or user.disabled or len(password) > MAX_PASSWORD_CHARS:
            await self.passwords.spend(password[:MAX_PASSWORD_CHARS])
            ok = False
        else:
            ok = await self.passwords.verify(user.password_hash, password)
        if not ok or user is None:
            self.throttle.failed(*keys)
            log.warning("failed login for %r from %s", name[:64], address)
            raise LoginRefused()
        self.throttle.succeeded(keys[0])
        if self.passwords.needs_rehash(user.password_hash):
            await self.store.set_password_hash(user.name, await self.passwords.hash(password))
            log.info("password hash of %s renewed with the current argon2 parameters", user.name)
        cookie = new_secret()
        now = self.now()
        session = LoginSession(secret_hash(cookie), user.name, new_secret(), now,
                               now + timedelta(seconds=self.policy.session_lifetime_s))
        await self.store.save_session(session)
        log.info("%s %s logged in from %s", user.role, user.name, address)
        return NewLogin(cookie, session, user.role)

    async def logout(self, principal: Principal) -> None:
        if principal.session_hash:
            await self.store.delete_session(principal.session_hash)
            log.info("%s logged out", principal.name)

    async def from_request(self, request: web.Request) -> Principal | None:
        """The request's user: by its Bearer token when it has an Authorization header, else by its
        session cookie; None if neither proves anyone. A bad token is refused, not passed over."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            user = await self.store.user_for_token(secret_hash(token.strip()))
            return None if user is None else await self._principal(user, "token")
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        found = await self.store.get_session(secret_hash(cookie))
        if found is None:
            return None
        session, user = found
        if user.disabled or session.expires_at <= self.now():
            return None
        return await self._principal(user, "session", session)

    async def _principal(self, user: User, via: Literal["session", "token"],
                         session: LoginSession | None = None) -> Principal:
        queues: tuple[str, ...] = ()
        if user.role == "agent":
            agent = await self.store.get_agent(user.name)
            queues = agent.queues if agent is not None else ()
        return Principal(user.name, user.role, queues, via, session.csrf_token if session else "",
                         session.session_hash if session else "")


AUTH = web.AppKey("auth", Auth)
#: where the middleware puts the Principal on a request (read it with current_user)
PRINCIPAL = web.RequestKey("principal", Principal)


def setup_auth(app: web.Application, auth: Auth) -> None:
    """Put ``auth`` in the app; the app's middlewares must include ``auth_middleware``."""
    app[AUTH] = auth
    app.on_response_prepare.append(_security_headers)


# ---------------------------------------------------------------------- marking handlers

_ACCESS = "_voicebot_access"
Access = Literal["public", "loopback"] | tuple[Role, ...]


def public(handler: H) -> H:
    """Anyone may call this handler (login pages, /healthz)."""
    setattr(handler, _ACCESS, "public")
    return handler


def public_on_loopback(handler: H) -> H:
    """Open to this machine; from elsewhere a login is needed (/metrics)."""
    setattr(handler, _ACCESS, "loopback")
    return handler


def roles(*allowed: Role) -> Callable[[H], H]:
    """Only users with one of ``allowed`` roles; others get 403."""
    for role in allowed:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")

    def mark(handler: H) -> H:
        setattr(handler, _ACCESS, tuple(allowed))
        return handler

    return mark


def current_user(request: web.Request) -> Principal:
    """The user of a request that needed a login (the middleware has checked it)."""
    return request[PRINCIPAL]


def user_or_none(request: web.Request) -> Principal | None:
    """The user of a request that needed a login; None on public routes (which may call
    ``request.app[AUTH].from_request(request)`` themselves)."""
    return request.get(PRINCIPAL)


def csrf_token(request: web.Request) -> str:
    """The session's CSRF token, for a form's hidden ``csrf_token`` field or a page's meta tag."""
    return current_user(request).csrf_token


def is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path == "/api"


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------- the middleware


@web.middleware
async def auth_middleware(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    auth = request.app[AUTH]
    access: Access | None = getattr(request.match_info.handler, _ACCESS, None)
    if access == "public" or (access == "loopback" and is_loopback(request.remote)):
        return await handler(request)  # not even a store lookup: /healthz must answer whatever the store does
    principal = await auth.from_request(request)
    if principal is None:
        return _login_needed(request, machine=access == "loopback")
    if isinstance(access, tuple) and principal.role not in access:
        return refusal(request, 403, f"this needs the {' or '.join(access)} role")
    if principal.via == "session":
        if request.method not in SAFE_METHODS and not await _csrf_ok(request, principal):
            return refusal(request, 403, f"missing or wrong CSRF token (send it as {CSRF_HEADER} or {CSRF_FIELD})")
        if request.headers.get("Upgrade", "").lower() == "websocket" and not _same_origin(request):
            return refusal(request, 403, "a WebSocket must be opened from this site's own pages")
    request[PRINCIPAL] = principal
    return await handler(request)


async def _csrf_ok(request: web.Request, principal: Principal) -> bool:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    return same_secret(sent, principal.csrf_token)


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if not origin:
        return False
    try:
        return URL(origin).raw_authority.lower() == request.host.lower()
    except ValueError:
        return False


def _login_needed(request: web.Request, *, machine: bool = False) -> web.StreamResponse:
    """401 for programs (API, tokens, /metrics), a redirect to the login form for a browser's page."""
    if machine or is_api(request) or "Authorization" in request.headers or request.method not in ("GET", "HEAD"):
        message = "login needed: a session or an API token (Authorization: Bearer ...)"
        response = web.json_response({"error": message}, status=401) if machine else refusal(request, 401, message)
        response.headers["WWW-Authenticate"] = 'Bearer realm="voicebot"'
        return response
    raise web.HTTPSeeOther(location=str(URL("/login").with_query(next=request.path_qs)))


def refusal(request: web.Request, status: int, message: str) -> web.Response:
    """A refusal in the request's kind: one-line JSON under /api, a small page elsewhere."""
    if is_api(request) or "Authorization" in request.headers:
        return web.json_response({"error": message}, status=status)
    from voicebot.web.pages import message_page

    return message_page(status, message)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Nothing of ours may be framed (clickjacking), sniffed, cached when personal, or leak its address."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    headers.setdefault("Referrer-Policy", "same-origin")
    if PRINCIPAL in request or is_api(request):
        headers.setdefault("Cache-Control", "no-store")
