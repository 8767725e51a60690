"""SIP accounts: the local one that answers INVITEs sent straight to the service,
and optionally one registered to a PBX with digest auth.

``onIncomingCall`` runs on the pjsua2 thread. It only wraps the new call in a
PjLeg (so the Call object is owned from its first moment) and posts it to the
event loop, where the service decides to answer, refuse or send busy.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable

import pjsua2 as pj

from voicebot.sip.endpoint import SipEndpoint
from voicebot.sip.leg import LegHandle, PjLeg, pj_callback
from voicebot.sip.settings import SipRegistration

log = logging.getLogger("voicebot.sip")

_VIA = re.compile(r"^(?:Via|v)\s*:\s*SIP/2\.0/(\w+)", re.IGNORECASE | re.MULTILINE)

#: makes the handle for a new inbound call (runs on the pjsua2 thread: no asyncio calls)
HandleFactory = Callable[[], LegHandle]
#: runs on the loop with the handle of a new inbound call
IncomingHandler = Callable[[LegHandle], None]


class ServiceAccount(pj.Account):
    """Create and delete on the pjsua2 thread."""

    def __init__(self, endpoint: SipEndpoint, legs: dict[int, PjLeg], new_handle: HandleFactory,
                 on_incoming: IncomingHandler, name: str) -> None:
        super().__init__()
        self._endpoint = endpoint
        self._legs = legs
        self._new_handle = new_handle
        self._on_incoming = on_incoming
        self.name = name
        self.registered: bool | None = None
        self.on_reg_state: Callable[[int, str], None] | None = None

    @pj_callback
    def onIncomingCall(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        handle = self._new_handle()
        rdata = prm.rdata
        via = _VIA.search(rdata.wholeMsg)
        handle.sip_transport = via.group(1).upper() if via else ""
        PjLeg(self, handle, self._legs, call_id=prm.callId)
        log.info("incoming call %s from %s over %s (%s account)", handle.sip_call_id, handle.remote_uri,
                 handle.sip_transport or "?", self.name)
        handle.post(self._on_incoming, handle)

    @pj_callback
    def onRegState(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        ok = 200 <= prm.code < 300
        self.registered = ok and prm.expiration > 0
        level = logging.INFO if ok else logging.WARNING
        log.log(level, "registration (%s): %d %s, expires in %d s", self.name, prm.code, prm.reason, prm.expiration)
        if self.on_reg_state is not None:
            self.on_reg_state(prm.code, prm.reason)


def local_account_config(user: str, host: str, port: int, *, rtp_port: int = 0, rtp_port_range: int = 0,
                         media_address: str | None = None, via_front: str | None = None) -> Any:
    """The account INVITEs sent straight to us land on (no registration); behind the front, calls we
    make (a bridged transfer) go out through it."""
    cfg = pj.AccountConfig()
    cfg.idUri = f"sip:{user}@{_host_port(host, port)}"
    if via_front:
        cfg.sipConfig.proxies.append(f"sip:{via_front};lr")
    _media_ports(cfg, rtp_port, rtp_port_range, media_address)
    return cfg


def registered_account_config(reg: SipRegistration, *, rtp_port: int = 0, rtp_port_range: int = 0,
                              media_address: str | None = None, via_front: str | None = None) -> Any:
    """An account that registers to ``reg.registrar_uri`` and answers its digest challenge.

    Behind the SIP front (``via_front``, its "host:port"), the registration goes out through the
    front; its contact (``reg.contact_uri``) names the front, so the PBX's calls reach any worker.
    """
    assert reg.registrar_uri
    cfg = pj.AccountConfig()
    cfg.idUri = reg.id_uri or f"sip:{reg.username}@{registrar_host(reg.registrar_uri)}"
    cfg.regConfig.registrarUri = reg.registrar_uri
    cfg.regConfig.timeoutSec = reg.expires_s
    cfg.regConfig.retryIntervalSec = 30
    cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", reg.realm or "*", reg.username, 0, reg.password))
    if via_front:
        cfg.sipConfig.proxies.append(f"sip:{via_front};lr")
    if reg.contact_uri:
        cfg.sipConfig.contactForced = f"<{reg.contact_uri}>"
    _media_ports(cfg, rtp_port, rtp_port_range, media_address)
    return cfg


def registrar_host(uri: str) -> str:
    """'sip:pbx.example.org:5060;transport=tcp' -> 'pbx.example.org'."""
    m = re.match(r"sips?:(?:[^@]*@)?(\[[^\]]+\]|[^:;>]+)", uri, re.IGNORECASE)
    return m.group(1) if m else uri


def _host_port(host: str, port: int) -> str:
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _media_ports(cfg: Any, rtp_port: int, rtp_port_range: int, media_address: str | None) -> None:
    cfg.mediaConfig.transportConfig.port = rtp_port
    cfg.mediaConfig.transportConfig.portRange = rtp_port_range
    if media_address:
        # the address callers send RTP to, put in the SDP (NAT, or SIP bound to loopback behind the front)
        cfg.mediaConfig.transportConfig.publicAddress = media_address
