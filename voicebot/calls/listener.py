"""Caller audio in, caller events out: endpointing, in-band DTMF, streaming ASR.

Only speech reaches the recognizer. Recognizer calls block, so they run in an
executor, batched so that the hop costs little next to the decoding itself.

The recognizer's end-of-utterance work (a second pass, a lattice) would come on
top of the end-of-turn silence the caller waits through. So once the caller has
been quiet for ``early_finish_ms`` the listener finishes the utterance there
and keeps the result; when the turn ends it is ready. Should the caller go on
speaking, the utterance is decoded again from its start with the new speech.
"""

from __future__ import annotations

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
    #: silence after which the recognizer finishes the utterance ahead of the end of the
    #: turn (None: only when the turn ends); pauses inside sentences are mostly shorter
    early_finish_ms: int | None = 200


@dataclass(slots=True)
class TurnTiming:
    """Wall-clock work done for the last utterance, for latency accounting."""

    endpoint_wall_s: float = 0.0
    asr_wall_s: float = 0.0


@dataclass(frozen=True, slots=True)
class _EarlyResult:
    """An utterance finished during the end-of-turn silence, held until the turn ends."""

    recognition: Recognition
    #: end of the caller's last voiced frame when it was made
    voiced_end_s: float
    #: session time of the frame it was made at, and the wall time it took
    at_s: float
    compute_s: float


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
        self._grammar_set: str | None = None
        self._pending = bytearray()
        #: the utterance's audio handed to the recognizer so far (decoded again if the caller resumes)
        self._fed = bytearray()
        self._early: _EarlyResult | None = None
        self._speech_start_s = 0.0
        self._complete_at_s: float | None = None
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
        for tone in self._dtmf.process(frame.pcm, frame.start_s):
            events.append(DtmfKey(tone.digit, tone.start_s))
        self._endpointer.suspend(self._dtmf.tone_active)
        for ep in self._endpointer.process(frame.pcm, frame.start_s):
            events += await self._on_endpoint(ep)
        early_s = None if self._cfg.early_finish_ms is None else self._cfg.early_finish_ms / 1000
        if (early_s is not None and self._early is None and self._endpointer.in_speech
                and frame.end_s - self._endpointer.last_voiced_end_s >= early_s - 1e-6):
            await self._finish_early(frame.end_s)
        if self._complete_at_s is not None and self._endpointer.in_speech:
            if frame.end_s - self._endpointer.last_voiced_end_s >= self._cfg.complete_pause_ms / 1000:
                for ep in self._endpointer.force_end(frame.end_s):
                    events += await self._on_endpoint(ep)
        return events

    async def flush(self, at_s: float) -> list[CallerEvent]:
        """The call is ending: whatever the caller was saying still counts."""
        events: list[CallerEvent] = []
        for ep in self._endpointer.flush(at_s):
            events += await self._on_endpoint(ep)
        return events

    async def _on_endpoint(self, ep: SpeechStart | SpeechAudio | SpeechEnd) -> list[CallerEvent]:
        if isinstance(ep, SpeechStart):
            self._speech_start_s = ep.at_s
            self._complete_at_s = None
            self._pending = bytearray(ep.pcm)
            self._fed = bytearray()
            self._early = None
            grammar = None if self._expect.grammar == "menu" else self._expect.grammar
            if grammar != self._grammar_set:
                await self._timed(self._stream.set_grammar, grammar)
                self._grammar_set = grammar
            return [SpeechStarted(ep.at_s)]
        if isinstance(ep, SpeechAudio):
            self._pending += ep.pcm
            if self._early is not None:
                if self._endpointer.last_voiced_end_s <= self._early.voiced_end_s:
                    return []  # still quiet: the early result stands
                # the caller went on speaking: the whole utterance again, from its start
                self._early = None
                self._pending = self._fed + self._pending
                self._fed = bytearray()
            if len(self._pending) >= self._batch_bytes:
                await self._feed()
            return []
        early, self._early = self._early, None
        if early is not None:
            # A live caller waits only for the part of the early work the silence did not cover.
            uncovered_s = max(0.0, early.compute_s - (ep.endpoint_s - early.at_s))
            self.timing = TurnTiming(endpoint_wall_s=time.perf_counter() - uncovered_s,
                                     asr_wall_s=early.compute_s)
            recognition = early.recognition
        else:
            self.timing = TurnTiming(endpoint_wall_s=time.perf_counter())
            t0 = self.asr_busy_s
            recognition = await self._timed(self._finish)
            self.timing.asr_wall_s = self.asr_busy_s - t0
        self._pending = bytearray()
        self._complete_at_s = None
        return [Utterance(recognition.alternatives, self._speech_start_s, ep.at_s)]

    async def _finish_early(self, at_s: float) -> None:
        t0 = self.asr_busy_s
        recognition = await self._timed(self._finish)
        self._early = _EarlyResult(recognition, self._endpointer.last_voiced_end_s, at_s, self.asr_busy_s - t0)

    async def _feed(self) -> None:
        pcm, self._pending = bytes(self._pending), bytearray()
        self._fed += pcm
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

    def _finish(self) -> Recognition:
        if self._pending:
            self._fed += self._pending
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
