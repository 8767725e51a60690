"""The synthesizer interface."""

from __future__ import annotations

from voicebot.errors import VoicebotError

from typing import Protocol


class SynthesisError(VoicebotError):
    """The synthesizer failed; one-line message."""


class Synthesizer(Protocol):
    sample_rate_hz: int

    def synthesize(self, text: str) -> bytes:
        """Render text to int16 mono PCM at ``sample_rate_hz``. Blocking: run in an executor."""
