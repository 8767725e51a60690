"""PocketSphinx recognizer: the zero set-up default, with the US-English model from its wheel.

Each dialogue state is an FSG search compiled from its JSGF grammar; open
speech uses a domain trigram (see lm.py). Decoders are pooled: one per live
call, reused by the next call, all built from the same files.

Cepstral mean normalisation decides more than any beam setting. Live CMN
only updates its mean at the end of an utterance, weighting its prior like
five seconds of speech, so a short turn is decoded entirely with the mean it
started from; a caller whose voice or line differs from it comes out as word
salad (first turns of calls: 28 of 64 right, against 40 of 64 with the
utterance's own mean). So every stream keeps its caller's mean, learnt from
the caller's own turns, and a turn whose own mean lies far from the one it was
decoded with is decoded again with its own mean. In practice that is nearly
every turn (all 21 of the sample calls' turns), so a decoding while the caller
speaks is wasted unless something reads its partial results: without them the
stream only runs a one-word probe search while the caller speaks (to learn the
turn's mean) and decodes the turn once, with that mean, when it ends.

Confidence is the best path's posterior probability; n-best alternatives
share it by their lattice path scores.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pocketsphinx

from voicebot.asr.base import Recognition, RecognizerError
from voicebot.asr.grammar import GrammarSet, normalize_result
from voicebot.asr.lattice import distinct_paths, parse_sphinx_lattice, sentence_score
from voicebot.asr.lm import LmOptions, build_arpa, general_unigrams, tokenize, unknown_words
from voicebot.events import Alternative

log = logging.getLogger("voicebot.asr")

OPEN_SEARCH = "_open"
#: a one-word grammar: the cheapest search that still runs the front end (and its live CMN)
PROBE_SEARCH = "_probe"
_LOG_BASE = 1.0001
#: live CMN weighs its prior mean like this many frames of speech
_CMN_PRIOR_FRAMES = 500
#: decode a turn again when its own cepstral mean is this far (euclidean) from the mean it was decoded with
_CMN_REDECODE_DISTANCE = 3.0
_BUILD_VERSION = "1"


@dataclass(frozen=True, slots=True)
class PocketSphinxOptions:
    """Decoder settings; ``decoder`` holds PocketSphinx options by name (lw, wip, beam, ...)."""

    decoder: dict[str, object] = field(
        default_factory=lambda: {
            # more Gaussians per frame: +2 of 21 identity codes right in our runs
            "topn": 16,
            # dither is added here, per utterance (see dither_seed)
            "dither": False,
        }
    )
    #: calls carry stretches of exact digital silence; without dither their log
    #: energy breaks the cepstral mean and digits go wrong. PocketSphinx's own
    #: dither draws from one process-wide generator, so a turn's words depended
    #: on whatever the process had decoded before (the same call replayed twice
    #: came out differently); ours starts from this seed at every utterance.
    dither_seed: int = 1
    #: PocketSphinx settings for the grammar (FSG) searches only: a stronger word
    #: insertion penalty stops a trailing breath from becoming one more digit
    #: ("nine hundred fifty" heard as 958); corpus 46 -> 47 of 59 calls
    grammar_decoder: dict[str, object] = field(default_factory=lambda: {"wip": 0.1})
    #: lattices of very long grammar utterances are slow to search; those get
    #: the single best result only (a spoken identity code is ~500 frames)
    max_lattice_frames: int = 1500
    #: open-speech n-best scores are on a much finer scale than lattice paths
    open_share_temperature: float = 0.02
    lm: LmOptions = LmOptions()
    nbest: int = 5
    #: temperature (nats) turning lattice path score gaps into shares of the confidence
    share_temperature_nats: float = 6.0
    #: word penalty (natural log) when ranking lattice paths
    lattice_word_penalty: float = -2.0
    #: how much a grammar's JSGF weights count against lattice path scores when
    #: ranking (PocketSphinx's own language weight, lw, which its first pass applies)
    grammar_prior_weight: float = 6.5
    #: the decoder's A* n-best: paths read, and distinct sentences kept (a
    #: spoken identity code: ~1500 paths, 30 ms, for 14 sentences)
    astar_paths: int = 2000
    astar_sentences: int = 30
    #: decoders kept built ahead of the next call (a build takes ~0.4 s of CPU
    #: and ~65 MB); refilled in the background, so a new call's greeting never
    #: waits for one
    spare_decoders: int = 1


def stock_model_dir() -> Path:
    """The US-English model bundled in the pocketsphinx wheel (acoustic model in en-us/, dictionary beside it)."""
    return Path(pocketsphinx.get_model_path()) / "en-us"


def read_dictionary(path: Path) -> dict[str, list[str]]:
    """CMU-style dictionary: base word -> pronunciations (variants ``word(2)`` folded in)."""
    prons: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split(maxsplit=1)
            if len(parts) < 2:
                continue
            word = parts[0]
            if word.endswith(")") and "(" in word:
                word = word[: word.index("(")]
            prons.setdefault(word, []).append(parts[1].split("#")[0].strip())
    return prons


class PocketSphinxEngine:
    """Shared model files and a pool of decoders; ``open_stream()`` per call."""

    name = "pocketsphinx"

    def __init__(
        self,
        grammars: GrammarSet,
        open_sentences: Sequence[str],
        *,
        cache_dir: Path | None = None,
        options: PocketSphinxOptions = PocketSphinxOptions(),
        model_dir: Path | None = None,
        acoustic_model: Path | None = None,
        sample_rate_hz: int = 16000,
        max_alternatives: int | None = None,
        ready_calls: int = 1,
    ) -> None:
        """``ready_calls``: decoders are built (in the background after the first) for this many
        calls at once, so a burst of calls on a fresh service does not wait for them."""
        if sample_rate_hz != 16000:
            raise RecognizerError(f"the pocketsphinx en-us model needs 16000 Hz audio, not {sample_rate_hz}")
        if max_alternatives is not None:
            options = replace(options, nbest=max(1, max_alternatives))
        self.grammars = grammars
        self.options = options
        self.model_dir = Path(model_dir) if model_dir else stock_model_dir()
        hmm = Path(acoustic_model) if acoustic_model else self.model_dir / self.model_dir.name
        self.model_name = f"{self.model_dir.name}, acoustic model {hmm}"
        self.sample_rate_hz = 16000
        dict_path = self.model_dir / "cmudict-en-us.dict"
        if not (hmm / "mdef").is_file() or not dict_path.is_file():
            raise RecognizerError(f"pocketsphinx model not found in {hmm if dict_path.is_file() else self.model_dir}")
        self._hmm = hmm
        full_dict = read_dictionary(dict_path)
        self._check_grammar_words(full_dict)

        def known(w: str) -> bool:
            return w in full_dict and not w.endswith(".")

        missing = unknown_words(open_sentences, known)
        if missing:
            log.warning("open-speech words not in the pocketsphinx dictionary (left out): %s", " ".join(missing))
        cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "voicebot-asr"
        cache.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(
            repr((_BUILD_VERSION, list(open_sentences), options.lm, str(self.model_dir), str(hmm))).encode()
        ).hexdigest()[:16]
        self._lm_path = cache / f"open-{key}.arpa"
        if not self._lm_path.exists():
            general = general_unigrams(known, options.lm.general_words)
            _write_atomic(self._lm_path, build_arpa(open_sentences, general=general, options=options.lm, known=known))
        lm_words = _arpa_words(self._lm_path)
        words = set(lm_words) | set(grammars.vocabulary)
        dkey = hashlib.sha256(repr(sorted(words)).encode()).hexdigest()[:16]
        self._dict_path = cache / f"dict-{dkey}.dict"
        if not self._dict_path.exists():
            lines = []
            for w in sorted(words):
                for i, pron in enumerate(full_dict.get(w, [])):
                    lines.append(f"{w}{'' if i == 0 else f'({i + 1})'} {pron}")
            _write_atomic(self._dict_path, "\n".join(lines) + "\n")
        self._probe_word = min(w for w in words if w in full_dict)
        self._lock = threading.Lock()
        self._idle: list[pocketsphinx.Decoder] = []
        self._refilling = False
        self._ready_calls = ready_calls
        self._built = 0
        # Build one decoder now so configuration errors surface at start-up.
        self._idle.append(self._new_decoder())
        self._initial_cmn = _cmn_of(self._idle[0])
        self._start_refill()

    def _check_grammar_words(self, full_dict: dict[str, list[str]]) -> None:
        for name, grammar in self.grammars.items():
            missing = sorted(w for w in grammar.vocabulary if w not in full_dict)
            if missing:
                raise RecognizerError(
                    f"grammar {name!r}: word(s) not in the pocketsphinx dictionary: {', '.join(missing)}"
                )

    def _new_decoder(self) -> pocketsphinx.Decoder:
        kwargs: dict[str, object] = {
            "hmm": str(self._hmm),
            "dict": str(self._dict_path),
            "lm": None,
            "logfn": os.devnull,
            "loglevel": "FATAL",
            # the lattice best path fixes many digit errors of the first pass
            "bestpath": True,
        }
        kwargs.update(self.options.decoder)
        try:
            decoder = pocketsphinx.Decoder(**kwargs)
            decoder.add_lm_file(OPEN_SEARCH, str(self._lm_path))
            # FSG searches read lw/wip when they are added.
            config = decoder.config
            saved = {k: config[k] for k in self.options.grammar_decoder}
            for k, v in self.options.grammar_decoder.items():
                config[k] = v
            for name, grammar in self.grammars.items():
                decoder.add_jsgf_string(name, grammar.to_jsgf())
            decoder.add_jsgf_string(PROBE_SEARCH, f"#JSGF V1.0;\ngrammar probe;\npublic <probe> = {self._probe_word};\n")
            for k, v in saved.items():
                config[k] = v
            decoder.activate_search(OPEN_SEARCH)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise RecognizerError(f"pocketsphinx could not be set up: {exc}") from None
        with self._lock:
            self._built += 1
        return decoder

    def open_stream(self) -> PocketSphinxStream:
        with self._lock:
            decoder = self._idle.pop() if self._idle else None
        if decoder is None:
            decoder = self._new_decoder()
        self._start_refill()
        return PocketSphinxStream(self, decoder)

    def _wants_decoder(self) -> bool:
        """Under the lock: fewer spares than wanted, or fewer decoders than calls to be ready for."""
        return len(self._idle) < self.options.spare_decoders or self._built < self._ready_calls

    def _start_refill(self) -> None:
        with self._lock:
            if self._refilling or not self._wants_decoder():
                return
            self._refilling = True
        threading.Thread(target=self._refill, name="pocketsphinx-spare", daemon=True).start()

    def _refill(self) -> None:
        while True:
            try:
                decoder: pocketsphinx.Decoder | None = self._new_decoder()
            except RecognizerError as e:
                log.warning("no spare recognizer could be built: %s", e)
                decoder = None
            with self._lock:
                if decoder is not None:
                    self._idle.append(decoder)
                if decoder is None or not self._wants_decoder():
                    self._refilling = False
                    return

    @property
    def ready_decoders(self) -> int:
        """Decoders built and waiting for the next call."""
        with self._lock:
            return len(self._idle)

    def _release(self, decoder: pocketsphinx.Decoder) -> None:
        with self._lock:
            self._idle.append(decoder)


class PocketSphinxStream:
    """One call's recognizer; not thread-safe, used from one executor thread at a time."""

    def __init__(self, engine: PocketSphinxEngine, decoder: pocketsphinx.Decoder) -> None:
        self._engine = engine
        self._decoder: pocketsphinx.Decoder | None = decoder
        self._search = OPEN_SEARCH
        self._partials = True
        self._in_utterance = False
        # the utterance runs the probe search; its words come from one decode at its end
        self._probing = False
        self._audio = bytearray()
        # this caller's cepstral mean, learnt from their turns (frames-weighted)
        self._caller_cmn = engine._initial_cmn
        self._caller_frames = 0
        self._cmn_used = engine._initial_cmn
        self._dither = np.random.default_rng(engine.options.dither_seed)
        _reset_noise_tracker(decoder)
        fd, path = tempfile.mkstemp(prefix="voicebot-lattice-", suffix=".lat")
        os.close(fd)
        self._lattice_path = path

    def set_grammar(self, grammar: str | None, *, partials: bool = True) -> None:
        if grammar is not None and grammar not in self._engine.grammars:
            raise RecognizerError(f"unknown grammar {grammar!r}")
        self._search = OPEN_SEARCH if grammar is None else grammar
        self._partials = partials

    def accept(self, pcm: bytes) -> None:
        decoder = self._live()
        if not self._in_utterance:
            self._probing = not self._partials
            decoder.activate_search(PROBE_SEARCH if self._probing else self._search)
            self._cmn_used = self._caller_cmn
            _set_cmn(decoder, self._cmn_used)
            decoder.start_utt()
            self._in_utterance = True
            self._audio.clear()
            self._dither = np.random.default_rng(self._engine.options.dither_seed)
        pcm = _dithered(pcm, self._dither)
        self._audio += pcm
        decoder.process_raw(pcm)

    def partial(self) -> str:
        if not self._in_utterance or self._probing:
            return ""
        hyp = self._live().hyp()
        return normalize_result(hyp.hypstr) if hyp is not None else ""

    def finish(self) -> Recognition:
        if not self._in_utterance:
            return Recognition(())
        decoder = self._live()
        decoder.end_utt()
        self._in_utterance = False
        try:
            own = self._learn_cmn(decoder)
            if self._probing or (own is not None and math.dist(own, self._cmn_used) > _CMN_REDECODE_DISTANCE):
                if self._probing:
                    decoder.activate_search(self._search)
                _set_cmn(decoder, own or self._cmn_used)
                decoder.start_utt()
                decoder.process_raw(bytes(self._audio), False, False)
                decoder.end_utt()
            return self._result(decoder)
        finally:
            self._audio.clear()

    def _learn_cmn(self, decoder: pocketsphinx.Decoder) -> tuple[float, ...] | None:
        """This turn's own cepstral mean, recovered from the live mean it updated; folded into the caller's."""
        after, frames = _cmn_of(decoder), decoder.n_frames()
        if frames <= 0 or len(after) != len(self._cmn_used):
            return None
        w = _CMN_PRIOR_FRAMES
        own = tuple(((w + frames) * a - w * b) / frames for a, b in zip(after, self._cmn_used))
        if not all(math.isfinite(x) for x in own):
            return None
        total = self._caller_frames + frames
        self._caller_cmn = own if not self._caller_frames else tuple(
            (self._caller_frames * c + frames * o) / total for c, o in zip(self._caller_cmn, own))
        self._caller_frames = total
        return own

    def close(self) -> None:
        if self._decoder is None:
            return
        if self._in_utterance:
            self._decoder.end_utt()
            self._in_utterance = False
        self._engine._release(self._decoder)
        self._decoder = None
        try:
            os.unlink(self._lattice_path)
        except OSError:
            pass

    # ------------------------------------------------------------------ internals

    def _live(self) -> pocketsphinx.Decoder:
        if self._decoder is None:
            raise RecognizerError("recognizer stream is closed")
        return self._decoder

    def _result(self, decoder: pocketsphinx.Decoder) -> Recognition:
        hyp = decoder.hyp()
        first_pass = normalize_result(hyp.hypstr) if hyp is not None else ""
        if not first_pass:
            return Recognition(())
        top = max(0.0, min(1.0, decoder.logmath.exp(hyp.prob))) if hyp.prob else 0.5
        options = self._engine.options
        if self._search == OPEN_SEARCH:
            # The first pass knows the LM's weights, which the n-best scores are not
            # comparable with: it stays first, the n-best supplies the rest.
            paths = self._lm_alternatives(decoder)
            best, temp = first_pass, options.open_share_temperature
        else:
            # A grammar's best is the lattice's best re-scored with the grammar's own weights.
            paths = self._grammar_alternatives(decoder)
            best = max(paths, key=lambda p: p[1])[0] if paths else first_pass
            temp = options.share_temperature_nats
        scores = dict(paths)
        best_score = scores.get(best, max(scores.values(), default=0.0))
        weights = {text: math.exp(max(-50.0, min(0.0, s - best_score) / temp)) for text, s in scores.items()}
        weights[best] = 1.0
        ranked = [best] + [t for t, _ in sorted(paths, key=lambda p: -p[1]) if t != best]
        ranked = ranked[: options.nbest]
        alternatives = tuple(Alternative(t, round(top * weights[t], 4)) for t in ranked)
        return Recognition(alternatives)

    def _grammar_alternatives(self, decoder: pocketsphinx.Decoder) -> list[tuple[str, float]]:
        """Distinct sentences with their lattice path scores plus the grammar's log weights (natural log).

        Candidates are the best path through each lattice node and the decoder's
        own A* n-best; the latter finds combinations no single best path holds
        ("dash" from one path with the check letter of another).
        """
        options = self._engine.options
        if decoder.n_frames() > options.max_lattice_frames:
            return []
        try:
            lattice = decoder.get_lattice()
            if lattice is None:
                return []
            lattice.write(self._lattice_path)
            with open(self._lattice_path, encoding="utf-8") as f:
                parsed = parse_sphinx_lattice(f.read(), _LOG_BASE)
        except (RuntimeError, ValueError, OSError):
            return []
        penalty = options.lattice_word_penalty
        candidates = {p.words: p.score for p in distinct_paths(parsed, word_penalty=penalty, limit=options.nbest * 3)}
        for words in self._astar_sentences(decoder):
            if words not in candidates:
                score = sentence_score(parsed, words, word_penalty=penalty)
                if score is not None:
                    candidates[words] = score
        grammar = self._engine.grammars[self._search]
        out: dict[str, float] = {}
        for words, score in candidates.items():
            text = normalize_result(" ".join(words))
            prior = grammar.log_prior(words)
            total = score + options.grammar_prior_weight * (prior if prior is not None else 0.0)
            if text and total > out.get(text, -math.inf):
                out[text] = total
        return list(out.items())

    def _astar_sentences(self, decoder: pocketsphinx.Decoder) -> list[tuple[str, ...]]:
        """Distinct word strings from the decoder's A* n-best, which repeats a sentence once per timing."""
        options = self._engine.options
        seen: dict[tuple[str, ...], None] = {}
        try:
            for i, hyp in enumerate(decoder.nbest()):
                if i >= options.astar_paths or len(seen) >= options.astar_sentences:
                    break
                words = tuple(hyp.hypstr.split())
                if words:
                    seen.setdefault(words)
        except RuntimeError:
            return []
        return list(seen)

    def _lm_alternatives(self, decoder: pocketsphinx.Decoder) -> list[tuple[str, float]]:
        """The decoder's own A* n-best (it knows the LM scores), made distinct."""
        seen: dict[str, float] = {}
        try:
            for i, hyp in enumerate(decoder.nbest()):
                if i >= 60 or len(seen) >= self._engine.options.nbest:
                    break
                text = normalize_result(hyp.hypstr)
                if text and text not in seen:
                    seen[text] = math.log(hyp.score) if hyp.score > 0 else -1e9
        except RuntimeError:
            return []
        return list(seen.items())

def _reset_noise_tracker(decoder: pocketsphinx.Decoder) -> None:
    """A new caller: noise statistics start afresh, so a call decodes the same whoever called before.

    The binding calls this "deprecated and unnecessary" because decoders
    adapt anyway; for a pooled decoder it is what keeps calls independent.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        decoder.start_stream()


def _dithered(pcm: bytes, rng: np.random.Generator) -> bytes:
    """PocketSphinx's dither (one LSB added to a quarter of the samples), from our own generator."""
    samples = np.frombuffer(pcm, dtype="<i2")
    bump = rng.random(samples.size) < 0.25
    return np.minimum(samples.astype(np.int32) + bump, 32767).astype("<i2").tobytes()


def _cmn_of(decoder: pocketsphinx.Decoder) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in decoder.get_cmn(False).split(","))
    except (RuntimeError, ValueError):
        return ()


def _set_cmn(decoder: pocketsphinx.Decoder, mean: tuple[float, ...]) -> None:
    if mean:
        decoder.set_cmn(",".join(f"{x:.3f}" for x in mean))


def _arpa_words(path: Path) -> list[str]:
    words: list[str] = []
    in_unigrams = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = True
                continue
            if in_unigrams:
                if not line or line.startswith("\\"):
                    break
                parts = line.split()
                if len(parts) >= 2 and not parts[1].startswith("<"):
                    words.append(parts[1])
    return words


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def with_decoder_options(options: PocketSphinxOptions, **decoder: object) -> PocketSphinxOptions:
    """Options with some PocketSphinx settings changed (for tuning scripts)."""
    merged = dict(options.decoder)
    merged.update(decoder)
    return replace(options, decoder=merged)


__all__ = ["PocketSphinxEngine", "PocketSphinxOptions", "PocketSphinxStream", "tokenize"]
