"""A domain language model for open speech ("How can I help you?").

A trigram model trained on the scenario's example sentences knows how callers
phrase their requests, but on its own it forces every utterance into those
phrases: "bananas are yellow" would come out as some request. So its unigram
level is mixed with general English word frequencies (wordfreq), restricted to
words the engine can pronounce, and off-topic speech comes out as off-topic
words the intent matcher rejects.

Smoothing is interpolated Witten-Bell, which behaves well on a corpus of a few
hundred sentences, written as an ordinary ARPA backoff model. We write the
model ourselves because the mixing with an outside unigram distribution is
the point, and no well-kept ARPA writer does it (pocketsphinx's own builder
is fixed-discount only).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

BOS, EOS = "<s>", "</s>"
_WORD = re.compile(r"[a-z][a-z']*|[0-9]")
_DIGITS = "zero one two three four five six seven eight nine".split()


@dataclass(frozen=True, slots=True)
class LmOptions:
    """How the open-speech model is built.

    ``general_weight`` is the share of the unigram mass given to general
    English; ``general_words`` how many of its most frequent words join the
    vocabulary (only those the engine's dictionary knows).
    """

    general_weight: float = 0.3
    general_words: int = 10000
    order: int = 3


def tokenize(sentence: str) -> list[str]:
    """Lower-case words of a sentence; single digits become words."""
    words = _WORD.findall(sentence.lower().replace("’", "'"))
    return [_DIGITS[int(w)] if w.isdigit() else w.strip("'") for w in words if w.strip("'")]


def general_unigrams(known: Callable[[str], bool], top_n: int) -> dict[str, float]:
    """Relative frequencies of the ``top_n`` commonest English words ``known`` accepts."""
    import wordfreq

    words = [w for w in wordfreq.top_n_list("en", top_n) if re.fullmatch(r"[a-z][a-z']*", w) and known(w)]
    freqs = {w: wordfreq.word_frequency(w, "en") for w in words}
    total = sum(freqs.values()) or 1.0
    return {w: f / total for w, f in freqs.items()}


def build_arpa(
    sentences: Iterable[str],
    *,
    general: Mapping[str, float] | None = None,
    options: LmOptions = LmOptions(),
    known: Callable[[str], bool] | None = None,
) -> str:
    """ARPA text of a Witten-Bell trigram over ``sentences`` with ``general`` mixed into its unigrams.

    Sentence words ``known`` rejects are left out (the engine could not
    pronounce them); sentences are split there so no false n-grams appear.
    """
    corpus = [_split_unknown(tokenize(s), known) for s in sentences]
    segments = [seg for parts in corpus for seg in parts if seg]
    if not segments:
        raise ValueError("no usable open-speech sentences for the language model")
    counts = _count(segments, options.order)
    general = dict(general or {})
    weight = options.general_weight if general else 0.0
    return _write_arpa(_estimate(counts, options.order, general, weight), options.order)


def unknown_words(sentences: Iterable[str], known: Callable[[str], bool]) -> list[str]:
    """Sentence words the engine cannot pronounce, sorted."""
    return sorted({w for s in sentences for w in tokenize(s) if not known(w)})


def _split_unknown(words: list[str], known: Callable[[str], bool] | None) -> list[list[str]]:
    if known is None:
        return [words]
    parts: list[list[str]] = [[]]
    for w in words:
        if known(w):
            parts[-1].append(w)
        elif parts[-1]:
            parts.append([])
    return parts


def _count(segments: Sequence[Sequence[str]], order: int) -> list[Counter[tuple[str, ...]]]:
    """counts[n][ngram] for n = 1..order, with sentence boundary tokens."""
    counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order + 1)]
    for seg in segments:
        toks = [BOS, *seg, EOS]
        for n in range(1, order + 1):
            for i in range(len(toks) - n + 1):
                gram = tuple(toks[i : i + n])
                if n == 1 and gram == (BOS,):
                    continue
                counts[n][gram] += 1
    return counts


@dataclass
class _Model:
    probs: list[dict[tuple[str, ...], float]]
    backoffs: list[dict[tuple[str, ...], float]]


def _estimate(
    counts: list[Counter[tuple[str, ...]]], order: int, general: Mapping[str, float], general_weight: float
) -> _Model:
    # Unigrams: domain maximum likelihood mixed with general English.
    total = sum(counts[1].values())
    vocab = set(w for (w,) in counts[1]) | set(general)
    uni: dict[tuple[str, ...], float] = {}
    for w in vocab:
        domain = counts[1].get((w,), 0) / total
        uni[(w,)] = (1 - general_weight) * domain + general_weight * general.get(w, 0.0)
    probs: list[dict[tuple[str, ...], float]] = [{}, uni]
    backoffs: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]

    # Higher orders: interpolated Witten-Bell, P(w|h) = (c(h,w) + T(h) P(w|h')) / (c(h) + T(h)).
    for n in range(2, order + 1):
        followers: dict[tuple[str, ...], dict[str, int]] = defaultdict(dict)
        for gram, c in counts[n].items():
            followers[gram[:-1]][gram[-1]] = c
        level: dict[tuple[str, ...], float] = {}
        for hist, nxt in followers.items():
            c_h = sum(nxt.values())
            t_h = len(nxt)
            for w, c in nxt.items():
                lower = _prob(probs, backoffs, hist[1:], w)
                level[hist + (w,)] = (c + t_h * lower) / (c_h + t_h)
        probs.append(level)
        # Backoff weights of the histories of this level (order n-1 grams).
        for hist, nxt in followers.items():
            seen = sum(level[hist + (w,)] for w in nxt)
            seen_lower = sum(_prob(probs[:n], backoffs, hist[1:], w) for w in nxt)
            backoffs[n - 1][hist] = max(1e-12, 1.0 - seen) / max(1e-12, 1.0 - seen_lower)
    return _Model(probs, backoffs)


def _prob(
    probs: list[dict[tuple[str, ...], float]],
    backoffs: list[dict[tuple[str, ...], float]],
    hist: tuple[str, ...],
    w: str,
) -> float:
    """Backed-off probability of ``w`` after ``hist`` from the levels estimated so far."""
    gram = hist + (w,)
    n = len(gram)
    if n < len(probs) and gram in probs[n]:
        return probs[n][gram]
    if not hist:
        return 0.0
    return backoffs[len(hist)].get(hist, 1.0) * _prob(probs, backoffs, hist[1:], w)


def _write_arpa(model: _Model, order: int) -> str:
    lines = ["\\data\\"]
    levels = [model.probs[n] for n in range(1, order + 1)]
    # <s> is a history only; ARPA still lists it as a unigram.
    unigrams = dict(levels[0])
    unigrams[(BOS,)] = 0.0
    levels[0] = unigrams
    for n, level in enumerate(levels, start=1):
        lines.append(f"ngram {n}={len(level)}")
    for n, level in enumerate(levels, start=1):
        lines += ["", f"\\{n}-grams:"]
        for gram in sorted(level):
            p = level[gram]
            logp = -99.0 if p <= 0 else math.log10(p)
            text = f"{logp:.6f}\t{' '.join(gram)}"
            if n < order and gram in model.backoffs[n]:
                text += f"\t{math.log10(model.backoffs[n][gram]):.6f}"
            elif n < order and n == 1:
                text += "\t0.000000"
            lines.append(text)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)
