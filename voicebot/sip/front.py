"""The SIP front: Kamailio on the service's public SIP port, the voicebot workers behind it.

The pjsua2 wheel holds a handful of calls per process (PJSUA_MAX_CALLS is compiled in), so
the service answers calls in several worker processes, each a PJSIP endpoint on a port of
127.0.0.1, and this front spreads the calls over them (a busy or silent worker passes the
call to the next). It is also where the SIP side is defended: rate limit per source,
scanner User-Agents, malformed messages, unknown users and domains, optional digest auth,
and no relaying anywhere but to a worker (or, for a worker's bridge transfer leg, to the
configured transfer target or a phone on one of the configured agent domains). RTP does not
pass through it: media goes straight to the workers.

Only this module knows Kamailio. Its config comes from ``kamailio.cfg.tmpl`` beside this file.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from voicebot.child_process import die_with_parent
from voicebot.sip.settings import (
    SIP_PORT, SIP_TLS_PORT, SIP_URI, SipError, SipSettings, default_sip_port, split_host_port,
)

log = logging.getLogger("voicebot.sip.front")

TEMPLATE = "kamailio.cfg.tmpl"
#: the dispatcher set the workers are in
WORKER_SET = 1
#: where the front always listens too (the workers' side, and where it is probed)
WORKER_SIDE_HOST = "127.0.0.1"
#: what the front logs a block as (the ``kind`` in "blocked KIND from ...")
BLOCK_KINDS = ("rate_limit", "scanner", "malformed", "unknown_user", "foreign_domain", "auth_failed",
               "relay_refused")
#: Kamailio's log levels -> Python's; Kamailio's info/notice chatter is debug here
_LEVELS = {"ALERT": logging.CRITICAL, "BUG": logging.CRITICAL, "CRITICAL": logging.CRITICAL,
           "ERROR": logging.ERROR, "WARNING": logging.WARNING, "NOTICE": logging.DEBUG,
           "INFO": logging.DEBUG, "DEBUG": logging.DEBUG}
#: " 3(4711) WARNING: <script>: text" (kamailio -E)
_LOG_LINE = re.compile(r"^\s*\d+\(\d+\)\s+([A-Z]+):\s+(?:<?([\w:]+)>?\s+)?(?:\[([^\]:]*)[^\]]*\]:\s+)?(.*)$")
#: the SIP parser's own complaints about a malformed message: the front logs the block itself
_PARSER_FILES = "core/parser/"
_OURS = re.compile(r"voicebot-front: (.*)$")
_BLOCK = re.compile(r"blocked (\w+) from (\S+): (.*)$")
_MORE = re.compile(r"^(\d+) more in the \d+ s after that")


class _CfgTemplate(string.Template):
    """``%%{name}`` placeholders: Kamailio's script already uses both ``$`` and ``{}``."""

    delimiter = "%%"


@dataclass(frozen=True, slots=True)
class WorkerAddress:
    """Where one worker's PJSIP endpoint listens for SIP over UDP (it sends from there too)."""

    port: int
    host: str = "127.0.0.1"

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class FrontOptions:
    """How the Kamailio process is run (the SIP-side policy is in ``SipSettings.security``)."""

    #: the program ("kamailio" from PATH, or a path)
    program: str = "kamailio"
    #: Kamailio processes reading UDP, and as many for TCP
    children: int = 4
    #: shared and per-process memory, MB: enough for thousands of calls and rate-limit entries,
    #: small enough for two fronts (a test's and a running service's) on one machine
    shm_mb: int = 32
    pkg_mb: int = 4
    #: a worker that sends nothing at all (not even 100 Trying) this long is skipped and taken
    #: out of the rotation until it answers an OPTIONS probe
    worker_timeout_s: float = 2.0
    #: a worker that said "trying" but has not answered this long: the next one gets the call
    answer_timeout_s: float = 15.0
    #: how long a transfer target or registrar may take to say anything at all (they are
    #: farther away than the workers)
    outside_timeout_s: float = 5.0
    #: every worker gets an OPTIONS probe this often
    probe_interval_s: int = 2
    #: probes a worker may miss in a row before it leaves the rotation (a call it misses takes
    #: it out at once)
    probe_failures: int = 3
    #: how long the front may take to answer its first OPTIONS after starting
    start_timeout_s: float = 10.0
    #: after SIGTERM, how long before SIGKILL
    stop_timeout_s: float = 5.0
    tcp_max_connections: int = 2048


@dataclass(frozen=True, slots=True)
class UriParts:
    """What a worker's request URI must name to be relayed to the transfer target or registrar."""

    scheme: str
    user: str | None
    host: str
    port: int

    @classmethod
    def parse(cls, uri: str, what: str = "transfer target_uri") -> UriParts:
        m = SIP_URI.fullmatch(uri.strip().strip("<>"))
        if not m or not re.fullmatch(r"[A-Za-z0-9._~+%!*'()&=$,;?/-]*", m["user"] or ""):
            raise SipError(f"sip {what} {uri!r} is not a SIP URI the front can match")
        scheme = m["scheme"].lower()
        port = int(m["port"]) if m["port"] else default_sip_port(scheme, m["params"] or "")
        return cls(scheme, m["user"], m["host"].lower(), port)


def render_front_config(settings: SipSettings, workers: Sequence[WorkerAddress], *, dispatcher_list: Path,
                        options: FrontOptions = FrontOptions()) -> str:
    """Kamailio's config for ``settings`` with ``workers`` behind it (list file at ``dispatcher_list``)."""
    settings.check()
    if not workers:
        raise SipError("the SIP front needs at least one worker")
    if settings.port == 0:
        raise SipError("the SIP front needs a fixed sip port, not 0")
    sec = settings.security
    defines = {
        "WORKERS": str(WORKER_SET),
        "DISPATCHER_LIST": _quote(str(dispatcher_list)),
        "WORKER_TIMEOUT_MS": str(max(100, round(options.worker_timeout_s * 1000))),
        "ANSWER_TIMEOUT_MS": str(max(100, round(options.answer_timeout_s * 1000))),
        "OUTSIDE_TIMEOUT_MS": str(max(100, round(options.outside_timeout_s * 1000))),
        "TRANSFER_TIMEOUT_MS": str(round((settings.transfer.timeout_s + options.outside_timeout_s) * 1000)),
        "PROBE_INTERVAL_S": str(max(1, options.probe_interval_s)),
        "PROBE_FAILURES": str(max(1, options.probe_failures)),
        "CONTROL_SOCKET": _quote(f"unix:{control_socket(dispatcher_list.parent)}"),
        "TCP_MAX_CONNECTIONS": str(options.tcp_max_connections),
        "RATE_REQUESTS": str(sec.rate_limit_requests),
        "RATE_INTERVAL_S": str(sec.rate_limit_interval_s),
        # a window's counters outlive it by one window (the timer removes them)
        "RATE_EXPIRE_S": str(2 * sec.rate_limit_interval_s),
        "BLOCK_LOG_INTERVAL_S": str(sec.block_log_interval_s),
        "HTABLE_TIMER_S": str(max(1, min(20, sec.rate_limit_interval_s, sec.block_log_interval_s))),
    }
    if sec.scanner_user_agents:
        defines["SCANNER_UA_RE"] = _quote("|".join(_ere_literal(a.lower()) for a in sec.scanner_user_agents))
    if sec.auth:
        ha1 = hashlib.md5(f"{sec.auth_username}:{sec.auth_realm}:{sec.auth_password}".encode()).hexdigest()
        defines |= {"WITH_AUTH": "", "AUTH_REALM": _quote(sec.auth_realm), "AUTH_USER": _quote(sec.auth_username),
                    "AUTH_HA1": _quote(ha1)}
    text = resources.files("voicebot.sip").joinpath(TEMPLATE).read_text()
    return _CfgTemplate(text).substitute(
        defines="\n".join(_define(k, v) for k, v in defines.items()),
        core=_core(settings, options),
        routes=_routes(settings))


def control_socket(run_dir: Path) -> Path:
    """Kamailio's binrpc control socket (kamcmd talks to it)."""
    return run_dir / "kamailio.ctl"


def render_dispatcher_list(workers: Sequence[WorkerAddress]) -> str:
    """Kamailio's dispatcher list: every worker in one set, active from the start."""
    lines = ["# setid destination flags priority (written by voicebot/sip/front.py)"]
    lines += [f"{WORKER_SET} {w.uri} 0 0" for w in workers]
    return "\n".join(lines) + "\n"


def _core(settings: SipSettings, options: FrontOptions) -> str:
    lines = [
        "debug=1",
        "log_stderror=yes",
        f"children={options.children}",
    ]
    protos = [p for p, on in (("udp", settings.udp), ("tcp", settings.tcp)) if on]
    if settings.tcp:
        lines.append(f"tcp_children={options.children}")
    else:
        lines.append("disable_tcp=yes")
    # One socket per address, never a wildcard one: Kamailio knows its own addresses only from its
    # sockets (to tell a request for us from one to relay, and to record-route one address towards
    # the caller and another towards the workers), and the workers talk to it over loopback.
    host = settings.host or "0.0.0.0"
    addresses = listen_addresses(host)
    advertise = f" advertise {settings.public_address}:{settings.port}" if settings.public_address else ""
    for address in addresses:
        outside = advertise if address != WORKER_SIDE_HOST else ""
        lines += [f"listen={proto}:{_host(address)}:{settings.port}{outside}" for proto in protos]
    if settings.public_address:
        lines.append(f"alias={_host(settings.public_address)}:{settings.port}")
    return "\n".join(lines)


def _routes(settings: SipSettings) -> str:
    """The generated route blocks: each returns 1 when one of its conditions holds, else -1."""
    sec = settings.security
    register = settings.register.registrar_uri
    # calls from the PBX the service registers with are addressed to the registered user
    users = dict.fromkeys((settings.user, *sec.users, *([settings.register.username] if register else [])))
    domains = dict.fromkeys(d.lower() for d in (*sec.domains, *filter(None, [settings.public_address])))
    exempt = [str(ipaddress.ip_network(s, strict=False)) for s in sec.rate_limit_exempt]
    if register:
        # the PBX the service registers with sends every call: never rate limited when given by address
        with contextlib.suppress(ValueError):
            exempt.append(str(ipaddress.ip_network(UriParts.parse(register, "register registrar_uri").host.strip("[]"))))
    return "\n\n".join([
        _route("KNOWN_USER", "user parts an INVITE from outside may call",
               [f"$rU == {_quote(u)}" for u in users]),
        _route("OWN_DOMAIN", "hosts an INVITE from outside may name: ours, and the configured domains",
               ["uri == myself", *(f"$(rd{{s.tolower}}) == {_quote(d)}" for d in domains)]),
        _route("RATE_EXEMPT", "sources never rate limited",
               [f'is_in_subnet("$si", {_quote(net)})' for net in dict.fromkeys(exempt)]),
        _route("TRANSFER_TARGET", "where a worker may call: the transfer target",
               _uri_is(settings.transfer.target_uri, "transfer target_uri")),
        _route("AGENT_DOMAIN", "where else a worker may call: agents' phones, on the configured agent domains",
               [_host_is(domain) for domain in settings.transfer.agent_domains]),
        _route("REGISTRAR", "where a worker may register the service",
               _uri_is(register, "register registrar_uri")),
    ])


def _route(name: str, why: str, conditions: Sequence[str]) -> str:
    body = "".join(f"\tif ({c}) {{\n\t\treturn 1;\n\t}}\n" for c in conditions)
    return f"# {why}\nroute[{name}] {{\n{body}\treturn -1;\n}}"


def _uri_is(uri: str | None, what: str) -> list[str]:
    """The condition that the request URI names ``uri`` (scheme, user, host and port), if any."""
    if not uri:
        return []
    t = UriParts.parse(uri, what)
    user = "$rU == $null" if t.user is None else f"$rU == {_quote(t.user)}"
    return [f"$rz == {_quote(t.scheme)} && {user} && $(rd{{s.tolower}}) == {_quote(t.host)} && {_port_is(t.port)}"]


def _host_is(domain: str) -> str:
    """The condition that the request URI is a sip(s): URI on ``domain`` (host, or host:port), any user."""
    host, port = split_host_port(domain)
    on_port = "" if port is None else f" && {_port_is(port)}"
    return f'($rz == "sip" || $rz == "sips") && $(rd{{s.tolower}}) == {_quote(host.lower())}{on_port}'


#: the request URI names no port of its own and is a sips: URI
_SIPS_WITHOUT_PORT = '($rz == "sips" && $(ru{uri.port}) == "")'


def _port_is(port: int) -> str:
    """The condition that the request URI's port, defaulted as SIP does, is ``port``. Kamailio's $rp
    defaults ;transport=tls to 5061 but a sips: URI to 5060 (5.6), so that case is spelled out."""
    if port == SIP_TLS_PORT:
        return f"($rp == {port} || {_SIPS_WITHOUT_PORT})"
    if port == SIP_PORT:
        return f"($rp == {port} && !{_SIPS_WITHOUT_PORT})"
    return f"$rp == {port}"


def _define(name: str, value: str) -> str:
    """Numbers as #!substdef (they are needed inside strings too), the rest as #!define."""
    if value.isdigit():
        return f'#!substdef "!{name}!{value}!"'
    return f"#!define {name} {value}".rstrip()


def _quote(value: str) -> str:
    """A Kamailio script string literal."""
    if re.search(r'["\\\x00-\x1f]', value):
        raise SipError(f"the SIP front cannot quote {value!r} in its config")
    return f'"{value}"'


def _ere_literal(text: str) -> str:
    """``text`` as a POSIX extended regex matching itself (settings allow only [A-Za-z0-9 ._/-])."""
    return "".join(f"[{c}]" if c == "." else c for c in text)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def listen_addresses(host: str) -> list[str]:
    """The addresses the front listens on for ``host``: every IPv4 address of this machine for
    0.0.0.0, else ``host``; loopback (the workers' side) always, first."""
    if host != "0.0.0.0":
        return [host] if host == WORKER_SIDE_HOST else [WORKER_SIDE_HOST, host]
    try:
        # the kernel's local routes: an address line, then "/32 host LOCAL" under it
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    found: dict[str, None] = {WORKER_SIDE_HOST: None}
    last = None
    for line in lines:
        m = re.search(r"[|`]-- (\d+\.\d+\.\d+\.\d+)$", line)
        if m:
            last = m.group(1)
        elif "/32 host LOCAL" in line and last and not last.startswith("127."):
            found[last] = None
    return list(found)


# --------------------------------------------------------------------------- the process


@dataclass
class Front:
    """A running front; use through ``open_front``."""

    #: the front's address on the workers' side (127.0.0.1): their outbound proxy is host:port
    host: str
    #: the SIP port, the same on every address the front listens on
    port: int
    config_path: Path
    pid: int
    #: blocked requests by kind, as far as the front's log lines tell (suppressed ones included)
    blocks: collections.Counter[str] = field(default_factory=collections.Counter)
    #: SIGTERM sent: what Kamailio says while it goes down is not news
    stopping: bool = False
    _proc: asyncio.subprocess.Process | None = None

    @property
    def uri(self) -> str:
        """The service's SIP address through the front, e.g. sip:voicebot@127.0.0.1:5060."""
        return f"sip:{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def reset_workers(self, timeout_s: float = 5.0) -> None:
        """Put every worker back in the rotation now, e.g. once they have all started: until a
        probe finds them, workers that were still starting when the front did stay out of it."""
        kamcmd = shutil.which("kamcmd")
        if kamcmd is None:
            raise SipError("kamcmd not found: it comes with Kamailio (apt-get install kamailio)")
        proc = await asyncio.create_subprocess_exec(
            kamcmd, "-s", f"unix:{control_socket(self.config_path.parent)}", "dispatcher.reload",
            stdin=subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SipError(f"the SIP front did not reset its workers within {timeout_s:g} s") from None
        if proc.returncode != 0:
            raise SipError(f"the SIP front could not reset its workers: {out.decode(errors='replace').strip()}")


@contextlib.asynccontextmanager
async def open_front(settings: SipSettings, workers: Sequence[WorkerAddress], run_dir: Path, *,
                     options: FrontOptions = FrontOptions()) -> AsyncIterator[Front]:
    """Run Kamailio in front of ``workers`` until the block ends.

    Its config, dispatcher list and pid file go to ``run_dir``; its log lines to the
    "voicebot.sip.front" logger. Raises SipError (one line) when Kamailio is missing, rejects
    its config or does not answer an OPTIONS in time.
    """
    program = shutil.which(options.program)
    if program is None:
        raise SipError(f"{options.program} not found: the SIP front needs Kamailio (apt-get install kamailio)")
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _check_port_free, settings)
    config_path = run_dir / "kamailio.cfg"
    list_path = run_dir / "dispatcher.list"
    text = await loop.run_in_executor(
        None, functools.partial(render_front_config, settings, workers, dispatcher_list=list_path, options=options))
    await loop.run_in_executor(None, _write_files, run_dir, {config_path: text,
                                                             list_path: render_dispatcher_list(workers)})
    command = [program, "-DD", "-E", "-f", str(config_path), "-P", str(run_dir / "kamailio.pid"),
               "-Y", str(run_dir), "-w", str(run_dir), "-m", str(options.shm_mb), "-M", str(options.pkg_mb)]
    # Kamailio gets SIGTERM when this process dies
    prefix, preexec = die_with_parent()
    proc = await asyncio.create_subprocess_exec(
        *prefix, *command,
        stdin=subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        preexec_fn=preexec, start_new_session=True)
    front = Front(WORKER_SIDE_HOST, settings.port, config_path, proc.pid, _proc=proc)
    tail: collections.deque[str] = collections.deque(maxlen=40)
    reader = asyncio.ensure_future(_read_log(proc, front, tail))
    try:
        await _wait_ready(front, proc, settings, options, tail)
        log.info("SIP front (Kamailio, pid %d) on %s port %d, %d worker(s) behind it", proc.pid,
                 settings.host, settings.port, len(workers))
        yield front
    finally:
        front.stopping = True
        await _stop(proc, options.stop_timeout_s)
        try:
            await asyncio.wait_for(asyncio.shield(reader), 2.0)
        except TimeoutError:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


def _write_files(run_dir: Path, files: dict[Path, str]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path, text in files.items():
        # the config holds the digest auth hash: owner only
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)


async def _wait_ready(front: Front, proc: asyncio.subprocess.Process, settings: SipSettings,
                      options: FrontOptions, tail: collections.deque[str]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.start_timeout_s
    while True:
        if proc.returncode is not None:
            await asyncio.sleep(0.1)  # the last log lines
            raise SipError(f"kamailio (the SIP front) did not start: {_kamailio_error(tail)}")
        if settings.udp:
            status = await options_over_udp(front.host, front.port, timeout_s=0.3)
        else:
            status = await options_over_tcp(front.host, front.port, timeout_s=0.3)
        if status == 200 and proc.returncode is None:
            return
        if loop.time() > deadline:
            await _stop(proc, options.stop_timeout_s)
            raise SipError(f"kamailio (the SIP front) did not answer OPTIONS on port {front.port} within"
                           f" {options.start_timeout_s:g} s: {_kamailio_error(tail) or 'no error logged'}")
        await asyncio.sleep(0.1)


def _kamailio_error(tail: collections.deque[str]) -> str:
    """Kamailio's own line that says what is wrong (parse errors first), without its prefix."""
    lines = list(tail)
    for wanted in ("parse error", "CRITICAL", "ERROR"):
        for line in lines:
            if wanted in line:
                m = _LOG_LINE.match(line)
                return re.sub(r"^\w+\(\): ", "", (m.group(4) if m else line).strip())
    return lines[-1].strip() if lines else "it exited without a word"


async def _read_log(proc: asyncio.subprocess.Process, front: Front, tail: collections.deque[str]) -> None:
    assert proc.stdout is not None
    while True:
        raw = await proc.stdout.readline()
        if not raw:
            return
        line = raw.decode(errors="replace").rstrip()
        if not line:
            continue
        tail.append(line)
        _log_line(line, front)


def _log_line(line: str, front: Front) -> None:
    """One Kamailio log line into the "voicebot.sip.front" logger; blocks as one clear warning."""
    m = _LOG_LINE.match(line)
    level_name, source, text = (m.group(1), m.group(3) or "", m.group(4)) if m else ("INFO", "", line)
    ours = _OURS.search(text)
    if ours is None:
        quiet = front.stopping or source.startswith(_PARSER_FILES)
        level = logging.DEBUG if quiet else _LEVELS.get(level_name, logging.INFO)
        log.log(level, "kamailio: %s", text)
        return
    text = ours.group(1)
    block = _BLOCK.match(text)
    if block is None:
        log.log(logging.WARNING if level_name in ("WARNING", "ERROR") else logging.INFO, "%s", text)
        return
    kind, source, why = block.groups()
    more = _MORE.match(why)
    front.blocks[kind] += int(more.group(1)) if more else 1
    log.warning("blocked %s from %s: %s", kind, source, why)


async def _stop(proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    """SIGTERM (Kamailio stops its children), SIGKILL to its whole process group after ``timeout_s``."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        log.warning("kamailio (pid %d) did not stop within %g s: killing it", proc.pid, timeout_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # its own session (start_new_session): the group is Kamailio's main process and children
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


def _check_port_free(settings: SipSettings) -> None:
    """A clear error for a taken SIP port (Kamailio's UDP sockets would share it silently)."""
    host = settings.host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind, on in ((socket.SOCK_DGRAM, settings.udp), (socket.SOCK_STREAM, settings.tcp)):
        if not on:
            continue
        with socket.socket(family, kind) as s:
            try:
                s.bind((host.strip("[]"), settings.port))
            except OSError as e:
                proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
                raise SipError(f"the SIP front cannot listen on {host} {proto} port {settings.port}:"
                               f" {e.strerror}") from None


# --------------------------------------------------------------------------- probes


def options_request(host: str, port: int, *, transport: str = "UDP", local: tuple[str, int] = ("127.0.0.1", 0),
                    user_agent: str = "voicebot") -> tuple[bytes, str]:
    """An OPTIONS request for sip:host:port and its Call-ID."""
    call_id = secrets.token_hex(8)
    branch = "z9hG4bK" + secrets.token_hex(8)
    text = (f"OPTIONS sip:{_host(host)}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {_host(local[0])}:{local[1] or 9};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:probe@{_host(local[0])}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{_host(host)}:{port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"User-Agent: {user_agent}\r\n"
            f"Content-Length: 0\r\n\r\n")
    return text.encode(), call_id


async def options_over_udp(host: str, port: int, *, timeout_s: float) -> int | None:
    """The status code of the final answer to an OPTIONS over UDP, None when none came in time."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[int] = loop.create_future()

    class _Probe(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            m = re.match(rb"SIP/2\.0 (\d{3})", data)
            if m and int(m.group(1)) >= 200 and not answer.done():
                answer.set_result(int(m.group(1)))

    transport, _ = await loop.create_datagram_endpoint(_Probe, remote_addr=(host, port))
    try:
        local = transport.get_extra_info("sockname")
        request, _ = options_request(host, port, local=(local[0], local[1]))
        transport.sendto(request)
        return await asyncio.wait_for(answer, timeout_s)
    except (TimeoutError, OSError):
        return None
    finally:
        transport.close()


async def options_over_tcp(host: str, port: int, *, timeout_s: float) -> int | None:
    """Same over TCP (a front without UDP)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (TimeoutError, OSError):
        return None
    try:
        local = writer.get_extra_info("sockname")
        request, _ = options_request(host, port, transport="TCP", local=(local[0], local[1]))
        writer.write(request)
        await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout_s)
            m = re.match(rb"SIP/2\.0 (\d{3})", line)
            if not line:
                return None
            if m and int(m.group(1)) >= 200:
                return int(m.group(1))
    except (TimeoutError, OSError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
