"""Vosk (Kaldi) recognizer: one model per process, one KaldiRecognizer per call.

Grammar mode: models with a lookahead graph (graph/HCLr.fst + graph/Gr.fst)
accept a runtime grammar, a JSON list of phrases. Vosk joins them in a loop,
so a caller may say several phrases in a row; a list of single words
therefore allows any sequence of those words. We pass every sentence of a
grammar when the list is short, else its words. Words the model does not
know would be dropped silently by Vosk (it only logs "Ignoring word missing
in vocabulary"), so we check every grammar word with the model's own lookup
and report the missing ones. Big static-graph models (HCLG.fst) cannot take
a grammar: they decode open speech in every state, and we say so once.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import vosk

from voicebot.asr.base import Recognition, RecognizerError
from voicebot.asr.grammar import GrammarSet, normalize_result, spoken_word
from voicebot.events import Alternative

log = logging.getLogger("voicebot.asr")


@dataclass(frozen=True, slots=True)
class VoskGrammarPlan:
    """What one grammar becomes for this model."""

    phrases: tuple[str, ...]
    missing_words: tuple[str, ...]


class VoskEngine:
    name = "vosk"

    def __init__(
        self,
        model_dir: Path,
        grammars: GrammarSet,
        sample_rate_hz: int = 16000,
        *,
        max_alternatives: int = 5,
        strict_vocabulary: bool = False,
    ) -> None:
        model_dir = Path(model_dir)
        vosk.SetLogLevel(-1)
        if not (model_dir / "am" / "final.mdl").is_file() and not (model_dir / "final.mdl").is_file():
            raise RecognizerError(f"not a Vosk model directory (no am/final.mdl): {model_dir}")
        try:
            self._model = vosk.Model(str(model_dir))
        except Exception as exc:  # vosk raises a bare Exception on load failure
            raise RecognizerError(f"cannot load Vosk model {model_dir}: {exc}") from None
        self.model_dir = model_dir
        self.model_name = model_dir.name if model_dir.name != "model" else model_dir.parent.name
        self.sample_rate_hz = sample_rate_hz
        self.max_alternatives = max(1, max_alternatives)
        self.grammars = grammars
        graph = model_dir / "graph"
        self.supports_grammars = (graph / "HCLr.fst").is_file() and (graph / "Gr.fst").is_file()
        self.plans: dict[str, VoskGrammarPlan] = {}
        if self.supports_grammars:
            self.plans = {name: self._plan(g.phrases(), g.words) for name, g in grammars.items()}
            self.missing_words: Mapping[str, tuple[str, ...]] = {
                name: p.missing_words for name, p in self.plans.items() if p.missing_words
            }
            for name, words in self.missing_words.items():
                message = f"grammar {name!r}: word(s) not in the Vosk model's vocabulary: {', '.join(words)}"
                if strict_vocabulary:
                    raise RecognizerError(message)
                log.warning("%s (left out)", message)
        else:
            self.missing_words = {}
            log.warning("Vosk model %s has a static graph: grammars are ignored, every state is open speech",
                        self.model_name)

    def knows(self, word: str) -> bool:
        return self._model.vosk_model_find_word(word) >= 0

    def _plan(self, phrases: list[str] | None, words: tuple[str, ...]) -> VoskGrammarPlan:
        spelled = {w: spoken_word(w) for w in words}
        missing = tuple(sorted({s for s in spelled.values() if not self.knows(s)}))
        if phrases is not None:
            items = [" ".join(spoken_word(w) for w in p.split()) for p in phrases]
            items = [p for p in items if not any(w in missing for w in p.split())]
        else:
            items = sorted({s for s in spelled.values() if s not in missing})
        return VoskGrammarPlan(tuple(dict.fromkeys(items)), missing)

    def open_stream(self) -> VoskStream:
        return VoskStream(self)

    def _recognizer(self, grammar: str | None) -> vosk.KaldiRecognizer:
        if grammar is not None and self.supports_grammars:
            phrases = list(self.plans[grammar].phrases)
            rec = vosk.KaldiRecognizer(self._model, float(self.sample_rate_hz), json.dumps(phrases, ensure_ascii=False))
        else:
            rec = vosk.KaldiRecognizer(self._model, float(self.sample_rate_hz))
        rec.SetMaxAlternatives(self.max_alternatives)
        rec.SetWords(True)
        return rec


class VoskStream:
    """One call's recognizer; a new KaldiRecognizer when the grammar changes."""

    def __init__(self, engine: VoskEngine) -> None:
        self._engine = engine
        self._grammar: str | None = None
        self._rec: vosk.KaldiRecognizer | None = engine._recognizer(None)
        self._rec_grammar: str | None = None
        self._pieces: list[Recognition] = []
        self._closed = False

    def set_grammar(self, grammar: str | None, *, partials: bool = True) -> None:
        if grammar is not None and grammar not in self._engine.grammars:
            raise RecognizerError(f"unknown grammar {grammar!r}")
        self._grammar = grammar

    def accept(self, pcm: bytes) -> None:
        rec = self._current()
        if rec.AcceptWaveform(bytes(pcm)):
            # Vosk found an endpoint inside our segment: keep that piece.
            piece = _parse(rec.Result())
            if piece.alternatives:
                self._pieces.append(piece)

    def partial(self) -> str:
        if self._closed or self._rec is None:
            return ""
        done = " ".join(p.alternatives[0].text for p in self._pieces)
        now = normalize_result(json.loads(self._rec.PartialResult()).get("partial", ""))
        return " ".join(t for t in (done, now) if t)

    def finish(self) -> Recognition:
        rec = self._current()
        last = _parse(rec.FinalResult())
        pieces = [*self._pieces, last] if last.alternatives else list(self._pieces)
        self._pieces = []
        if not pieces:
            return Recognition(())
        if len(pieces) == 1:
            return pieces[0]
        # Several pieces: join their best texts; alternatives vary the last piece.
        head = " ".join(p.alternatives[0].text for p in pieces[:-1])
        conf = min(p.alternatives[0].confidence for p in pieces[:-1])
        return Recognition(
            tuple(Alternative(f"{head} {a.text}".strip(), min(conf, a.confidence)) for a in pieces[-1].alternatives)
        )

    def close(self) -> None:
        self._closed = True
        self._rec = None

    def _current(self) -> vosk.KaldiRecognizer:
        if self._closed:
            raise RecognizerError("recognizer stream is closed")
        if self._rec is None or self._rec_grammar != self._grammar:
            self._rec = self._engine._recognizer(self._grammar)
            self._rec_grammar = self._grammar
        return self._rec


def _parse(result_json: str) -> Recognition:
    """Vosk's JSON (alternatives with total scores) to an n-best with shares in [0, 1]."""
    data = json.loads(result_json)
    alts = data.get("alternatives")
    if alts is None:
        text = normalize_result(data.get("text", ""))
        words = data.get("result") or []
        conf = min((float(w.get("conf", 1.0)) for w in words), default=1.0)
        return Recognition((Alternative(text, conf),) if text else ())
    scored: dict[str, float] = {}
    for a in alts:
        text = normalize_result(a.get("text", ""))
        if text and text not in scored:
            scored[text] = float(a.get("confidence", 0.0))
    if not scored:
        return Recognition(())
    top = max(scored.values())
    weights = {t: math.exp(max(-50.0, s - top)) for t, s in scored.items()}
    total = sum(weights.values())
    ranked = sorted(scored, key=lambda t: -scored[t])
    return Recognition(tuple(Alternative(t, round(weights[t] / total, 4)) for t in ranked))
