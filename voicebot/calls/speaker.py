"""Bot audio playout with barge-in, and a hold loop under it.

The transport pulls one frame per 20 ms tick (from the event loop for replay,
from a media thread for SIP), so the queue is guarded by a lock and state
changes are reported through a callback the session makes thread-safe.

Hold audio is a background: it plays only while no prompt is queued (so an
announcement pre-empts it and the loop resumes where it was after), never
makes the speaker ``busy``, and caller speech or a key stops it like any
interruptible prompt.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Union

from voicebot.events import BYTES_PER_SAMPLE, Say


@dataclass(frozen=True, slots=True)
class PromptStarted:
    text: str
    at_s: float


@dataclass(frozen=True, slots=True)
class PromptEnded:
    text: str
    start_s: float
    end_s: float
    interrupted: bool


@dataclass(frozen=True, slots=True)
class PlayoutIdle:
    """Nothing left to play."""

    at_s: float


SpeakerEvent = Union[PromptStarted, PromptEnded, PlayoutIdle]


@dataclass(slots=True)
class _Segment:
    say: Say
    pcm: bytes
    offset: int = 0
    start_s: float | None = None


class Speaker:
    def __init__(self, sample_rate_hz: int, on_event: Callable[[SpeakerEvent], None]) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._on_event = on_event
        self._queue: deque[_Segment] = deque()
        self._lock = threading.Lock()
        self._hold = b""
        self._hold_offset = 0
        self.underruns = 0

    def queue(self, say: Say, pcm: bytes) -> None:
        with self._lock:
            self._queue.append(_Segment(say, pcm))

    def hold(self, loop_pcm: bytes) -> None:
        """Loop ``loop_pcm`` whenever no prompt is queued, until barge-in or ``stop_hold``."""
        with self._lock:
            if loop_pcm != self._hold:
                self._hold, self._hold_offset = loop_pcm, 0

    def stop_hold(self) -> None:
        with self._lock:
            self._hold = b""

    @property
    def holding(self) -> bool:
        """The hold loop is on (it sounds whenever no prompt is queued)."""
        with self._lock:
            return bool(self._hold)

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._queue)

    @property
    def holding_floor(self) -> bool:
        """A prompt that must not be interrupted is queued or playing."""
        with self._lock:
            return any(not seg.say.interruptible for seg in self._queue)

    def pull(self, n_samples: int, at_s: float) -> bytes:
        """The next ``n_samples`` of bot audio starting at ``at_s``; silence when idle."""
        out = bytearray()
        events: list[SpeakerEvent] = []
        need = n_samples * BYTES_PER_SAMPLE
        with self._lock:
            while len(out) < need and self._queue:
                seg = self._queue[0]
                t = at_s + len(out) / BYTES_PER_SAMPLE / self.sample_rate_hz
                if seg.start_s is None:
                    seg.start_s = t
                    events.append(PromptStarted(seg.say.text, t))
                take = seg.pcm[seg.offset:seg.offset + need - len(out)]
                seg.offset += len(take)
                out += take
                if seg.offset >= len(seg.pcm):
                    self._queue.popleft()
                    end = at_s + len(out) / BYTES_PER_SAMPLE / self.sample_rate_hz
                    events.append(PromptEnded(seg.say.text, seg.start_s, end, interrupted=False))
                    if not self._queue:
                        events.append(PlayoutIdle(end))
            while len(out) < need and self._hold:
                take = self._hold[self._hold_offset:self._hold_offset + need - len(out)]
                out += take
                self._hold_offset = (self._hold_offset + len(take)) % len(self._hold)
        out += bytes(need - len(out))
        for ev in events:
            self._on_event(ev)
        return bytes(out)

    def barge_in(self, at_s: float) -> bool:
        """Cut every interruptible prompt now; a protected prompt keeps playing.

        Returns True when something was cut.
        """
        events: list[SpeakerEvent] = []
        with self._lock:
            self._hold = b""
            kept: deque[_Segment] = deque()
            for seg in self._queue:
                if seg.say.interruptible:
                    if seg.start_s is not None:
                        events.append(PromptEnded(seg.say.text, seg.start_s, at_s, interrupted=True))
                else:
                    kept.append(seg)
            cut = len(kept) != len(self._queue)
            self._queue = kept
            if cut and not kept:
                events.append(PlayoutIdle(at_s))
        for ev in events:
            self._on_event(ev)
        return cut

    def stop(self, at_s: float) -> None:
        """Drop everything (the call is over)."""
        with self._lock:
            playing = [s for s in self._queue if s.start_s is not None]
            self._queue.clear()
            self._hold = b""
        for seg in playing:
            assert seg.start_s is not None
            self._on_event(PromptEnded(seg.say.text, seg.start_s, at_s, interrupted=True))
