"""One SIP call leg: the pjsua2 Call, its media port, and a handle for asyncio.

``PjLeg`` is the pjsua2 side and lives on the pjsua2 thread. Its callbacks only
stamp the time and post to the event loop with ``call_soon_threadsafe``.
``LegHandle`` is the asyncio side: queues and events fed by those posts, and
coroutines that ask the pjsua2 thread to act on the call.

The known pjsua2 pitfall is a Call object destroyed at the wrong moment (by
the garbage collector inside a callback, or on an unregistered thread), which
crashes the process. So the endpoint keeps every PjLeg in its ``legs`` table
from creation until its DISCONNECTED state has been handled, and then drops
it on the pjsua2 thread outside the callback (``release_later``). The handle
holds no pjsua2 object of its own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import pjsua2 as pj

from voicebot.calls.speaker import Speaker
from voicebot.calls.tape import CallTape
from voicebot.clock import Clock
from voicebot.events import FRAME_MS, AudioFrame, DtmfTone, TransportHangup, TransportItem
from voicebot.sip.endpoint import BRIDGE_RATE_HZ, SipEndpoint
from voicebot.sip.media import FramePort, MediaStats
from voicebot.sip.settings import SipError

log = logging.getLogger("voicebot.sip")

FRAME_S = FRAME_MS / 1000
_SIP_USER = re.compile(r"<?sips?:([^@;>]+)@", re.IGNORECASE)
_SIP_URI = re.compile(r"<(sips?:[^>]+)>|(sips?:\S+)", re.IGNORECASE)


def caller_id_from(remote_uri: str) -> str:
    """The user part of a From/remote URI ('"Ann" <sip:+35840123@pbx>' -> '+35840123'); else the URI."""
    m = _SIP_USER.search(remote_uri)
    return m.group(1) if m else remote_uri.strip()


def bare_uri(remote_uri: str) -> str:
    m = _SIP_URI.search(remote_uri)
    return (m.group(1) or m.group(2)) if m else remote_uri.strip()


def pj_callback(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An exception escaping a pjsua2 callback would vanish inside SWIG: log it instead."""

    @functools.wraps(fn)
    def guarded(*args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001 - nothing above this frame would see it
            # As text: a traceback kept by a log handler would keep the Call in its frames alive.
            log.error("pjsua2 callback %s failed:\n%s", fn.__name__, traceback.format_exc())
            return None

    return guarded


@dataclass(frozen=True, slots=True)
class TransferResult:
    ok: bool
    status_code: int
    reason: str


class LegHandle:
    """The event loop's view of one call leg. Every ``_on_*`` method runs on the loop."""

    def __init__(self, endpoint: SipEndpoint, loop: asyncio.AbstractEventLoop, clock: Clock,
                 *, media_timeout_s: float | None = None) -> None:
        self.endpoint = endpoint
        self.loop = loop
        #: the call's session clock; ``now_s`` is safe on any thread (monotonic time minus a start)
        self.clock = clock
        self.clock_s = clock.now_s
        self.media_timeout_s = media_timeout_s
        self.items: asyncio.Queue[TransportItem] = asyncio.Queue()
        self.media_ready = asyncio.Event()
        self.confirmed = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.remote_uri = ""
        self.sip_call_id = ""
        #: UDP or TCP: how the INVITE came
        self.sip_transport = ""
        self.status_code = 0
        self.reason = ""
        self.end_cause = ""
        self.stats = MediaStats()
        self.codec = ""
        self._transfer: asyncio.Future[TransferResult] | None = None
        self._audio_t0: float | None = None
        self._frames = 0
        self._ended = False
        self.pj: PjLeg | None = None  # touched on the pjsua2 thread only

    # ------------------------------------------------------------------ posted from PJSIP threads

    def post(self, method: Callable[..., None], *args: Any) -> None:
        """From any PJSIP thread: run ``method(*args)`` on the loop (dropped once the loop is closed)."""
        try:
            self.loop.call_soon_threadsafe(method, *args)
        except RuntimeError:
            pass

    def _on_audio(self, pcm: bytes, at_s: float) -> None:
        if self._ended:
            return
        if self._audio_t0 is None:
            self._audio_t0 = at_s - FRAME_S
        start_s = self._audio_t0 + self._frames * FRAME_S
        self._frames += 1
        self.items.put_nowait(AudioFrame(pcm, BRIDGE_RATE_HZ, start_s))

    def _on_dtmf(self, digit: str, at_s: float, method: str) -> None:
        log.debug("call %s: a key press (%s)", self.sip_call_id, method)  # the digit may be a PIN: not logged
        if not self._ended:
            self.items.put_nowait(DtmfTone(digit, at_s))

    def _on_confirmed(self) -> None:
        self.confirmed.set()

    def _on_media(self, codec: str) -> None:
        self.codec = codec
        self.media_ready.set()

    def _on_transfer_status(self, code: int, reason: str, final: bool) -> None:
        log.info("call %s: transfer status %d %s%s", self.sip_call_id, code, reason, " (final)" if final else "")
        fut = self._transfer
        if fut is None or fut.done():
            return
        if final or code >= 300:
            fut.set_result(TransferResult(200 <= code < 300, code, reason))

    def _on_disconnected(self, code: int, reason: str, cause: str, stats: MediaStats, at_s: float) -> None:
        self.status_code, self.reason, self.stats = code, reason, stats
        self.end_cause = self.end_cause or cause
        if not self._ended:
            self._ended = True
            self.items.put_nowait(TransportHangup(at_s, self.end_cause))
        self.disconnected.set()
        self.confirmed.set()  # wake anyone still waiting for an answer
        if self._transfer is not None and not self._transfer.done():
            self._transfer.set_result(TransferResult(False, code, f"call ended: {reason}"))

    def _on_media_timeout(self, silent_s: float) -> None:
        log.warning("call %s: no RTP for %.1f s: treating it as a hangup", self.sip_call_id, silent_s)
        self.end_cause = "media_timeout"

    # ------------------------------------------------------------------ called on the loop

    def attach(self, speaker: Speaker, tape: CallTape | None = None) -> None:
        self.endpoint.submit(lambda: self.pj and self.pj.port and self.pj.port.attach(speaker, tape))

    async def answer(self, code: int = 200, reason: str = "") -> None:
        await self.endpoint.run(self._pj_answer, code, reason)

    async def hangup(self, code: int = 0, reason: str = "") -> None:
        """End the call (BYE, CANCEL or a final answer, as its state needs); a no-op once it is over."""
        if self.disconnected.is_set():
            return
        try:
            await self.endpoint.run(self._pj_hangup, code, reason)
        except SipError as e:
            log.debug("hangup: %s", e)

    async def blind_transfer(self, target_uri: str, timeout_s: float) -> TransferResult:
        """REFER the far end to ``target_uri``; wait for the final NOTIFY (or REFER failure)."""
        self._transfer = self.loop.create_future()
        try:
            await self.endpoint.run(self._pj_xfer, target_uri)
        except SipError as e:
            return TransferResult(False, 0, str(e))
        try:
            return await asyncio.wait_for(asyncio.shield(self._transfer), timeout_s)
        except TimeoutError:
            return TransferResult(False, 408, f"no final transfer status within {timeout_s:g} s")

    async def bridge(self, other: "LegHandle") -> None:
        """Join this call's audio with ``other``'s in the conference bridge; the bot's port leaves."""
        await self.endpoint.run(self._pj_bridge, other)

    # ------------------------------------------------------------------ pjsua2 thread

    def _pj_answer(self, code: int, reason: str) -> None:
        leg = self.pj
        if leg is None:
            raise SipError("the call is gone")
        prm = pj.CallOpParam()
        prm.statusCode = code
        if reason:
            prm.reason = reason
        leg.answer(prm)

    def _pj_hangup(self, code: int, reason: str) -> None:
        leg = self.pj
        if leg is None or leg.gone:
            return
        prm = pj.CallOpParam()
        prm.statusCode = code
        if reason:
            prm.reason = reason
        leg.hangup(prm)

    def _pj_xfer(self, target_uri: str) -> None:
        leg = self.pj
        if leg is None or leg.gone:
            raise SipError("the call is gone")
        leg.xfer(target_uri, pj.CallOpParam(True))

    def _pj_bridge(self, other: "LegHandle") -> None:
        a, b = self.pj, other.pj
        if a is None or b is None or a.gone or b.gone:
            raise SipError("a call to bridge is gone")
        am, bm = a.audio_media(), b.audio_media()
        if am is None or bm is None:
            raise SipError("a call to bridge has no audio")
        for leg, media in ((a, am), (b, bm)):
            if leg.port is not None:
                leg.port.detach()
                leg.port.stopTransmit(media)
                media.stopTransmit(leg.port)
        am.startTransmit(bm)
        bm.startTransmit(am)


class PjLeg(pj.Call):
    """The pjsua2 Call of one leg. Create, use and drop on the pjsua2 thread only."""

    def __init__(self, account: Any, handle: LegHandle, legs: dict[int, "PjLeg"], *,
                 call_id: int = pj.PJSUA_INVALID_ID, with_port: bool = True) -> None:
        super().__init__(account, call_id)
        self.handle = handle
        self._legs = legs
        self.gone = False
        self.port: FramePort | None = None
        #: wires the call's audio when there is no FramePort (the test caller's player and recorder)
        self.media_hook: Callable[[Any], None] | None = None
        self._remove_hook: Callable[[], None] | None = None
        self._rx_packets = -1
        self._rx_changed_at = time.monotonic()
        handle.pj = self
        handle.endpoint.track(self)
        if with_port:
            self.port = handle.endpoint.track(FramePort(f"leg{call_id}", self._audio_in, handle.clock_s))
        if call_id != pj.PJSUA_INVALID_ID:
            self.register()

    def register(self) -> None:
        """Keep this leg alive in the endpoint's table until DISCONNECTED is handled."""
        self._legs[self.getId()] = self
        info = self.getInfo()
        self.handle.remote_uri = info.remoteUri
        self.handle.sip_call_id = info.callIdString
        if self.handle.media_timeout_s:
            self._remove_hook = self.handle.endpoint.add_hook(self._check_media)

    def audio_media(self) -> Any | None:
        # Hold every SWIG temporary in a name: a member read off a freed temporary is garbage.
        info = self.getInfo()
        for i, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                return self.getAudioMedia(i)
        return None

    # callbacks: PJSIP threads; they only post

    def _audio_in(self, pcm: bytes) -> None:
        self.handle.post(self.handle._on_audio, pcm, self.handle.clock_s())

    @pj_callback
    def onCallState(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        info = self.getInfo()
        h = self.handle
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            h.post(h._on_confirmed)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.gone = True
            cause = "caller" if info.lastStatusCode in (200, 0) else f"sip_{info.lastStatusCode}"
            stats = MediaStats()
            if self.port is not None:
                self.port.detach()
                stats = self.port.stats
            h.post(h._on_disconnected, info.lastStatusCode, info.lastReason, cause, stats, h.clock_s())
            if self._remove_hook is not None:
                self._remove_hook()
                self._remove_hook = None
            # Not deleted here, inside the callback: dropped on the next turn of the pjsua2 loop.
            # Every reference cycle is cut first, so nothing is left for the garbage collector to
            # destroy later on whatever thread it runs.
            port, self.port = self.port, None
            self._legs.pop(info.id, None)
            h.endpoint.release_later(self, port)
            h.pj = None
            self.media_hook = None

    @pj_callback
    def onCallMediaState(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        media = self.audio_media()
        if media is None or self.gone:
            return
        if self.port is None:
            if self.media_hook is not None:
                self.media_hook(media)
            self.handle.post(self.handle._on_media, self._codec())
            return
        media.startTransmit(self.port)
        self.port.startTransmit(media)
        self.port.receiving = True
        self.handle.post(self.handle._on_media, self._codec())

    def _codec(self) -> str:
        try:
            info = self.getStreamInfo(0)
            return f"{info.codecName}/{info.codecClockRate}"
        except pj.Error:
            return ""

    @pj_callback
    def onDtmfDigit(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        method = "SIP INFO" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "RFC 4733"
        self.handle.post(self.handle._on_dtmf, prm.digit, self.handle.clock_s(), method)

    @pj_callback
    def onCallTransferStatus(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        self.handle.post(self.handle._on_transfer_status, prm.statusCode, prm.reason, prm.finalNotify)

    @pj_callback
    def onCallTransferRequest(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        # The service calls only its configured transfer target: a REFER from outside is declined.
        prm.statusCode = 603

    @pj_callback
    def onCallRedirected(self, prm: Any) -> int:  # noqa: N802 - pjsua2's name
        return pj.PJSIP_REDIRECT_REJECT

    @pj_callback
    def onCallReplaceRequest(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        prm.statusCode = 403

    # housekeeping: pjsua2 thread

    def _check_media(self) -> None:
        """Hang up when no RTP has arrived for the media timeout (only once media is up)."""
        if self.gone or self.port is None or not self.port.receiving:
            return
        try:
            stat = self.getStreamStat(0)
            rtcp = stat.rtcp
            rx = rtcp.rxStat
            packets = rx.pkt
        except pj.Error:
            return
        now = time.monotonic()
        if packets != self._rx_packets:
            self._rx_packets, self._rx_changed_at = packets, now
            return
        silent_s = now - self._rx_changed_at
        timeout_s = self.handle.media_timeout_s
        if timeout_s and silent_s >= timeout_s:
            self.handle.post(self.handle._on_media_timeout, silent_s)  # posted before DISCONNECTED's
            prm = pj.CallOpParam()
            prm.statusCode = 408
            self.hangup(prm)
