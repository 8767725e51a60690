"""The phone service: answers SIP calls and runs each through a CallSession.

Decisions (answer, busy, unavailable while draining) are taken on the event
loop; the pjsua2 thread only carries them out. Every call gets its own task,
tracked until it ends; a bridged transfer stays tracked until either side
hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pjsua2 as pj

from voicebot.audio.wav import write_wav
from voicebot.calls.report import CallReport
from voicebot.calls.tape import CallTape
from voicebot.calls.session import CallSession, SessionServices
from voicebot.clock import LoopClock
from voicebot.events import TransportClosing
from voicebot.metrics import CallMetrics
from voicebot.sip.account import ServiceAccount, local_account_config, registered_account_config
from voicebot.sip.endpoint import BoundAddress, EndpointConfig, SipEndpoint
from voicebot.sip.leg import LegHandle, PjLeg, bare_uri
from voicebot.sip.settings import SipError, SipSettings
from voicebot.sip.transport import SipTransport
from voicebot.storage.recorder import StoreRecorder

log = logging.getLogger("voicebot.sip")

#: how long an answered call may take to bring up its audio
MEDIA_WAIT_S = 10.0
#: a gap in caller audio this long is worth a warning
STALL_WARN_MS = 200.0
#: how long a call told that the service is closing may take to say so and hang up
CLOSING_GRACE_S = 15.0


class _HasServices:
    services: SessionServices


@dataclass(slots=True)
class ServiceCounters:
    answered: int = 0
    busy: int = 0
    unavailable: int = 0
    bridged: int = 0
    underruns: int = 0


@dataclass(slots=True)
class ActiveCall:
    handle: LegHandle
    session: CallSession | None = None
    transport: SipTransport | None = None
    #: the transfer target's leg, once bridged
    partner: LegHandle | None = None


class SipService:
    """Use through ``open_sip_service``."""

    def __init__(self, runtime: _HasServices, settings: SipSettings, *,
                 on_call_ended: Callable[[CallReport], None] | None = None,
                 recordings_dir: Path | None = None) -> None:
        settings.check()
        self.settings = settings
        #: a stereo WAV per call goes here (caller left, bot right); None: no recording
        self.recordings_dir = recordings_dir
        self._services = runtime.services
        recorder = runtime.services.recorder
        #: the store recorder's metrics get the calls' media figures too (None: replay, tests)
        self._metrics: CallMetrics | None = recorder.metrics if isinstance(recorder, StoreRecorder) else None
        self._on_call_ended = on_call_ended
        self._loop = asyncio.get_running_loop()
        self.endpoint = SipEndpoint(EndpointConfig(
            host=settings.host, port=settings.port, udp=settings.udp, tcp=settings.tcp,
            public_address=settings.public_address,
            max_calls=settings.call_slots, codec_ids=tuple(settings.codec_ids()),
            rtp_port=settings.rtp_port, rtp_port_range=settings.rtp_port_range, log_level=settings.log_level,
            user_agent="voicebot",
        ))
        self.address: BoundAddress | None = None
        self.counters = ServiceCounters()
        self.draining = False
        self._active: dict[int, ActiveCall] = {}
        self._tasks: set[asyncio.Task] = set()
        self._ids = iter(range(1, 1 << 62))
        # pjsua2-thread state
        self._legs: dict[int, PjLeg] = {}
        self._accounts: list[ServiceAccount] = []

    @property
    def active_calls(self) -> int:
        """Calls the service is handling now (in a session or bridged to the transfer target)."""
        return len(self._active)

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> BoundAddress:
        s = self.settings
        if s.capacity < s.max_calls:
            log.warning("sip max_calls is %d, but this PJSIP build holds %d calls (call_slots) and a call takes %d:"
                        " answering %d at once", s.max_calls, s.call_slots, s.legs_per_call, s.capacity)
        self.address = await self._loop.run_in_executor(None, self.endpoint.start)
        try:
            await self.endpoint.run(self._pj_create_accounts)
        except BaseException:
            await self._loop.run_in_executor(None, self.endpoint.stop)
            raise
        return self.address

    async def drain(self, timeout_s: float | None = None, *, polite: bool = True) -> None:
        """Refuse new calls (503) and let calls in progress finish; then end the rest.

        Calls still going after ``timeout_s`` are told the service is closing (the bot says so and
        hangs up, saving what the caller gave) when ``polite``; whatever is left is hung up.
        """
        self.draining = True
        timeout_s = self.settings.drain_timeout_s if timeout_s is None else timeout_s
        pending = set(self._tasks)
        if pending and timeout_s > 0:
            log.info("draining: waiting up to %g s for %d call(s)", timeout_s, len(self._active))
            _, pending = await asyncio.wait(pending, timeout=timeout_s)
        if pending and polite:
            closing = [c for c in self._active.values() if c.session is not None and c.partner is None]
            log.warning("draining: ending %d call(s) still going", len(closing))
            for call in closing:
                call.handle.items.put_nowait(TransportClosing(call.handle.clock_s()))
            _, pending = await asyncio.wait(pending, timeout=CLOSING_GRACE_S)
        if pending:
            log.warning("hanging up %d call(s)", len(self._active))
            for call in list(self._active.values()):
                call.handle.end_cause = "shutdown"
                await call.handle.hangup()
                if call.partner is not None:
                    await call.partner.hangup()
            await asyncio.wait(pending, timeout=10.0)

    async def serve_until(self, drain: asyncio.Event, now: asyncio.Event) -> None:
        """Answer calls until ``drain`` is set, then drain; ``now`` cuts the drain short."""
        await drain.wait()
        draining = asyncio.create_task(self.drain())
        cut_short = asyncio.create_task(now.wait())
        try:
            await asyncio.wait({draining, cut_short}, return_when=asyncio.FIRST_COMPLETED)
            if cut_short.done():
                await self.drain(0.0, polite=False)
            await draining
        finally:
            cut_short.cancel()
            await asyncio.gather(cut_short, return_exceptions=True)

    async def close(self) -> None:
        await self.drain(0.0, polite=False)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        with contextlib.suppress(SipError):
            await self.endpoint.run(self._pj_drop_accounts)
        await self._loop.run_in_executor(None, self.endpoint.stop)

    # ------------------------------------------------------------------ calls (event loop)

    def _new_handle(self) -> LegHandle:
        """Runs on the pjsua2 thread: nothing here touches the loop."""
        return LegHandle(self.endpoint, self._loop, LoopClock(self._loop), media_timeout_s=self.settings.media_timeout_s)

    def _on_incoming(self, handle: LegHandle) -> None:
        if self.draining:
            self.counters.unavailable += 1
            self._spawn(self._refuse(handle, 503, "Service Unavailable"))
        elif len(self._active) >= self.settings.capacity:
            self.counters.busy += 1
            log.warning("call from %s refused: %d calls in progress (the most at once: %d)", handle.remote_uri,
                        len(self._active), self.settings.capacity)
            self._spawn(self._refuse(handle, 486, "Busy Here"))
        else:
            key = next(self._ids)
            self._active[key] = ActiveCall(handle)
            self._spawn(self._serve(key))

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refuse(self, handle: LegHandle, code: int, reason: str) -> None:
        try:
            await handle.answer(code, reason)
        except SipError as e:
            log.debug("refusing a call: %s", e)

    async def _serve(self, key: int) -> None:
        call = self._active[key]
        handle = call.handle
        try:
            self.counters.answered += 1
            await handle.answer(200)
            if not await _first(handle.media_ready, handle.disconnected, MEDIA_WAIT_S) or handle.disconnected.is_set():
                log.warning("call %s from %s: no audio came up", handle.sip_call_id, handle.remote_uri)
                return
            log.info("call %s from %s: audio up (%s)", handle.sip_call_id, handle.remote_uri, handle.codec)
            tape = CallTape(SipTransport.sample_rate_hz) if self.recordings_dir is not None else None
            transport = SipTransport(handle, self.settings.transfer, bridge=lambda leg, uri: self._bridge(call, uri),
                                     tape=tape)
            session = CallSession(self._services, transport, handle.clock, name=bare_uri(handle.remote_uri))
            call.session, call.transport = session, transport
            try:
                report = await session.run()
            finally:
                if tape is not None:
                    await self._save_recording(session.report.call_id, tape)
            if self._on_call_ended is not None:
                self._on_call_ended(report)
            if transport.bridged and call.partner is not None:
                await _first(handle.disconnected, call.partner.disconnected, None)
        except SipError as e:
            log.warning("call %s: %s", handle.sip_call_id, e)
        except Exception:
            log.exception("call %s failed", handle.sip_call_id)
        finally:
            await handle.hangup()
            if call.partner is not None:
                await call.partner.hangup()
            self._active.pop(key, None)
            # The transport's bridge dialer refers back to the call: cut the cycle so the session
            # (and its recognizer stream) goes now, by reference count, on this thread.
            call.session = call.transport = None
            stats = handle.stats
            self.counters.underruns += stats.underruns
            if self._metrics is not None:
                self._metrics.audio_underruns(stats.underruns)
            log.info("call %s ended (%s): %d frames in, %d out, %d late, longest gap %.0f ms (caller audio %.0f ms)",
                     handle.sip_call_id, handle.end_cause or "bot", stats.frames_in, stats.frames_out,
                     stats.underruns, stats.max_gap_ms, stats.max_rx_gap_ms)
            if stats.max_rx_gap_ms > STALL_WARN_MS:
                log.warning("call %s: PJSIP's media clock stalled for %.0f ms (a thread held the GIL):"
                            " caller audio may have been lost", handle.sip_call_id, stats.max_rx_gap_ms)

    async def _save_recording(self, call_id: str, tape: CallTape) -> None:
        assert self.recordings_dir is not None
        path = self.recordings_dir / f"{call_id}.wav"

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_wav(path, tape.stereo(), tape.sample_rate_hz)

        try:
            await self._loop.run_in_executor(None, write)
            log.info("call %s recorded to %s", call_id, path)
        except OSError as e:
            log.error("call %s: recording not saved: %s", call_id, e)

    async def _bridge(self, call: ActiveCall, target_uri: str) -> bool:
        """Call the transfer target and join its audio with the caller's; False when that fails."""
        partner = LegHandle(self.endpoint, self._loop, LoopClock(self._loop))
        call.partner = partner
        try:
            await self.endpoint.run(self._pj_dial, partner, target_uri)
            timeout_s = self.settings.transfer.timeout_s
            if not await _first(partner.media_ready, partner.disconnected, timeout_s) or partner.disconnected.is_set():
                log.warning("bridge to %s: %s", target_uri, partner.reason or "no answer")
                await partner.hangup()
                return False
            await call.handle.bridge(partner)
        except SipError as e:
            log.warning("bridge to %s failed: %s", target_uri, e)
            await partner.hangup()
            return False
        self.counters.bridged += 1
        log.info("call %s bridged to %s", call.handle.sip_call_id, target_uri)
        return True

    # ------------------------------------------------------------------ pjsua2 thread

    def _pj_create_accounts(self) -> None:
        s = self.settings
        assert self.address is not None
        host = s.public_address or self.address.host
        local = self.endpoint.track(
            ServiceAccount(self.endpoint, self._legs, self._new_handle, self._on_incoming, "local"))
        media = dict(rtp_port=s.rtp_port, rtp_port_range=s.rtp_port_range,
                     media_address=s.media_address or s.public_address, via_front=s.front_address)
        local.create(local_account_config(s.user, host, self.address.port, **media), True)
        self._accounts.append(local)
        if s.register.registrar_uri:
            reg = self.endpoint.track(
                ServiceAccount(self.endpoint, self._legs, self._new_handle, self._on_incoming, "registered"))
            reg.create(registered_account_config(s.register, **media))
            self._accounts.append(reg)

    def _pj_drop_accounts(self) -> None:
        self.endpoint.release_later(*self._accounts)
        self._accounts.clear()

    def _pj_dial(self, handle: LegHandle, uri: str) -> None:
        leg = PjLeg(self._accounts[0], handle, self._legs, with_port=False)
        leg.makeCall(uri, _call_op())
        leg.register()

    def registration_state(self) -> bool | None:
        """True once registered, False after a failed attempt, None without registration or before an answer."""
        return self._accounts[1].registered if len(self._accounts) > 1 else None


def _call_op() -> Any:
    prm = pj.CallOpParam(True)
    prm.opt.audioCount = 1
    prm.opt.videoCount = 0
    return prm


async def _first(a: asyncio.Event, b: asyncio.Event, timeout_s: float | None) -> bool:
    """Wait until either event is set; False on timeout."""
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        return bool(done)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


@contextlib.asynccontextmanager
async def open_sip_service(runtime: _HasServices, settings: SipSettings, *,
                           on_call_ended: Callable[[CallReport], None] | None = None,
                           recordings_dir: Path | None = None) -> AsyncIterator[SipService]:
    """Listen for SIP calls until the block ends, then hang up what is left and stop.

    Call ``service.drain()`` first for a graceful end (new calls get 503 while calls in progress finish).
    """
    service = SipService(runtime, settings, on_call_ended=on_call_ended, recordings_dir=recordings_dir)
    await service.start()
    try:
        yield service
    finally:
        await service.close()
