"""Session clocks.

Every timer in a call reads the session clock. A live call reads the event
loop's monotonic time; a replayed WAV advances a virtual clock by the audio it
feeds, so replay takes exactly the decisions a live call would, only faster.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Clock(Protocol):
    #: True when time is driven by fed audio rather than by the wall.
    virtual: bool

    def now_s(self) -> float:
        """Seconds since the call started."""


class LoopClock:
    virtual = False

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._t0 = self._loop.time()

    def now_s(self) -> float:
        return self._loop.time() - self._t0


class VirtualClock:
    virtual = True

    def __init__(self) -> None:
        self._now_s = 0.0

    def now_s(self) -> float:
        return self._now_s

    def advance_to(self, t_s: float) -> None:
        if t_s < self._now_s:
            raise ValueError(f"virtual clock cannot go back from {self._now_s} to {t_s}")
        self._now_s = t_s
