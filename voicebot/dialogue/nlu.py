"""Intent matching for open speech.

A caller never says the example sentence verbatim, and the recognizer adds its
own errors. So the matcher learns from the scenario's examples which
meaning-bearing stems, stem pairs, word fragments and concepts (the scenario's
synonym classes: "branch", "office" and "address" all say PLACE) point to
which intent, with a regularised logistic regression that also knows an
off-topic class. Its probability is the confidence; below the scenario's
threshold, or off-topic, the turn is a no-match.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import snowballstemmer
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from voicebot.dialogue.scenario import Intent

#: the label of the off-topic class
NONE = "none"

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
    #: the three most likely classes with their probabilities, for diagnostics
    scores: tuple[tuple[str, float], ...] = ()


class IntentMatcher:
    def __init__(self, intents: Sequence[Intent], threshold: float,
                 concepts: Mapping[str, Sequence[str]] | None = None,
                 off_topic: Sequence[str] = (), regularisation_c: float = 10.0) -> None:
        self._threshold = threshold
        self._stemmer = snowballstemmer.stemmer("english")
        self._concepts: dict[str, list[str]] = {}
        for concept, words in (concepts or {}).items():
            for w in words:
                for key in {w.lower(), self._stemmer.stemWord(w.lower())}:
                    self._concepts.setdefault(key, []).append(f"@{concept}")
        texts = [e for i in intents for e in i.examples] + list(off_topic)
        labels = [i.id for i in intents for _ in i.examples] + [NONE] * len(off_topic)
        self._vectorizer = DictVectorizer()
        x = self._vectorizer.fit_transform([self._features(t) for t in texts])
        self._model = LogisticRegression(C=regularisation_c, solver="newton-cg", max_iter=1000)
        # A few hundred examples: BLAS threads only contend with the calls being served.
        with threadpool_limits(limits=1):
            self._model.fit(x, labels)
        self._classes: list[str] = [str(c) for c in self._model.classes_]
        # multinomial: probabilities are the softmax of these (numpy is cheaper per call than sklearn)
        self._weights = self._model.coef_.T
        self._bias = self._model.intercept_

    def match(self, text: str) -> IntentMatch:
        feats = self._features(text)
        if not feats:
            return IntentMatch(None, 0.0)
        logits = np.asarray(self._vectorizer.transform([feats]) @ self._weights)[0] + self._bias
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        ranked = sorted(zip(self._classes, (float(p) for p in probs)), key=lambda kv: kv[1], reverse=True)
        best, confidence = next((c, p) for c, p in ranked if c != NONE)
        on_topic = ranked[0][0] != NONE and confidence >= self._threshold
        return IntentMatch(best if on_topic else None, round(confidence, 4),
                           tuple((c, round(p, 4)) for c, p in ranked[:3]))

    def _features(self, text: str) -> Counter[str]:
        words = [w for w in normalize(text) if w not in _STOPWORDS]
        stems = self._stemmer.stemWords(words)
        feats: Counter[str] = Counter(stems)
        for w, s in zip(words, stems):
            feats.update(self._concepts.get(w) or self._concepts.get(s) or ())
        feats.update(f"{a}_{b}" for a, b in zip(stems, stems[1:]))
        for s in stems:
            if len(s) >= 5:
                padded = f"<{s}>"
                feats.update({f"#{padded[i:i + 4]}": 0.3 for i in range(len(padded) - 3)})
        return feats
