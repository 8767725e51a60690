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
    #: decode a turn as soon as the recognizer has heard that much of its silence, while the
    #: endpointer still waits for the rest: the caller waits for the decode only beyond that wait.
    #: A caller who goes on after such a pause has the turn decoded again, from its start (by a
    #: recognizer that has adapted to its first part once already, so the words can come out a
    #: little differently than without the first decode; replay decodes ahead too, so a replayed
    #: call still decides as the live one did).
    decode_ahead: bool = True


@dataclass(slots=True)
class _EarlyEnd:
    """A turn ended early on a complete partial whose final recognition is not complete after all.

    It is held for as long as the caller's pause could still be inside the answer (the end-of-turn
    silence); if they go on, the new words join it, else it is the caller's turn as it was heard.
    """

    utterance: Utterance
    #: every frame since the turn's audio began, so a continuation is decoded as one utterance
    audio: bytearray
    expires_s: float


@dataclass(frozen=True, slots=True)
class _Ahead:
    """A turn decoded before its end was certain."""

    recognition: Recognition
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
        self._speech_start_s = 0.0
        self._complete_at_s: float | None = None
        #: what the recognizer heard of the utterance in progress
        self._heard = bytearray()
        self._early: _EarlyEnd | None = None
        self._ahead: _Ahead | None = None
        self.timing = TurnTiming()
        #: seconds spent inside the recognizer, for the benchmark
        self.asr_busy_s = 0.0

    def expect(self, listen: Listen) -> None:
        """The next utterance answers this question."""
        self._expect = listen

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
        if self._early is not None and not self._endpointer.in_speech and frame.end_s >= self._early.expires_s:
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
        if early is None:
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
            early, self._early = self._early, None
            if early is not None:
                # the caller went on after an answer that only looked complete: one utterance after all
                self._speech_start_s = early.utterance.start_s
                self._pending = early.audio
            # partial results are read only to end a complete answer early
            wanted = (None if self._expect.grammar == "menu" else self._expect.grammar,
                      self._expect.complete is not None)
            if wanted != self._grammar_set:
                await self._timed(functools.partial(self._stream.set_grammar, wanted[0], partials=wanted[1]))
                self._grammar_set = wanted
            return [SpeechStarted(ep.at_s)]
        if isinstance(ep, SpeechAudio):
            voiced = (self._endpointer.in_speech and frame_end_s is not None
                      and self._endpointer.last_voiced_end_s >= frame_end_s - 1e-6)
            if voiced or self._tail_bytes is None:
                if self._ahead is not None:
                    # the caller went on after the turn was decoded: all of it again, pause included
                    self._ahead = None
                    self._pending, self._heard = self._heard + self._held[self._tail_bytes:], bytearray()
                else:
                    self._pending += self._held
                self._pending += ep.pcm
                self._held.clear()
            else:
                self._held += ep.pcm
                if (self._cfg.decode_ahead and self._ahead is None and self._expect.complete is None
                        and frame_end_s is not None and len(self._held) >= self._tail_bytes):
                    t0 = self.asr_busy_s
                    recognition = await self._timed(functools.partial(self._finish, keep_held=True))
                    self._ahead = _Ahead(recognition, self.asr_busy_s - t0, frame_end_s)
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
        utterance = Utterance(recognition.alternatives, self._speech_start_s, ep.at_s)
        ended_early, self._complete_at_s = self._complete_at_s is not None, None
        kind = self._expect.complete
        if ended_early and kind is not None and not any(self._complete(kind, a.text) for a in recognition.alternatives):
            silence_s = self._cfg.endpointer.end_silence_ms / 1000
            self._early = _EarlyEnd(utterance, self._heard, ep.at_s + silence_s)
            self._heard = bytearray()
            return []
        return [utterance]

    async def _feed(self) -> None:
        pcm, self._pending = bytes(self._pending), bytearray()
        self._heard += pcm
        kind = self._expect.complete
        if kind is None:
            await self._timed(self._stream.accept, pcm)
            return
        partial = await self._timed(self._accept_and_peek, pcm)
        if self._complete_at_s is None and self._complete(kind, partial):
            self._complete_at_s = self._endpointer.last_voiced_end_s

    def _accept_and_peek(self, pcm: bytes) -> str:
        self._stream.accept(pcm)
        return self._stream.partial()

    def _finish(self, keep_held: bool = False) -> Recognition:
        """The turn's words; ``keep_held``: the silence so far stays held, for a caller who goes on."""
        self._pending += self._held[: self._tail_bytes]
        if not keep_held:
            self._held.clear()
        if self._pending:
            self._heard += self._pending
            self._stream.accept(bytes(self._pending))
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
