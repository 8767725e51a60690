"""A conference-bridge port that trades 20 ms frames with a call.

PJSIP's clock thread calls ``onFrameReceived`` with the caller's audio and
``onFrameRequested`` for the bot's, once per 20 ms each. Caller audio is handed
to ``on_audio`` (which must only queue it: the session runs on the event loop);
bot audio is pulled from the attached Speaker, which is thread-safe and fast
(no I/O, no locks held long), so the clock never waits on the event loop.
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import pjsua2 as pj

from voicebot.calls.speaker import Speaker
from voicebot.calls.tape import CallTape
from voicebot.events import BYTES_PER_SAMPLE, FRAME_MS
from voicebot.sip.endpoint import BRIDGE_RATE_HZ

log = logging.getLogger("voicebot.sip.media")

#: a tick this late after the previous one is a gap the far end hears
LATE_TICK_S = 2.5 * FRAME_MS / 1000


@dataclass(slots=True)
class MediaStats:
    frames_in: int = 0
    frames_out: int = 0
    #: bot frames sent while a prompt played, more than LATE_TICK_S after the one before
    underruns: int = 0
    #: the longest wait between two requests for bot audio while a prompt played
    max_gap_ms: float = 0.0
    #: the longest wait between two frames of caller audio: a long one means PJSIP's clock
    #: thread could not run (another thread held the GIL) and the jitter buffer may have dropped audio
    max_rx_gap_ms: float = 0.0


def read_frame(buf: Any) -> bytes:
    """The bytes of a pjsua2 ``ByteVector``.

    Iterating a SWIG vector costs close to a millisecond per 20 ms frame; the
    vector's storage is read directly instead (a std::vector begins with its
    begin and end pointers), checked against the vector's own size and ends.
    """
    size = buf.size()
    if size == 0:
        return b""
    ptrs = ctypes.cast(int(buf.this), ctypes.POINTER(ctypes.c_void_p))
    begin, end = ptrs[0], ptrs[1]
    if begin and end and end - begin == size:
        data = ctypes.string_at(begin, size)
        if data[0] == buf[0] and data[-1] == buf[size - 1]:
            return data
    return bytes(buf)


def bridge_format() -> Any:
    fmt = pj.MediaFormatAudio()
    fmt.init(pj.PJMEDIA_FORMAT_PCM, BRIDGE_RATE_HZ, 1, FRAME_MS * 1000, 8 * BYTES_PER_SAMPLE)
    return fmt


class FramePort(pj.AudioMediaPort):
    """Create, connect and destroy on the pjsua2 thread; the callbacks run on PJSIP's clock thread."""

    samples_per_frame = BRIDGE_RATE_HZ * FRAME_MS // 1000

    def __init__(self, name: str, on_audio: Callable[[bytes], None], clock_s: Callable[[], float]) -> None:
        super().__init__()
        self._on_audio: Callable[[bytes], None] | None = on_audio
        self._clock_s = clock_s
        self._speaker: Speaker | None = None
        self._tape: CallTape | None = None
        self._silence = bytes(self.samples_per_frame * BYTES_PER_SAMPLE)
        self._last_request: float | None = None
        self._last_received: float | None = None
        self.receiving = False
        self.stats = MediaStats()
        self.createPort(name, bridge_format())

    def attach(self, speaker: Speaker, tape: CallTape | None = None) -> None:
        """Start pulling bot audio from ``speaker`` (any thread: attribute stores), a copy onto ``tape``."""
        self._tape = tape
        self._speaker = speaker

    def detach(self) -> None:
        """Stop both directions; drops the callbacks (and the reference cycle through them)."""
        self.receiving = False
        self._speaker = None
        self._on_audio = None

    def onFrameReceived(self, frame: Any) -> None:  # noqa: N802 - pjsua2's name
        if not self.receiving or frame.type != pj.PJMEDIA_FRAME_TYPE_AUDIO:
            return
        on_audio = self._on_audio
        pcm = read_frame(frame.buf)
        if pcm and on_audio is not None:
            now = time.monotonic()
            if self._last_received is not None:
                self.stats.max_rx_gap_ms = max(self.stats.max_rx_gap_ms, (now - self._last_received) * 1000)
            self._last_received = now
            self.stats.frames_in += 1
            on_audio(pcm)

    def onFrameRequested(self, frame: Any) -> None:  # noqa: N802 - pjsua2's name
        speaker = self._speaker
        pcm = self._silence
        if speaker is not None:
            now = time.monotonic()
            if speaker.busy and self._last_request is not None:
                gap = now - self._last_request
                self.stats.max_gap_ms = max(self.stats.max_gap_ms, gap * 1000)
                if gap > LATE_TICK_S:
                    self.stats.underruns += 1
                    speaker.underruns += 1
            self._last_request = now
            at_s = self._clock_s()
            pcm = speaker.pull(self.samples_per_frame, at_s)
            tape = self._tape
            if tape is not None:
                tape.bot(pcm, at_s)
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        frame.buf = pj.ByteVector(pcm)
        frame.size = len(pcm)
        self.stats.frames_out += 1
