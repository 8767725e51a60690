"""N-best sentences and sentence scores from a Sphinx word lattice."""

from __future__ import annotations

import math

import pytest

from voicebot.asr.lattice import distinct_paths, parse_sphinx_lattice, sentence_score

# <s> then "dash" or "x." then "b." or "d." then </s>; scores in log base e (log_base=e below).
# The best path through each node never says "dash d.": dash leads to b. (-1 vs -4), d. is reached best from x.
LATTICE = """# toy
Frames 100
Nodes 7
0 <s> 0 0 0
1 dash 10 10 40
2 x. 10 10 40
3 b.(2) 50 50 80
4 d. 50 50 80
5 <sil> 80 80 90
6 </s> 90 90 100
Initial 0
Final 6
Edges
0 1 -1
0 2 -2
1 3 -1
1 4 -4
2 3 -3
2 4 -1
3 5 -1
4 5 -1
5 6 0
End
"""


def _lattice():
    return parse_sphinx_lattice(LATTICE, math.e)


def test_distinct_paths_gives_the_best_path_through_each_node() -> None:
    paths = {p.words: p.score for p in distinct_paths(_lattice(), limit=10)}
    assert paths == {("dash", "b."): -3.0, ("x.", "d."): -4.0}  # no "dash d." nor "x. b."


def test_sentence_score_scores_a_sentence_no_best_path_holds() -> None:
    lattice = _lattice()
    assert sentence_score(lattice, ["dash", "d."]) == pytest.approx(-6.0)
    assert sentence_score(lattice, ["dash", "b."]) == pytest.approx(-3.0)
    assert sentence_score(lattice, ["dash", "d."], word_penalty=-0.5) == pytest.approx(-7.0)


def test_sentence_score_is_none_for_words_the_lattice_cannot_say() -> None:
    lattice = _lattice()
    assert sentence_score(lattice, ["dash"]) is None
    assert sentence_score(lattice, ["d.", "dash"]) is None
    assert sentence_score(lattice, ["dash", "d.", "d."]) is None
