"""The process's one pjsua2 Endpoint, living on a thread of its own.

pjsua2 objects are created, called and destroyed on that thread only. Other
threads hand it work with ``submit`` (a concurrent future) or ``run`` (awaitable
from asyncio). The thread polls SIP events itself (``threadCnt = 0``), so SIP
callbacks run there too, between commands; media callbacks (frames, RFC 4733
digits) run on PJSIP's media and clock threads. Callbacks never run project
logic: they pass events on with ``loop.call_soon_threadsafe``.

Objects whose lifetime the C++ side may still need (a Call whose DISCONNECTED
callback is running, a media port the conference bridge is reading) are
released with ``release_later``: their last reference is dropped on this thread
on the next turn of its loop, outside any callback, never by Python's garbage
collector on some other thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import gc
import logging
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import pjsua2 as pj

from voicebot.sip.settings import CODEC_IDS, SipError

log = logging.getLogger("voicebot.sip")
pjlog = logging.getLogger("voicebot.sip.pjsua")

#: how long one poll for SIP events may block the thread (the latency of a submitted command)
POLL_MS = 5
#: period of the housekeeping hooks (media timeout checks)
HOUSEKEEPING_S = 0.5
#: the conference bridge: every port speaks 20 ms of 16 kHz mono int16
BRIDGE_RATE_HZ = 16000
FRAME_PTIME_MS = 20

_PJ_LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO}


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    host: str = "127.0.0.1"
    #: 0: any free port (UDP first, TCP then on the same number)
    port: int = 0
    udp: bool = True
    tcp: bool = True
    public_address: str | None = None
    #: pjsua's call slots (inbound, outbound and transfer legs together)
    max_calls: int = 4
    #: pjsua2 codec ids, preferred first; every other codec is disabled
    codec_ids: tuple[str, ...] = tuple(CODEC_IDS.values())
    rtp_port: int = 0
    rtp_port_range: int = 0
    log_level: int = 1
    user_agent: str = "voicebot"


@dataclass(frozen=True, slots=True)
class BoundAddress:
    host: str
    port: int
    transports: tuple[str, ...]


class _LogWriter(pj.LogWriter):
    """PJSIP's log lines into Python logging (called on any PJSIP thread; logging is thread-safe)."""

    def write(self, entry: Any) -> None:
        pjlog.log(_PJ_LEVELS.get(entry.level, logging.DEBUG), "%s", entry.msg.rstrip())


@dataclass(slots=True)
class _Command:
    fn: Callable[..., Any]
    args: tuple
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class SipEndpoint:
    """Start with ``start()`` (blocking until the transports listen), end with ``stop()``.

    pjsua2 allows one Endpoint per process (a second one aborts the process from
    C++), so the class holds a lock that one started endpoint owns until it stops.
    """

    _one_per_process = threading.Lock()

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._released: list[Any] = []
        self._hooks: list[Callable[[], None]] = []
        self._tracked: weakref.WeakSet[Any] = weakref.WeakSet()
        self._ready: concurrent.futures.Future[BoundAddress] = concurrent.futures.Future()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name="pjsua2", daemon=True)
        self._ep: Any = None
        self._owns_lock = False
        self.address: BoundAddress | None = None

    # ------------------------------------------------------------------ other threads

    def start(self, timeout_s: float = 10.0) -> BoundAddress:
        if not SipEndpoint._one_per_process.acquire(blocking=False):
            raise SipError("a SIP endpoint is already running in this process (pjsua2 allows one)")
        self._owns_lock = True
        self._thread.start()
        try:
            self.address = self._ready.result(timeout_s)
        except concurrent.futures.TimeoutError:
            raise SipError("the SIP stack did not start within %g s" % timeout_s) from None
        except SipError:
            self._thread.join(timeout_s)
            self._release_lock()
            raise
        return self.address

    def _release_lock(self) -> None:
        if self._owns_lock and not self._thread.is_alive():
            self._owns_lock = False
            SipEndpoint._one_per_process.release()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Run ``fn(*args)`` on the pjsua2 thread."""
        cmd = _Command(fn, args)
        if self._stopping.is_set() or not self._thread.is_alive():
            cmd.future.set_exception(SipError("the SIP stack is not running"))
        else:
            self._commands.put(cmd)
        return cmd.future

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Await ``fn(*args)`` run on the pjsua2 thread."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Hang up every call, shut PJSIP down and join the thread."""
        if not self._thread.is_alive():
            self._release_lock()
            return
        self._stopping.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("the pjsua2 thread did not stop within %g s", timeout_s)
        self._release_lock()

    # ------------------------------------------------------------------ the pjsua2 thread only

    @property
    def lib(self) -> Any:
        """The pjsua2 Endpoint (use on the pjsua2 thread only)."""
        return self._ep

    def release_later(self, *objs: Any) -> None:
        """Drop the last reference to pjsua2 objects on the next turn of the loop."""
        self._released.extend(objs)

    def _drop_released(self) -> None:
        """Media ports are destroyed explicitly, while their Python side is whole: their C++ destructor takes
        them out of the conference bridge, and until it has, PJSIP's clock thread calls them. Left to the
        garbage collector, it called one whose attributes were already torn down (seen as an AttributeError
        in onFrameReceived; a crash when the timing is worse)."""
        released, self._released = self._released, []
        for obj in released:
            if isinstance(obj, pj.AudioMediaPort) and obj.thisown:
                pj.AudioMediaPort.__swig_destroy__(obj)

    def track(self, obj: Any) -> Any:
        """Remember a pjsua2 object (Call, Account, port) so that shutdown can check it is gone."""
        self._tracked.add(obj)
        return obj

    def add_hook(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call ``hook()`` on the pjsua2 thread every HOUSEKEEPING_S; returns a remover."""
        self._hooks.append(hook)
        return lambda: self._hooks.remove(hook) if hook in self._hooks else None

    def ensure_thread_registered(self) -> None:
        """Register the calling thread with PJSIP (any thread that calls into pjsua2 must be)."""
        if not self._ep.libIsThreadRegistered():
            self._ep.libRegisterThread(threading.current_thread().name)

    def _main(self) -> None:
        try:
            address = self._create()
            self.ensure_thread_registered()
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self._destroy()
            self._ready.set_exception(e if isinstance(e, SipError) else SipError(_pj_message(e)))
            return
        self._ready.set_result(address)
        next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        while not self._stopping.is_set():
            self._run_commands()
            self._drop_released()
            if time.monotonic() >= next_housekeeping:
                next_housekeeping = time.monotonic() + HOUSEKEEPING_S
                self._run_hooks()
            self._ep.libHandleEvents(POLL_MS)
        self._shutdown()

    def _create(self) -> BoundAddress:
        cfg = self.config
        _quiet_pjlib_startup()
        ep = pj.Endpoint()
        self._ep = ep
        ep.libCreate()
        ep_cfg = pj.EpConfig()
        ep_cfg.uaConfig.threadCnt = 0
        ep_cfg.uaConfig.mainThreadOnly = False
        ep_cfg.uaConfig.maxCalls = cfg.max_calls
        ep_cfg.uaConfig.userAgent = cfg.user_agent
        ep_cfg.logConfig.level = cfg.log_level
        ep_cfg.logConfig.consoleLevel = cfg.log_level
        # libDestroy deletes the writer: C++ owns it from here on.
        ep_cfg.logConfig.writer = _LogWriter().__disown__()
        ep_cfg.logConfig.decor = ep_cfg.logConfig.decor & ~pj.PJ_LOG_HAS_NEWLINE
        med = ep_cfg.medConfig
        med.clockRate = BRIDGE_RATE_HZ
        med.sndClockRate = BRIDGE_RATE_HZ
        med.channelCount = 1
        med.audioFramePtime = FRAME_PTIME_MS
        med.ptime = FRAME_PTIME_MS
        med.noVad = True
        med.ecTailLen = 0
        med.maxMediaPorts = max(254, 4 * cfg.max_calls + 16)
        try:
            ep.libInit(ep_cfg)
            # No sound card: a null device's clock drives the conference bridge.
            ep.audDevManager().setNullDev()
            port = self._create_transports(ep)
            ep.libStart()
        except pj.Error as e:
            raise SipError(_pj_message(e)) from None
        self._set_codecs(ep)
        kinds = tuple(k for k, on in (("udp", cfg.udp), ("tcp", cfg.tcp)) if on)
        log.info("SIP listening on %s:%d (%s)", cfg.host, port, "+".join(kinds))
        return BoundAddress(cfg.host, port, kinds)

    def _create_transports(self, ep: Any) -> int:
        cfg = self.config
        wanted = [t for t, on in ((pj.PJSIP_TRANSPORT_UDP, cfg.udp), (pj.PJSIP_TRANSPORT_TCP, cfg.tcp)) if on]
        last_error: Exception | None = None
        for _ in range(1 if cfg.port else 20):  # port 0: find a number free for UDP and TCP alike
            port = cfg.port
            created: list[int] = []
            try:
                for kind in wanted:
                    tcfg = pj.TransportConfig()
                    tcfg.boundAddress = cfg.host
                    tcfg.port = port
                    if cfg.public_address:
                        tcfg.publicAddress = cfg.public_address
                    tid = ep.transportCreate(kind, tcfg)
                    created.append(tid)
                    if port == 0:
                        port = int(ep.transportGetInfo(tid).localName.rsplit(":", 1)[1])
                return port
            except pj.Error as e:
                last_error = e
                for tid in created:
                    ep.transportClose(tid)
        raise SipError(f"cannot listen for SIP on {cfg.host}:{cfg.port}: {_pj_message(last_error)}")

    def _set_codecs(self, ep: Any) -> None:
        wanted = list(self.config.codec_ids)
        for info in ep.codecEnum2():
            prio = 255 - wanted.index(info.codecId) if info.codecId in wanted else 0
            ep.codecSetPriority(info.codecId, prio)
        missing = set(wanted) - {c.codecId for c in ep.codecEnum2()}
        if missing:
            log.warning("codecs not available in this PJSIP build: %s", ", ".join(sorted(missing)))

    def _run_commands(self) -> None:
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            if not cmd.future.set_running_or_notify_cancel():
                continue
            try:
                cmd.future.set_result(cmd.fn(*cmd.args))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                cmd.future.set_exception(SipError(_pj_message(e)) if isinstance(e, pj.Error) else e)

    def _run_hooks(self) -> None:
        # A function of its own: a loop variable left in _main's frame would keep a hook's Call
        # alive until after libDestroy, and destroying it then aborts the process.
        for hook in list(self._hooks):
            self._guarded(hook)

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - one broken hook must not stop the SIP thread
            log.exception("SIP housekeeping failed")

    def _shutdown(self) -> None:
        ep = self._ep
        try:
            ep.hangupAllCalls()
            deadline = time.monotonic() + 1.0  # let BYEs and their answers go through
            while time.monotonic() < deadline:
                self._run_commands()
                ep.libHandleEvents(POLL_MS)
        except pj.Error:
            pass
        finally:
            self._hooks.clear()
            self._drop_released()
            # Commands still queued are answered, not left hanging.
            while True:
                try:
                    cmd = self._commands.get_nowait()
                except queue.Empty:
                    break
                if cmd.future.set_running_or_notify_cancel():
                    cmd.future.set_exception(SipError("the SIP stack stopped"))
            self._destroy()

    def _destroy(self) -> None:
        ep, self._ep = self._ep, None
        if ep is None:
            return
        if len(self._tracked):
            # A pjsua2 object left in a reference cycle must go now, here, while the library lives.
            gc.collect()
        for obj in list(self._tracked):
            # Still referenced from somewhere: destroying it after libDestroy would abort the
            # process, so its C++ half is left to the OS instead.
            log.warning("SIP shutdown: %s still referenced; not destroyed", obj.__class__.__name__)
            obj.this.disown()
        try:
            ep.libDestroy()
        except pj.Error as e:
            log.warning("SIP shutdown: %s", _pj_message(e))
        del ep


def _quiet_pjlib_startup() -> None:
    """pjlib prints its start-up lines on stdout before any log config applies; silence them."""
    try:
        import pjsua2._pjsua2 as native

        ctypes.CDLL(native.__file__).pj_log_set_level(0)
    except (ImportError, OSError, AttributeError):
        pass


def _pj_message(e: BaseException | None) -> str:
    if e is None:
        return "unknown error"
    if isinstance(e, pj.Error):
        return f"{e.title or 'pjsua2'}: {e.reason}"
    return str(e) or e.__class__.__name__
