"""A recorded caller as a transport: each WAV is one call, its end is the hangup.

Time is virtual: every 20 ms frame advances the session clock by 20 ms, and
bot audio is pulled in step, so the bot channel of the recording lines up
with the caller's and the call decides as it would in real time.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import numpy as np

from voicebot.calls.speaker import Speaker
from voicebot.calls.tape import CallTape
from voicebot.clock import VirtualClock
from voicebot.events import FRAME_MS, AudioFrame, Transfer, TransportHangup, TransportItem

#: as fast as the CPU allows, but the event loop gets a turn every this many frames
YIELD_EVERY_FRAMES = 10


class ReplayTransport:
    def __init__(self, samples: np.ndarray, sample_rate_hz: int, clock: VirtualClock, *,
                 caller_id: str = "replay", realtime: bool = False) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.caller_id = caller_id
        self._samples = samples.astype(np.int16, copy=False)
        self._clock = clock
        self._realtime = realtime
        self._speaker: Speaker | None = None
        self._tape = CallTape(sample_rate_hz)
        self.ended_by: str = ""

    def attach(self, speaker: Speaker) -> None:
        self._speaker = speaker

    async def receive(self) -> AsyncIterator[TransportItem]:
        n = self.sample_rate_hz * FRAME_MS // 1000
        frame_s = FRAME_MS / 1000
        total = len(self._samples)
        wall0 = time.monotonic()
        for k, offset in enumerate(range(0, total, n)):
            t = k * frame_s
            chunk = self._samples[offset:offset + n]
            if len(chunk) < n:
                chunk = np.concatenate([chunk, np.zeros(n - len(chunk), np.int16)])
            pcm = chunk.tobytes()
            self._tape.caller(pcm, t)
            if self._speaker is not None:
                self._tape.bot(self._speaker.pull(n, t), t)
            if self._realtime:
                await asyncio.sleep(max(0.0, wall0 + t + frame_s - time.monotonic()))
            elif k % YIELD_EVERY_FRAMES == 0:
                await asyncio.sleep(0)  # long silences decode nothing: let other calls and tasks run
            self._clock.advance_to(t + frame_s)
            yield AudioFrame(pcm, self.sample_rate_hz, t)
        yield TransportHangup(total / self.sample_rate_hz)

    async def transfer(self, transfer: Transfer, target_uri: str | None = None) -> bool:
        self.ended_by = f"agent:{target_uri}" if target_uri else f"transfer:{transfer.queue}"
        return True

    async def hangup(self) -> None:
        self.ended_by = "bot"

    def stereo(self) -> np.ndarray:
        """Caller left, bot right, time-aligned."""
        return self._tape.stereo()
