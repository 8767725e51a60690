"""Intent matching for open speech.

A caller never says the example sentence verbatim, and the recognizer adds its
own errors, so matching compares meaning-bearing stems, stem pairs and word
fragments (TF-IDF, cosine) against every example of every intent, and against
each intent's centroid. Below the scenario's threshold the turn is a no-match.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import snowballstemmer

from voicebot.dialogue.scenario import Intent

_CONTRACTIONS = {
    "i'm": "i am", "i'd": "i would", "i've": "i have", "i'll": "i will", "it's": "it is",
    "that's": "that is", "what's": "what is", "where's": "where is", "when's": "when is",
    "don't": "do not", "doesn't": "does not", "didn't": "did not", "can't": "can not",
    "cannot": "can not", "won't": "will not", "isn't": "is not", "aren't": "are not",
    "wasn't": "was not", "couldn't": "could not", "you're": "you are", "there's": "there is",
    "let's": "let us", "wanna": "want to", "gonna": "going to",
}

# Words that carry no intent on a phone line. Negations and pronouns that
# change meaning ("no", "not", "me") are deliberately kept.
_STOPWORDS = frozenset("""
a an the and or but of to in on at for with by from about as is are was were be been being am
do does did doing have has had having this that these those it its there here then than so
i you your yours we our us they them their he she his her my mine
uh um er erm hmm hi hello hey well oh okay ok please just like really very also maybe
would could should will shall can may might must
""".split())

_WORD = re.compile(r"[a-z0-9']+")


def normalize(text: str) -> list[str]:
    """Lower-case words with contractions expanded."""
    words: list[str] = []
    for w in _WORD.findall(text.lower()):
        words.extend(_CONTRACTIONS.get(w, w).split())
    return words


@dataclass(frozen=True, slots=True)
class IntentMatch:
    intent: str | None
    confidence: float
    #: best score per intent, for diagnostics
    scores: tuple[tuple[str, float], ...] = ()


class IntentMatcher:
    def __init__(self, intents: Sequence[Intent], threshold: float) -> None:
        self._threshold = threshold
        self._stemmer = snowballstemmer.stemmer("english")
        labelled = [(i.id, self._features(e)) for i in intents for e in i.examples]
        docs = Counter(f for _, feats in labelled for f in set(feats))
        n = len(labelled)
        self._idf = {f: math.log((1 + n) / (1 + c)) + 1.0 for f, c in docs.items()}
        # Words never seen in any example still count against similarity.
        self._unseen_idf = math.log(1 + n) + 1.0
        self._examples: list[tuple[str, dict[str, float]]] = [
            (intent, self._vector(feats)) for intent, feats in labelled
        ]
        self._centroids: dict[str, dict[str, float]] = {}
        for intent in dict.fromkeys(i for i, _ in labelled):
            total: Counter[str] = Counter()
            for i, vec in self._examples:
                if i == intent:
                    total.update(vec)
            self._centroids[intent] = _unit(total)

    def match(self, text: str) -> IntentMatch:
        vec = self._vector(self._features(text))
        if not vec:
            return IntentMatch(None, 0.0)
        best: dict[str, float] = {}
        for intent, ex in self._examples:
            s = _dot(vec, ex)
            if s > best.get(intent, 0.0):
                best[intent] = s
        scores = {i: 0.65 * best.get(i, 0.0) + 0.35 * _dot(vec, c) for i, c in self._centroids.items()}
        ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
        top, top_score = ranked[0]
        runner = ranked[1][1] if len(ranked) > 1 else 0.0
        # A close runner-up means the words fit two intents: be less sure.
        confidence = round(max(0.0, min(1.0, top_score - 0.5 * max(0.0, runner - 0.5 * top_score))), 4)
        intent = top if confidence >= self._threshold else None
        return IntentMatch(intent, confidence, tuple(ranked[:3]))

    def _features(self, text: str) -> list[str]:
        words = [w for w in normalize(text) if w not in _STOPWORDS]
        stems = self._stemmer.stemWords(words)
        feats = list(stems)
        feats += [f"{a}_{b}" for a, b in zip(stems, stems[1:])]
        for s in stems:
            if len(s) >= 5:
                padded = f"<{s}>"
                feats += [f"#{padded[i:i + 4]}" for i in range(len(padded) - 3)]
        return feats

    def _vector(self, feats: Iterable[str]) -> dict[str, float]:
        counts = Counter(feats)
        vec: dict[str, float] = {}
        for f, c in counts.items():
            idf = self._idf.get(f, self._unseen_idf)
            weight = 0.3 if f.startswith("#") else 1.0
            vec[f] = weight * (1.0 + math.log(c)) * idf
        return _unit(vec)


def _unit(vec: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(v * v for v in vec.values()))
    return {k: v / norm for k, v in vec.items()} if norm else {}


def _dot(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(k, 0.0) for k, v in a.items())
