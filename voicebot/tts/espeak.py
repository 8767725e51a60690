"""Speech out through pyttsx3's espeak-ng driver (the only module that imports pyttsx3).

On Linux pyttsx3 drives libespeak-ng, which is one engine per process with one
current voice and rate. Every render therefore takes a process-wide lock, sets
this synthesizer's voice and rate, and renders to a temporary WAV file.

pyttsx3 2.99's espeak driver has traps that shape this module:

- ``runAndWait()`` returns as soon as espeak *starts*: the queued end-of-loop
  command runs before synthesis, which then happens on espeak's own thread.
  The WAV may not exist yet when it returns, so we wait for the driver's
  ``finished-utterance`` notification, sent after the file is written.
- That end-of-loop command calls ``stop()``, which cancels whatever espeak
  still has queued, such as a rate change made while espeak's thread was
  finishing the previous text. We wait for espeak to go idle around changes.
- Errors of a queued ``setProperty("voice", ...)`` are swallowed and the old
  voice stays, and an unknown variant (``en-us+nosuch``) is silently dropped.
  We resolve names against the voice list and read the voice back.
- ``save_to_file`` prints "Audio saved to ..." on stdout; we silence it.

Rendering in-process is not bit-exact from call to call (espeak carries some
state from one text to the next; lengths vary by about 1%). Prompts do not
care; where reproducible audio matters (test calls) use the espeak-ng program.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import pyttsx3
import soundfile

from voicebot.audio.resample import resample
from voicebot.tts.base import SynthesisError

DEFAULT_VOICE = "en"  # espeak-ng's own default (British English)
MIN_RATE_WPM = 80
MAX_RATE_WPM = 450

# libespeak-ng is a process-wide singleton and pyttsx3 shares one engine per driver
# name, so all synthesizers in the process must take turns. This lock guards that
# external state; it is the only module-level object here that is not a constant.
_ESPEAK_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class EspeakVoice:
    """One espeak-ng voice: ``identifier`` is what espeak selects by, e.g. ``gmw/en-us``."""

    identifier: str
    language: str
    name: str


def _load() -> tuple[pyttsx3.Engine, ModuleType]:
    """pyttsx3's shared espeak engine and the driver's own libespeak-ng binding (for IsPlaying)."""
    try:
        from pyttsx3.drivers import _espeak  # loads libespeak-ng

        return pyttsx3.init("espeak"), _espeak
    except Exception as exc:
        raise SynthesisError(f"cannot start espeak-ng through pyttsx3: {exc} (is libespeak-ng1 installed?)") from None


def list_voices() -> list[EspeakVoice]:
    """The voices libespeak-ng offers (languages; variants such as ``+f3`` combine with any of them)."""
    with _ESPEAK_LOCK:
        engine, _ = _load()
        voices = engine.getProperty("voices")
    return [EspeakVoice(identifier=v.id, language=(v.languages or [""])[0].lower(), name=v.name) for v in voices]


def _resolve_voice(requested: str, voices: list[EspeakVoice]) -> str:
    """Map ``en-us``, ``gmw/en-us``, ``en-gb``, ``English (America)`` (+variant) to an identifier."""
    base, plus, variant = requested.strip().partition("+")
    wanted = base.strip().lower()
    for matches in (
        lambda v: v.identifier == wanted,
        lambda v: v.identifier.rsplit("/", 1)[-1] == wanted,
        lambda v: v.language == wanted,
        lambda v: v.name.lower() == wanted,
    ):
        found = [v for v in voices if matches(v)]
        if found:
            return found[0].identifier + (plus + variant.strip() if plus else "")
    languages = sorted({v.language for v in voices if v.language})
    close = difflib.get_close_matches(wanted, languages, n=5, cutoff=0.5) or [
        lang for lang in ("en-gb", "en-us", "en-gb-scotland", "de", "fr-fr") if lang in languages
    ]
    raise SynthesisError(
        f"unknown espeak-ng voice {requested!r}; try one of: {', '.join(close)} "
        "(all: espeak-ng --voices; variants such as +f3, +m2: espeak-ng --voices=variant)"
    )


class EspeakSynthesizer:
    """Renders text to int16 mono PCM at ``sample_rate_hz`` with espeak-ng via pyttsx3.

    ``voice`` is an espeak-ng voice name with an optional variant (``en-us``,
    ``en-gb-scotland``, ``en-us+f3``); None means espeak-ng's default ``en``.
    A bad voice or rate raises SynthesisError here, not in the middle of a call.
    """

    def __init__(self, sample_rate_hz: int = 16000, voice: str | None = None, rate_wpm: int = 170) -> None:
        if not isinstance(sample_rate_hz, int) or not 4000 <= sample_rate_hz <= 96000:
            raise SynthesisError(f"sample rate must be 4000..96000 Hz, got {sample_rate_hz!r}")
        if not isinstance(rate_wpm, int) or not MIN_RATE_WPM <= rate_wpm <= MAX_RATE_WPM:
            raise SynthesisError(
                f"speaking rate must be {MIN_RATE_WPM}..{MAX_RATE_WPM} words per minute, got {rate_wpm!r}"
            )
        self.sample_rate_hz = sample_rate_hz
        self.voice = voice
        self.rate_wpm = rate_wpm
        self.voice_id = _resolve_voice(voice or DEFAULT_VOICE, list_voices())
        with _ESPEAK_LOCK:
            # A strong reference keeps pyttsx3's shared (weakly cached) engine alive.
            self._engine, self._espeak = _load()
        self._render_native("a")  # proves the voice, variant included, takes effect

    def synthesize(self, text: str) -> bytes:
        """Render text to int16 mono PCM at ``sample_rate_hz``. Blocking: run in an executor."""
        if not text.strip():
            return b""
        samples, native_hz = self._render_native(text)
        return resample(samples, native_hz, self.sample_rate_hz).astype("<i2", copy=False).tobytes()

    def _render_native(self, text: str) -> tuple[np.ndarray, int]:
        """Speak ``text`` to a temporary WAV at espeak's own rate (22050 Hz) and read it back."""
        with _ESPEAK_LOCK, tempfile.TemporaryDirectory(prefix="voicebot-tts-") as tmp:
            path = os.path.join(tmp, "speech.wav")
            outcome: dict[str, bool] = {}
            finished = threading.Event()

            def on_finished(completed: bool = True, **_: object) -> None:
                outcome["completed"] = completed
                finished.set()

            token = self._engine.connect("finished-utterance", on_finished)
            try:
                self._apply_voice_and_rate()
                self._engine.save_to_file(text, path)
                with contextlib.redirect_stdout(io.StringIO()):
                    self._engine.runAndWait()
                    done = finished.wait(timeout=10.0 + 0.05 * len(text))
                self._wait_until_idle()
            except SynthesisError:
                raise
            except Exception as exc:
                raise SynthesisError(f"espeak-ng failed: {exc}") from None
            finally:
                self._engine.disconnect(token)
            if not done or not outcome.get("completed") or not os.path.exists(path):
                raise SynthesisError(f"espeak-ng did not finish rendering {len(text)} characters of text")
            samples, native_hz = soundfile.read(path, dtype="int16", always_2d=False)
        return samples, int(native_hz)

    def _apply_voice_and_rate(self) -> None:
        """Select this synthesizer's voice and rate on the shared engine, and check the voice took."""
        self._wait_until_idle()
        if self._engine.isBusy():  # a fresh pyttsx3 engine defers commands until its first loop
            self._engine.runAndWait()
        self._engine.setProperty("voice", self.voice_id)
        self._engine.setProperty("rate", self.rate_wpm)
        self._wait_until_idle()
        current = str(self._engine.getProperty("voice") or "").lower()
        if current != self.voice_id.lower():
            raise SynthesisError(
                f"espeak-ng rejected voice {self.voice or DEFAULT_VOICE!r} (got {current or 'none'}); "
                "list voices with espeak-ng --voices and variants with espeak-ng --voices=variant"
            )

    def _wait_until_idle(self, timeout_s: float = 5.0) -> None:
        """Wait until espeak's own thread has run its queue (rate changes, the tail of a text)."""
        deadline = time.monotonic() + timeout_s
        while self._espeak.IsPlaying():
            if time.monotonic() > deadline:
                raise SynthesisError(f"espeak-ng stayed busy for more than {timeout_s:g} s")
            time.sleep(0.001)
