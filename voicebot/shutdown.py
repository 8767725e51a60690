"""SIGTERM/SIGINT as a graceful shutdown: the first asks for a drain, the second for an end now."""

from __future__ import annotations

import asyncio
import logging
import signal

log = logging.getLogger("voicebot")


class ShutdownSignals:
    """Install on the running loop; ``drain`` is set by the first signal, ``now`` by the second."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self._loop = asyncio.get_running_loop()
        self._signals = signals
        self.drain = asyncio.Event()
        self.now = asyncio.Event()

    def __enter__(self) -> "ShutdownSignals":
        for sig in self._signals:
            self._loop.add_signal_handler(sig, self.request, sig)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig in self._signals:
            self._loop.remove_signal_handler(sig)

    def request(self, sig: signal.Signals | None = None) -> None:
        name = sig.name if sig is not None else "request"
        if not self.drain.is_set():
            log.warning("%s: draining (new calls are refused; %s again to end calls now)", name, name)
            self.drain.set()
        elif not self.now.is_set():
            log.warning("%s again: ending calls now", name)
            self.now.set()
