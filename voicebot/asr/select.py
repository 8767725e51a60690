"""Choosing the recognizer: Vosk when a model is installed, else PocketSphinx."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Sequence

from voicebot.asr.base import RecognizerEngine, RecognizerError
from voicebot.asr.grammar import GrammarSet

log = logging.getLogger("voicebot.asr")

#: where `voicebot models adapt` puts the adapted PocketSphinx acoustic model
ADAPTED_POCKETSPHINX = "pocketsphinx-en-us-adapted"


def find_vosk_model(vosk_model: Path | None, models_dir: Path) -> Path | None:
    """The configured model, else the first model directory under models_dir (by name)."""
    if vosk_model is not None:
        return vosk_model
    if not models_dir.is_dir():
        return None
    for candidate in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if (candidate / "am").is_dir() or (candidate / "final.mdl").exists():
            return candidate
    return None


def find_pocketsphinx_model(configured: Path | None, models_dir: Path) -> Path | None:
    """The configured acoustic model, else the adapted one when it has been built, else None (stock)."""
    if configured is not None:
        return configured
    adapted = models_dir / ADAPTED_POCKETSPHINX
    return adapted if (adapted / "mdef").is_file() else None


def open_engine(kind: str, *, vosk_model: Path | None, models_dir: Path, grammars: GrammarSet,
                open_sentences: Sequence[str], sample_rate_hz: int = 16000,
                max_alternatives: int = 5, pocketsphinx_model: Path | None = None,
                workers: int = 0, ready_calls: int = 1) -> RecognizerEngine:
    """The recognizer to use. ``workers`` > 0 runs PocketSphinx in that many processes
    (its binding holds the GIL while decoding); Vosk releases the GIL and runs in-process.
    ``ready_calls``: per process, recognizers are kept built for this many calls at once."""
    if kind not in ("auto", "vosk", "pocketsphinx"):
        raise RecognizerError(f"unknown recognizer {kind!r}: use auto, vosk or pocketsphinx")
    model = find_vosk_model(vosk_model, models_dir) if kind in ("auto", "vosk") else None
    if kind == "vosk" and model is None:
        raise RecognizerError(f"no Vosk model: set VOICEBOT_VOSK_MODEL or run "
                              f"`voicebot models download NAME` (models dir {models_dir})")
    engine: RecognizerEngine
    if model is not None:
        from voicebot.asr.vosk import VoskEngine

        engine = VoskEngine(model, grammars, sample_rate_hz=sample_rate_hz, max_alternatives=max_alternatives)
    else:
        from voicebot.asr.pocketsphinx import PocketSphinxEngine

        acoustic = find_pocketsphinx_model(pocketsphinx_model, models_dir)
        if acoustic is None:
            log.warning("PocketSphinx runs its stock model; `voicebot models adapt` (make does it) is far more "
                        "accurate on synthetic test calls")
        factory = functools.partial(PocketSphinxEngine, grammars, list(open_sentences), sample_rate_hz=sample_rate_hz,
                                    max_alternatives=max_alternatives, acoustic_model=acoustic,
                                    ready_calls=ready_calls)
        if workers > 0:
            from voicebot.asr.process import ProcessEngine

            engine = ProcessEngine(factory, workers)
        else:
            engine = factory()
    log.warning("speech recognition: %s, model %s", engine.name, engine.model_name)
    return engine
