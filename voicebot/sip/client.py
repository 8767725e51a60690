"""A test caller: dial a SIP URI, speak a WAV over real RTP, press keys, record the answer.

``voicebot call`` runs ``call_sip``. The WAV (any format the project reads) is
converted to 16 kHz PCM for PJSIP's file player; keys go out as RFC 4733
telephone-events (or SIP INFO) at the given seconds after the call is
answered; what the far end says is recorded to a 16 kHz WAV. The call ends
when the WAV has played (or when the far end hangs up).
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pjsua2 as pj

from voicebot.audio.wav import load_wav, write_wav
from voicebot.clock import LoopClock
from voicebot.sip.account import local_account_config
from voicebot.sip.endpoint import BRIDGE_RATE_HZ, EndpointConfig, SipEndpoint
from voicebot.sip.leg import LegHandle, PjLeg, pj_callback
from voicebot.sip.settings import SipError

log = logging.getLogger("voicebot.sip.client")

DTMF_METHODS = ("rfc4733", "info")
_DTMF_ITEM = re.compile(r"^\s*([0-9A-Da-d*#]+)\s*@\s*([0-9]+(?:\.[0-9]*)?)\s*$")


@dataclass(frozen=True, slots=True)
class CallPlan:
    uri: str
    play: Path
    record: Path | None = None
    #: (keys, seconds after answer), in any order
    dtmf: tuple[tuple[str, float], ...] = ()
    dtmf_method: str = "rfc4733"
    answer_timeout_s: float = 30.0
    #: silence after the WAV before hanging up (lets the jitter buffer empty)
    tail_s: float = 0.5
    #: the caller's own SIP user (the From header the far end sees)
    from_user: str = "voicebot-caller"
    bind_host: str = "127.0.0.1"


@dataclass(slots=True)
class CallResult:
    answered: bool = False
    status_code: int = 0
    reason: str = ""
    codec: str = ""
    #: seconds from answer to the end of the call
    duration_s: float = 0.0
    #: "caller" when the WAV ended first, "far_end" when the other side hung up
    ended_by: str = ""
    dtmf_sent: list[tuple[str, float]] = field(default_factory=list)
    recorded: Path | None = None


def parse_dtmf(spec: str) -> tuple[tuple[str, float], ...]:
    """'0@3.5,1@9' -> (('0', 3.5), ('1', 9.0)); a SipError names the bad part."""
    items = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = _DTMF_ITEM.match(part)
        if not m:
            raise SipError(f"--dtmf: {part!r} is not KEYS@SECONDS (keys 0-9 * # A-D, e.g. 0@3.5)")
        items.append((m.group(1).upper(), float(m.group(2))))
    return tuple(sorted(items, key=lambda kv: kv[1]))


class _Player(pj.AudioMediaPlayer):
    def __init__(self, on_eof: Callable[[], None]) -> None:
        super().__init__()
        self._on_eof = on_eof

    @pj_callback
    def onEof2(self) -> None:  # noqa: N802 - pjsua2's name
        self._on_eof()


class _Caller:
    """Owns the endpoint, account, call and media of one test call."""

    def __init__(self, plan: CallPlan, wav16: Path, progress: Callable[[str], None]) -> None:
        self.plan = plan
        self.wav16 = wav16
        self.progress = progress
        self.loop = asyncio.get_running_loop()
        self.endpoint = SipEndpoint(EndpointConfig(host=plan.bind_host, port=0, max_calls=2, log_level=1,
                                                   user_agent="voicebot-call"))
        self.wav_ended = asyncio.Event()
        self.handle = LegHandle(self.endpoint, self.loop, LoopClock(self.loop))
        # pjsua2 thread only
        self._account: Any = None
        self._legs: dict[int, PjLeg] = {}
        self._media: list[Any] = []

    # pjsua2 thread

    def _pj_dial(self) -> None:
        assert self.endpoint.address is not None
        self._account = self.endpoint.track(pj.Account())
        self._account.create(local_account_config(self.plan.from_user, self.plan.bind_host,
                                                  self.endpoint.address.port))
        leg = PjLeg(self._account, self.handle, self._legs, with_port=False)
        leg.media_hook = self._pj_connect_media
        prm = pj.CallOpParam(True)
        prm.opt.audioCount = 1
        prm.opt.videoCount = 0
        leg.makeCall(self.plan.uri, prm)
        leg.register()

    def _pj_connect_media(self, call_media: Any) -> None:
        if self._media:
            return  # already wired (a re-INVITE)
        player = self.endpoint.track(_Player(lambda: self.handle.post(self.wav_ended.set)))
        player.createPlayer(str(self.wav16), pj.PJMEDIA_FILE_NO_LOOP)
        player.startTransmit(call_media)
        self._media.append(player)
        if self.plan.record is not None:
            recorder = self.endpoint.track(pj.AudioMediaRecorder())
            recorder.createRecorder(str(self.plan.record))
            call_media.startTransmit(recorder)
            self._media.append(recorder)

    def _pj_send_dtmf(self, keys: str) -> None:
        leg = self.handle.pj
        if leg is None or leg.gone:
            raise SipError("the call is over")
        if self.plan.dtmf_method == "info":
            prm = pj.CallSendDtmfParam()
            prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO
            prm.digits = keys
            leg.sendDtmf(prm)
        else:
            leg.dialDtmf(keys)

    def _pj_close_media(self) -> None:
        # Destroying the recorder finishes its WAV header; not inside a callback, so at once.
        self._media.clear()
        if self._account is not None:
            self.endpoint.release_later(self._account)
            self._account = None

    # event loop

    async def run(self) -> CallResult:
        plan, h = self.plan, self.handle
        result = CallResult(recorded=plan.record)
        self.progress(f"dialing {plan.uri}")
        await self.endpoint.run(self._pj_dial)
        answered = await _wait_any([h.media_ready, h.disconnected], plan.answer_timeout_s)
        if not answered or h.disconnected.is_set():
            await h.hangup()
            await _wait_any([h.disconnected], 5.0)
            result.status_code, result.reason = h.status_code, h.reason or "no answer"
            result.recorded = None
            return result
        result.answered, result.codec = True, h.codec
        t0 = time.monotonic()
        self.progress(f"answered ({h.codec}); playing {plan.play}")
        keys = asyncio.ensure_future(self._send_keys(t0, result))
        try:
            await _wait_any([self.wav_ended, h.disconnected], None)
            if not h.disconnected.is_set():
                self.progress(f"the WAV has played ({time.monotonic() - t0:.1f} s): hanging up")
                await asyncio.sleep(plan.tail_s)
                result.ended_by = "caller"
                await h.hangup()
                await _wait_any([h.disconnected], 5.0)
            else:
                result.ended_by = "far_end"
                self.progress(f"the far end hung up after {time.monotonic() - t0:.1f} s ({h.reason})")
        finally:
            keys.cancel()
            await asyncio.gather(keys, return_exceptions=True)
        result.duration_s = time.monotonic() - t0
        result.status_code, result.reason = h.status_code, h.reason
        return result

    async def _send_keys(self, t0: float, result: CallResult) -> None:
        for keys, at_s in self.plan.dtmf:
            await asyncio.sleep(max(0.0, t0 + at_s - time.monotonic()))
            try:
                await self.endpoint.run(self._pj_send_dtmf, keys)
            except SipError as e:
                self.progress(f"DTMF {keys} not sent: {e}")
                return
            result.dtmf_sent.append((keys, time.monotonic() - t0))
            self.progress(f"sent DTMF {keys} ({self.plan.dtmf_method}) at {time.monotonic() - t0:.1f} s")


async def _wait_any(events: list[asyncio.Event], timeout_s: float | None) -> bool:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        return bool(done)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def place_call(plan: CallPlan, *, progress: Callable[[str], None] | None = None) -> CallResult:
    """Make one call as described; returns how it went. Bad input raises a one-line VoicebotError."""
    if not re.match(r"^sips?:", plan.uri, re.IGNORECASE):
        raise SipError(f"{plan.uri!r} is not a SIP URI (sip:user@host[:port])")
    if plan.dtmf_method not in DTMF_METHODS:
        raise SipError(f"DTMF method must be one of {', '.join(DTMF_METHODS)}, not {plan.dtmf_method!r}")
    say = progress or (lambda _msg: None)
    loop = asyncio.get_running_loop()
    audio = await loop.run_in_executor(None, lambda: load_wav(plan.play, sample_rate_hz=BRIDGE_RATE_HZ))
    if plan.record is not None:
        plan.record.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="voicebot-call-") as tmp:
        wav16 = Path(tmp) / "caller16k.wav"
        await loop.run_in_executor(None, write_wav, wav16, audio.samples, BRIDGE_RATE_HZ)
        caller = _Caller(plan, wav16, say)
        await loop.run_in_executor(None, caller.endpoint.start)
        try:
            return await caller.run()
        finally:
            try:
                await caller.endpoint.run(caller._pj_close_media)
            except SipError:
                pass
            await loop.run_in_executor(None, caller.endpoint.stop)


def call_sip(plan: CallPlan, *, progress: Callable[[str], None] | None = None) -> CallResult:
    """``place_call`` for code without an event loop."""
    return asyncio.run(place_call(plan, progress=progress))
