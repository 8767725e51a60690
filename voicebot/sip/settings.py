"""Typed settings of the phone service (the ``[sip]`` table of the config file).

No pjsua2 here: the settings load and validate without the SIP stack.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from voicebot.errors import VoicebotError

#: codec names as the settings spell them -> pjsua2 codec ids
CODEC_IDS = {"G722": "G722/16000/1", "PCMU": "PCMU/8000/1", "PCMA": "PCMA/8000/1"}
TRANSFER_MODES = ("refer", "bridge")
#: User-Agent substrings of well-known SIP scanners (SIPVicious and friends), lower case
SCANNER_USER_AGENTS = ("friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sipscan", "vaxsipuseragent",
                       "pplsip", "sundayddr", "iwar", "sivus", "smap", "siparmyknife")
_SIP_USER = re.compile(r"[A-Za-z0-9._~+-]+")
_HOST = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")
_USER_AGENT_PART = re.compile(r"[A-Za-z0-9 ._/-]+")
_QUOTABLE = re.compile(r'[^"\\\x00-\x1f]*')
#: sip[s]:[user@]host[:port][;params][?headers]
SIP_URI = re.compile(r"(?P<scheme>sips?):(?:(?P<user>[^@;?]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:;?]+)"
                     r"(?::(?P<port>\d+))?(?P<params>[;?].*)?", re.IGNORECASE)
_TRANSPORT_PARAM = re.compile(r";transport=([^;?]*)", re.IGNORECASE)
#: the ports a SIP URI without one means (RFC 3261 §19.1.2): TLS (sips:, or ;transport=tls), else UDP/TCP
SIP_PORT = 5060
SIP_TLS_PORT = 5061


class SipError(VoicebotError):
    """The SIP side cannot start or do what was asked (one line)."""


@dataclass(frozen=True, slots=True)
class SipRegistration:
    """Registration to a PBX with digest auth; no registrar means no registration."""

    #: e.g. "sip:pbx.example.org" or "sip:10.0.0.5:5060;transport=tcp"
    registrar_uri: str | None = None
    username: str = ""
    password: str = ""
    #: "*" answers a challenge from any realm
    realm: str = "*"
    #: the account's address of record; default sip:<username>@<registrar host>
    id_uri: str | None = None
    #: the Contact the registrar sends calls to; default: the SIP front's public address and port
    contact_uri: str | None = None
    expires_s: int = 300


@dataclass(frozen=True, slots=True)
class SipTransferSettings:
    #: refer: blind transfer (REFER, the caller's side dials the target);
    #: bridge: the service calls the target and joins the two legs
    mode: str = "refer"
    #: where transferred callers go, e.g. "sip:agents@pbx.example.org"; none: transfers just hang up
    target_uri: str | None = None
    #: how long the target may take to answer (bridge) or the transfer to be accepted (refer)
    timeout_s: float = 30.0
    #: hosts ("pbx.example.org") or host:port ("10.0.0.7:5070") the SIP URIs of agents taking callers
    #: from the queue may name: a caller is handed to an agent's URI only on one of these, and the
    #: front lets a worker call out (bridge) only there, to the target and to the registrar; none:
    #: no agent can be connected (the service warns at start)
    agent_domains: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise SipError (one line) on a transfer setting that cannot work."""
        if self.mode not in TRANSFER_MODES:
            raise SipError(f"sip transfer mode must be refer or bridge, not {self.mode!r}")
        if self.target_uri and not self.target_uri.lower().startswith(("sip:", "sips:")):
            raise SipError(f"sip transfer target_uri must be a sip: URI, not {self.target_uri!r}")
        for domain in self.agent_domains:
            host, port = split_host_port(domain)
            if not _HOST.fullmatch(host) or (port is not None and not 0 < port < 65536):
                raise SipError(f"sip transfer agent_domains: {domain!r} is not a host name or address,"
                               " optionally with :port")

    def admits_agent(self, uri: str) -> bool:
        """Whether an agent's ``uri`` names one of ``agent_domains`` (the same test the front makes)."""
        parts = sip_uri_parts(uri)
        if parts is None:
            return False
        _, host, port = parts
        for domain in self.agent_domains:
            allowed_host, allowed_port = split_host_port(domain)
            if host == allowed_host.lower() and allowed_port in (None, port):
                return True
        return False


def split_host_port(domain: str) -> tuple[str, int | None]:
    """ "pbx.example.org" -> ("pbx.example.org", None); "10.0.0.7:5070" -> ("10.0.0.7", 5070); "[::1]:5070" too."""
    m = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(\d+))?", domain.strip())
    if m is None:
        return domain, None
    return m.group(1), int(m.group(2)) if m.group(2) else None


def sip_uri_parts(uri: str) -> tuple[str, str, int] | None:
    """(scheme, lower-case host, port) of a sip:/sips: URI, the port defaulting as SIP does; None if it is none."""
    m = SIP_URI.fullmatch(uri.strip().strip("<>"))
    if m is None:
        return None
    scheme, host, port = m["scheme"].lower(), m["host"].lower(), m["port"]
    return scheme, host, int(port) if port else default_sip_port(scheme, m["params"] or "")


def default_sip_port(scheme: str, params: str = "") -> int:
    """The port of a URI that names none: 5061 over TLS (a sips: URI, or ``;transport=tls`` among its
    ``params``, the part after the host and port), else 5060 (RFC 3261 §19.1.2)."""
    transport = _TRANSPORT_PARAM.search(params.split("?", 1)[0])
    tls = scheme.lower() == "sips" or (transport is not None and transport.group(1).lower() == "tls")
    return SIP_TLS_PORT if tls else SIP_PORT


@dataclass(frozen=True, slots=True)
class SipSecuritySettings:
    """What the SIP front (Kamailio, see voicebot/sip/front.py) lets through to the workers.

    Blocked requests are logged on "voicebot.sip.front", once per source, kind and
    ``block_log_interval_s``.
    """

    #: user parts an INVITE may call, besides ``SipSettings.user``; any other gets 404
    users: tuple[str, ...] = ("voicebot",)
    #: host names or addresses an INVITE's request URI may name besides the front's own
    #: addresses and ``public_address`` (e.g. "voice.example.org"); any other gets 403
    domains: tuple[str, ...] = ()
    #: digest authentication of inbound INVITEs, on when set: no credentials get a 401
    #: challenge, wrong ones 403 (the front's config holds only MD5(username:realm:password))
    auth_username: str = ""
    auth_password: str = ""
    #: the realm the challenge names (phones show it when asking for credentials)
    auth_realm: str = "voicebot"
    #: requests whose User-Agent contains one of these (in any case) are dropped unanswered
    scanner_user_agents: tuple[str, ...] = SCANNER_USER_AGENTS
    #: requests one source address may send per interval (fixed windows); more are dropped
    #: unanswered until the window ends
    rate_limit_requests: int = 100
    rate_limit_interval_s: int = 10
    #: sources never rate limited (a trunk or PBX that sends every call), addresses or networks
    rate_limit_exempt: tuple[str, ...] = ()
    #: one log line per blocked source and kind in this many seconds, then a count of the rest
    block_log_interval_s: int = 60

    @property
    def auth(self) -> bool:
        return bool(self.auth_username)

    def check(self) -> None:
        """Raise SipError (one line) on a setting the front cannot use."""
        for user in self.users:
            if not _SIP_USER.fullmatch(user):
                raise SipError(f"sip security users: {user!r} is not a SIP user part (letters, digits, . _ ~ + -)")
        for host in self.domains:
            if not _HOST.fullmatch(host):
                raise SipError(f"sip security domains: {host!r} is not a host name or address")
        for agent in self.scanner_user_agents:
            if not _USER_AGENT_PART.fullmatch(agent):
                raise SipError(f"sip security scanner_user_agents: {agent!r} may only have letters, digits,"
                               " spaces and . _ / -")
        for source in self.rate_limit_exempt:
            try:
                ipaddress.ip_network(source, strict=False)
            except ValueError:
                raise SipError(f"sip security rate_limit_exempt: {source!r} is not an address or network") from None
        if bool(self.auth_username) != bool(self.auth_password):
            raise SipError("sip security auth needs both auth_username and auth_password")
        for what, value in (("auth_username", self.auth_username), ("auth_realm", self.auth_realm)):
            if not _QUOTABLE.fullmatch(value):
                raise SipError(f"sip security {what} may not hold quotes, backslashes or control characters")
        if not self.auth_realm:
            raise SipError("sip security auth_realm may not be empty")
        if self.rate_limit_requests < 1 or self.rate_limit_interval_s < 1:
            raise SipError("sip security rate_limit_requests and rate_limit_interval_s must be at least 1, not"
                           f" {self.rate_limit_requests} and {self.rate_limit_interval_s}")
        if self.block_log_interval_s < 1:
            raise SipError(f"sip security block_log_interval_s must be at least 1, not {self.block_log_interval_s}")


@dataclass(frozen=True, slots=True)
class SipSettings:
    #: address the SIP transports bind to ("0.0.0.0": every interface)
    host: str = "0.0.0.0"
    #: SIP port for UDP and TCP (0: any free port, for tests)
    port: int = 5060
    udp: bool = True
    tcp: bool = True
    #: address put in Contact and SDP when it differs from ``host`` (NAT, 0.0.0.0 binds)
    public_address: str | None = None
    #: address put in the SDP for RTP when it differs from this machine's (NAT); unset: public_address
    media_address: str | None = None
    #: "host:port" of the SIP front this endpoint answers behind (the service sets it for its workers):
    #: calls and registrations the endpoint makes go out through the front
    front_address: str | None = None
    #: user part of the service's own SIP address
    user: str = "voicebot"
    #: first RTP port (0: any) and how many ports after it may be used
    rtp_port: int = 4000
    rtp_port_range: int = 1000
    #: calls handled at once by the whole service; more get 486 Busy Here
    max_calls: int = 20
    #: processes answering calls behind the SIP front (each its own PJSIP with call_slots calls);
    #: unset: as many as max_calls needs; 0: PJSIP in the service process itself on ``port``, without
    #: the front (at most call_slots calls and none of the front's SIP-side protection: development only)
    workers: int | None = None
    #: calls PJSIP itself can hold at once (PJSUA_MAX_CALLS, fixed when PJSIP is compiled: the
    #: pjsua2-python wheel has 4); a bridged transfer takes two
    call_slots: int = 4
    #: a caller whose RTP stops this long is treated as having hung up
    media_timeout_s: float = 20.0
    #: codecs offered and accepted, preferred first (G722, PCMU, PCMA)
    codecs: str = "G722,PCMU,PCMA"
    #: how long graceful drain waits for calls to end before hanging them up
    drain_timeout_s: float = 60.0
    #: pjsua2 log level (0-6) passed to the "voicebot.sip.pjsua" logger
    log_level: int = 1
    register: SipRegistration = field(default_factory=SipRegistration)
    transfer: SipTransferSettings = field(default_factory=SipTransferSettings)
    #: what the SIP front in front of the workers lets through
    security: SipSecuritySettings = field(default_factory=SipSecuritySettings)

    def codec_ids(self) -> list[str]:
        """pjsua2 codec ids in order of preference; raises SipError on an unknown name."""
        names = [c.strip().upper() for c in self.codecs.split(",") if c.strip()]
        unknown = [n for n in names if n not in CODEC_IDS]
        if unknown or not names:
            raise SipError(f"sip codecs must be a list of {', '.join(CODEC_IDS)}, not {self.codecs!r}")
        return [CODEC_IDS[n] for n in names]

    @property
    def legs_per_call(self) -> int:
        """PJSIP call slots one call may need: two when transfers bridge through the service."""
        bridges = self.transfer.target_uri or self.transfer.agent_domains
        return 2 if self.transfer.mode == "bridge" and bridges else 1

    @property
    def capacity(self) -> int:
        """Calls one PJSIP endpoint answers at once: max_calls, as far as its call slots allow."""
        return max(1, min(self.max_calls, self.call_slots // self.legs_per_call))

    @property
    def worker_count(self) -> int:
        """Call-answering processes behind the front (0: none, PJSIP runs in the service process)."""
        if self.workers is not None:
            return self.workers
        per_worker = max(1, self.call_slots // self.legs_per_call)
        return max(1, -(-self.max_calls // per_worker))

    def check(self) -> None:
        """Raise SipError (one line) on a setting that cannot work."""
        self.codec_ids()
        if not 0 <= self.port <= 65535:
            raise SipError(f"sip port must be 0-65535, not {self.port}")
        if not (self.udp or self.tcp):
            raise SipError("sip needs at least one of udp and tcp")
        if self.workers is not None and self.workers < 0:
            raise SipError(f"sip workers must be 0 or more, not {self.workers}")
        if self.max_calls < 1:
            raise SipError(f"sip max_calls must be at least 1, not {self.max_calls}")
        if self.call_slots < self.legs_per_call:
            raise SipError(f"sip call_slots must be at least {self.legs_per_call}, not {self.call_slots}")
        if self.media_timeout_s <= 0:
            raise SipError(f"sip media_timeout_s must be positive, not {self.media_timeout_s}")
        self.transfer.check()
        self.security.check()
        registrar = self.register.registrar_uri
        if registrar and not registrar.lower().startswith(("sip:", "sips:")):
            raise SipError(f"sip register registrar_uri must be a sip: URI, not {registrar!r}")
        if self.register.registrar_uri and not self.register.username:
            raise SipError("sip register needs a username with its registrar_uri")
