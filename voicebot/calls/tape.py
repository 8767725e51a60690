"""Both sides of a call placed by their session-clock times: the stereo recording.

Caller frames and bot audio arrive from different threads (the event loop,
PJSIP's clock thread) in chunks stamped with the session clock; placing each
chunk at its own time keeps the two channels aligned even when a tick came late.
"""

from __future__ import annotations

import numpy as np


class CallTape:
    def __init__(self, sample_rate_hz: int) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._caller: list[tuple[float, bytes]] = []
        self._bot: list[tuple[float, bytes]] = []

    def caller(self, pcm: bytes, start_s: float) -> None:
        self._caller.append((start_s, pcm))

    def bot(self, pcm: bytes, start_s: float) -> None:
        """Any thread: one list append."""
        self._bot.append((start_s, pcm))

    def stereo(self) -> np.ndarray:
        """Caller left, bot right (int16), as long as the later of the two ends."""
        ends = [self._offset(t) + len(pcm) // 2 for t, pcm in self._caller + self._bot]
        out = np.zeros((max(ends, default=0), 2), dtype=np.int16)
        for channel, chunks in ((0, self._caller), (1, self._bot)):
            for start_s, pcm in chunks:
                samples = np.frombuffer(pcm, dtype=np.int16)
                at = self._offset(start_s)
                out[at:at + len(samples), channel] = samples
        return out

    def _offset(self, start_s: float) -> int:
        return max(0, int(round(start_s * self.sample_rate_hz)))
