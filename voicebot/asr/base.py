"""The recognizer interface every engine implements.

An engine holds the shared model (loaded once per process); a stream is one
call's recognizer. Stream methods block and are called from an executor,
never on the event loop.
"""

from __future__ import annotations

from voicebot.errors import VoicebotError

from dataclasses import dataclass
from typing import Protocol

from voicebot.events import Alternative


class RecognizerError(VoicebotError):
    """A recognizer or grammar problem, with a one-line message for the user."""


@dataclass(frozen=True, slots=True)
class Recognition:
    """Final result of one utterance: n-best, best first; empty when nothing was heard."""

    alternatives: tuple[Alternative, ...]

    @property
    def text(self) -> str:
        """The best alternative's words; empty when nothing was heard."""
        return self.alternatives[0].text if self.alternatives else ""


class RecognizerStream(Protocol):
    def set_grammar(self, grammar: str | None, *, partials: bool = True) -> None:
        """Constrain the next utterance to a grammar from grammars/ (None: open speech).

        ``partials=False``: nobody calls ``partial()`` during those utterances, so
        an engine may save the work of decoding while the caller speaks.
        """

    def accept(self, pcm: bytes) -> None:
        """Feed int16 mono speech at the engine's sample rate."""

    def partial(self) -> str:
        """Best hypothesis so far in the current utterance."""

    def finish(self) -> Recognition:
        """End the utterance and return its n-best; the stream is ready for the next one."""

    def close(self) -> None: ...


class RecognizerEngine(Protocol):
    name: str
    model_name: str
    sample_rate_hz: int

    def open_stream(self) -> RecognizerStream: ...
