"""Caller audio in, caller events out: endpointing, in-band DTMF, streaming ASR.

Only speech reaches the recognizer. Recognizer calls block, so they run in an
executor, batched so that the hop costs little next to the decoding itself.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

from voicebot.asr.base import Recognition, RecognizerStream
from voicebot.audio.dtmf import DtmfDetector
from voicebot.audio.vad import Endpointer, EndpointerConfig, SpeechAudio, SpeechEnd, SpeechStart
from voicebot.events import AudioFrame, CallerEvent, DtmfKey, Listen, SpeechStarted, Utterance

T = TypeVar("T")
RunBlocking = Callable[..., Awaitable]
#: (kind, partial transcript) -> the answer is complete, stop listening
Completeness = Callable[[str, str], bool]


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    endpointer: EndpointerConfig = EndpointerConfig()
    #: speech is handed to the recognizer in batches of this size
    asr_batch_ms: int = 100
    #: pause after a complete answer before the turn ends early
    complete_pause_ms: int = 100
    #: silence after the last voiced frame that the recognizer still hears (None: all of it);
    #: the rest of the end-of-turn silence would only cost decoding time
    trailing_silence_ms: int | None = 300
    #: decode a turn as soon as the recognizer has heard its silence (``trailing_silence_ms``; a turn
    #: that may be answered at the pause, ``Listen.complete_in_pause``: ``ahead_silence_ms``), while
    #: the endpointer still waits for the rest: the caller waits for the decode only beyond that
    #: wait, and not for the rest at all when the decode is complete.
    #: A caller who goes on after such a pause has the turn decoded again, from its start (by a
    #: recognizer that has adapted to its first part once already, so the words can come out a
    #: little differently than without the first decode; replay decodes ahead too, so a replayed
    #: call still decides as the live one did).
    decode_ahead: bool = True
    #: 200 ms answers one call's questions within 500 ms on a 2-core machine, but the recognizer then
    #: hears the pause repeated to ``trailing_silence_ms``, which changes what it learns of the
    #: caller's voice a little: enough to flip a borderline identity code later in a G.722 sample
    #: call (docs/sip.md)
    ahead_silence_ms: int = 300


@dataclass(slots=True)
class _EarlyEnd:
    """A turn ended before the end-of-turn silence ran out.

    Until it would have run out, a caller who goes on continues the same turn: their new words
    are decoded with it, as one utterance. ``utterance`` is the turn as heard, held back when it
    was ended on a complete partial whose final recognition is not complete after all (released
    when the silence runs out); None when it was complete and has gone out already (the next
    utterance then ``continues`` it).
    """

    utterance: Utterance | None
    start_s: float
    #: every frame since the turn's audio began, so a continuation is decoded as one utterance
    audio: bytearray
    expires_s: float


@dataclass(frozen=True, slots=True)
class _Ahead:
    """A turn decoded before its end was certain."""

    recognition: Recognition
    #: how much of the pause the recognizer heard
    pause_bytes: int
    #: wall time the decode took
    decode_s: float
    #: where in the call's audio it was made
    at_s: float


@dataclass(slots=True)
class TurnTiming:
    """Wall-clock work done for the last utterance, for latency accounting."""

    endpoint_wall_s: float = 0.0
    asr_wall_s: float = 0.0


class Listener:
    def __init__(
        self,
        stream: RecognizerStream,
        sample_rate_hz: int,
        run_blocking: RunBlocking,
        completeness: Completeness,
        config: ListenerConfig = ListenerConfig(),
    ) -> None:
        self._stream = stream
        self._run = run_blocking
        self._complete = completeness
        self._cfg = config
        self._endpointer = Endpointer(sample_rate_hz, config=config.endpointer)
        self._dtmf = DtmfDetector(sample_rate_hz)
        self._batch_bytes = sample_rate_hz * config.asr_batch_ms // 1000 * 2
        self._expect = Listen("menu")
        #: (grammar, partials) the stream was last given; a new stream has open speech with partials
        self._grammar_set: tuple[str | None, bool] = (None, True)
        self._pending = bytearray()
        #: unvoiced audio since the last voiced frame: it reaches the recognizer only if speech resumes
        self._held = bytearray()
        self._tail_bytes = (None if config.trailing_silence_ms is None
                            else sample_rate_hz * config.trailing_silence_ms // 1000 * 2)
        self._ahead_bytes = sample_rate_hz * config.ahead_silence_ms // 1000 * 2
        self._speech_start_s = 0.0
        self._complete_at_s: float | None = None
        #: what the recognizer heard of the utterance in progress
        self._heard = bytearray()
        self._early: _EarlyEnd | None = None
        #: the utterance in progress continues one that went out already
        self._continues = False
        self._ahead: _Ahead | None = None
        self.timing = TurnTiming()
        #: seconds spent inside the recognizer, for the benchmark
        self.asr_busy_s = 0.0

    def expect(self, listen: Listen) -> None:
        """The next utterance answers this question."""
        self._expect = listen

    @property
    def _streaming(self) -> bool:
        """Partial results are read while the caller speaks, to end a complete answer early."""
        return self._expect.complete is not None and not self._expect.complete_in_pause

    @property
    def _answerable_at_pause(self) -> bool:
        """The turn decoded at a pause may be complete, and then ends there."""
        return self._expect.complete is not None and self._expect.complete_in_pause

    @property
    def in_speech(self) -> bool:
        return self._endpointer.in_speech

    async def on_frame(self, frame: AudioFrame) -> list[CallerEvent]:
        events: list[CallerEvent] = []
        if self._early is not None:
            self._early.audio += frame.pcm
        for tone in self._dtmf.process(frame.pcm, frame.start_s):
            events += self._release_early()
            events.append(DtmfKey(tone.digit, tone.start_s))
        self._endpointer.suspend(self._dtmf.tone_active)
        for ep in self._endpointer.process(frame.pcm, frame.start_s):
            events += await self._on_endpoint(ep, frame.end_s)
        if self._complete_at_s is not None and self._endpointer.in_speech:
            if frame.end_s - self._endpointer.last_voiced_end_s >= self._cfg.complete_pause_ms / 1000:
                for ep in self._endpointer.force_end(frame.end_s):
                    events += await self._on_endpoint(ep)
        if (self._early is not None and frame.end_s >= self._early.expires_s
                and not self._endpointer.in_speech and not self._endpointer.onset_pending):
            events += self._release_early()
        return events

    async def flush(self, at_s: float) -> list[CallerEvent]:
        """The call is ending: whatever the caller was saying still counts."""
        events: list[CallerEvent] = []
        for ep in self._endpointer.flush(at_s):
            events += await self._on_endpoint(ep)
        return events + self._release_early()

    def _release_early(self) -> list[CallerEvent]:
        early, self._early = self._early, None
        if early is None or early.utterance is None:
            return []
        self.timing = TurnTiming(endpoint_wall_s=time.perf_counter())
        return [early.utterance]

    async def _on_endpoint(self, ep: SpeechStart | SpeechAudio | SpeechEnd,
                           frame_end_s: float | None = None) -> list[CallerEvent]:
        if isinstance(ep, SpeechStart):
            self._speech_start_s = ep.at_s
            self._complete_at_s = None
            self._pending = bytearray(ep.pcm)
            self._held.clear()
            self._heard.clear()
            self._ahead = None
            released: list[CallerEvent] = []
            if self._early is not None and ep.at_s > self._early.expires_s:
                released = self._release_early()
            early, self._early = self._early, None
            if early is not None:
                # the caller went on after a turn ended early: one utterance after all
                self._speech_start_s = early.start_s
                self._pending = early.audio
                self._continues = early.utterance is None
            wanted = (None if self._expect.grammar == "menu" else self._expect.grammar, self._streaming)
            if wanted != self._grammar_set:
                await self._timed(functools.partial(self._stream.set_grammar, wanted[0], partials=wanted[1]))
                self._grammar_set = wanted
            return [*released, SpeechStarted(ep.at_s)]
        if isinstance(ep, SpeechAudio):
            voiced = (self._endpointer.in_speech and frame_end_s is not None
                      and self._endpointer.last_voiced_end_s >= frame_end_s - 1e-6)
            if voiced or self._tail_bytes is None:
                if self._ahead is not None:
                    # the caller went on after the turn was decoded: all of it again, pause included
                    fed, self._ahead = self._ahead.pause_bytes, None
                    self._pending, self._heard = self._heard + self._held[fed:], bytearray()
                else:
                    self._pending += self._held
                self._pending += ep.pcm
                self._held.clear()
            else:
                self._held += ep.pcm
                # only a turn that may be answered at the pause is decoded before the recognizer has all the
                # silence it hears at a turn's end: the shorter pause changes what it learns of the caller's
                # voice a little, and a borderline identity code later in the call with it
                pause_bytes = self._ahead_bytes if self._answerable_at_pause else self._tail_bytes
                if (self._cfg.decode_ahead and self._ahead is None and not self._streaming and pause_bytes
                        and frame_end_s is not None and len(self._held) >= pause_bytes):
                    t0 = self.asr_busy_s
                    recognition = await self._timed(self._finish_ahead, pause_bytes)
                    self._ahead = _Ahead(recognition, pause_bytes, self.asr_busy_s - t0, frame_end_s)
                    kind = self._expect.complete
                    if kind is not None and self._complete(kind, recognition.text):
                        # on_frame ends the turn now: this pause is longer than complete_pause_ms
                        self._complete_at_s = self._endpointer.last_voiced_end_s
            if len(self._pending) >= self._batch_bytes:
                await self._feed()
            return []
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            recognition = ahead.recognition
            # what a live caller waits for: the part of the decode that outlasted the rest of the silence
            behind_s = max(0.0, ahead.decode_s - (ep.endpoint_s - ahead.at_s))
            self.timing = TurnTiming(endpoint_wall_s=time.perf_counter() - behind_s, asr_wall_s=ahead.decode_s)
        else:
            self.timing = TurnTiming(endpoint_wall_s=time.perf_counter())
            t0 = self.asr_busy_s
            recognition = await self._timed(self._finish)
            self.timing.asr_wall_s = self.asr_busy_s - t0
        utterance = Utterance(recognition.alternatives, self._speech_start_s, ep.at_s, continues=self._continues)
        self._continues = False
        ended_early, self._complete_at_s = self._complete_at_s is not None, None
        kind = self._expect.complete
        if not ended_early or kind is None:
            return [utterance]
        expires_s = ep.at_s + self._cfg.endpointer.end_silence_ms / 1000
        if self._answerable_at_pause:
            # answered now; a caller who goes on before the silence would have ended the turn continues it
            fed = ahead.pause_bytes if ahead is not None else 0
            self._early = _EarlyEnd(None, self._speech_start_s, self._heard + self._held[fed:], expires_s)
            self._heard = bytearray()
            return [utterance]
        if any(self._complete(kind, a.text) for a in recognition.alternatives):
            return [utterance]
        self._early = _EarlyEnd(utterance, self._speech_start_s, self._heard, expires_s)
        self._heard = bytearray()
        return []

    async def _feed(self) -> None:
        pcm, self._pending = bytes(self._pending), bytearray()
        self._heard += pcm
        kind = self._expect.complete
        if kind is None or not self._streaming:
            await self._timed(self._stream.accept, pcm)
            return
        partial = await self._timed(self._accept_and_peek, pcm)
        if self._complete_at_s is None and self._complete(kind, partial):
            self._complete_at_s = self._endpointer.last_voiced_end_s

    def _accept_and_peek(self, pcm: bytes) -> str:
        self._stream.accept(pcm)
        return self._stream.partial()

    def _finish(self) -> Recognition:
        """The turn's words, with ``trailing_silence_ms`` of its silence."""
        self._pending += self._held[: self._tail_bytes]
        self._held.clear()
        return self._decode()

    def _finish_ahead(self, pause_bytes: int) -> Recognition:
        """The turn's words at a pause; the pause stays held, for a caller who goes on. The recognizer
        hears as much silence as at a turn's end: the pause, repeated."""
        pause = bytes(self._held[:pause_bytes])
        self._pending += pause
        pad_bytes = max(0, (self._tail_bytes or 0) - len(pause))
        return self._decode((pause * (pad_bytes // max(1, len(pause)) + 1))[:pad_bytes])

    def _decode(self, pad: bytes = b"") -> Recognition:
        if self._pending:
            self._heard += self._pending
            self._stream.accept(bytes(self._pending) + pad)
            self._pending = bytearray()
        return self._stream.finish()

    async def _timed(self, fn: Callable[..., T], *args: object) -> T:
        def timed() -> T:
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.asr_busy_s += time.perf_counter() - t0

        return await self._run(timed)
