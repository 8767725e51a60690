"""Distinct n-best lists from a word lattice.

Decoders' own n-best iterators return the same words over and over with
different timings or pronunciations. Here every lattice node contributes the
best complete path through it; those paths are grouped by their word string,
so each alternative is a different sentence the grammar allows, scored by its
best path.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Sequence

_FILLER = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")
_VARIANT = re.compile(r"\(\d+\)$")


@dataclass(frozen=True, slots=True)
class LatticeNode:
    word: str
    start_frame: int


@dataclass(frozen=True, slots=True)
class LatticeEdge:
    source: int
    target: int
    #: log score of the source node's word ending where the target starts
    score: float


@dataclass(frozen=True, slots=True)
class Lattice:
    nodes: dict[int, LatticeNode]
    edges: tuple[LatticeEdge, ...]
    initial: int
    final: int


@dataclass(frozen=True, slots=True)
class PathScore:
    words: tuple[str, ...]
    #: natural-log path score (higher is better)
    score: float


def parse_sphinx_lattice(text: str, log_base: float = 1.0001) -> Lattice:
    """Read the Sphinx text lattice format (``Nodes`` / ``Edges`` sections)."""
    nodes: dict[int, LatticeNode] = {}
    edges: list[LatticeEdge] = []
    initial = final = -1
    section = ""
    to_nat = math.log(log_base)
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        head = parts[0]
        if head in ("Nodes", "Edges", "BestSegAscr"):
            section = head
        elif head == "Initial":
            initial = int(parts[1])
        elif head == "Final":
            final = int(parts[1])
        elif head in ("End", "Frames"):
            section = ""
        elif section == "Nodes" and len(parts) >= 3:
            nodes[int(head)] = LatticeNode(parts[1], int(parts[2]))
        elif section == "Edges" and len(parts) >= 3:
            edges.append(LatticeEdge(int(parts[0]), int(parts[1]), int(parts[2]) * to_nat))
    if initial not in nodes or final not in nodes:
        raise ValueError("lattice without initial or final node")
    return Lattice(nodes, tuple(edges), initial, final)


def spoken(word: str) -> str | None:
    """The word a lattice node says, without pronunciation variant; None for silence and noise."""
    if _FILLER.match(word):
        return None
    return _VARIANT.sub("", word)


def distinct_paths(lattice: Lattice, *, word_penalty: float = 0.0, limit: int = 10) -> list[PathScore]:
    """Up to ``limit`` distinct word strings, best first, each with its best path score.

    ``word_penalty`` (natural log, usually negative) is added per spoken word.
    """
    out_edges: dict[int, list[LatticeEdge]] = defaultdict(list)
    in_edges: dict[int, list[LatticeEdge]] = defaultdict(list)
    for e in lattice.edges:
        out_edges[e.source].append(e)
        in_edges[e.target].append(e)
    order = _topological(lattice, out_edges)

    def node_cost(n: int) -> float:
        return word_penalty if spoken(lattice.nodes[n].word) else 0.0

    neg = -math.inf
    fwd = {n: neg for n in lattice.nodes}
    fwd_from: dict[int, int] = {}
    fwd[lattice.initial] = node_cost(lattice.initial)
    for n in order:
        if fwd[n] == neg:
            continue
        for e in out_edges[n]:
            s = fwd[n] + e.score + node_cost(e.target)
            if s > fwd[e.target]:
                fwd[e.target] = s
                fwd_from[e.target] = n
    bwd = {n: neg for n in lattice.nodes}
    bwd_to: dict[int, int] = {}
    bwd[lattice.final] = 0.0
    for n in reversed(order):
        for e in out_edges[n]:
            if bwd[e.target] == neg:
                continue
            s = e.score + node_cost(e.target) + bwd[e.target]
            if s > bwd[n]:
                bwd[n] = s
                bwd_to[n] = e.target

    best: dict[tuple[str, ...], float] = {}
    for n in lattice.nodes:
        if fwd[n] == neg or bwd[n] == neg:
            continue
        total = fwd[n] + bwd[n]
        words = _path_words(lattice, n, fwd_from, bwd_to)
        if words is not None and total > best.get(words, neg):
            best[words] = total
    ranked = sorted(best.items(), key=lambda kv: -kv[1])[:limit]
    return [PathScore(words, score) for words, score in ranked]


def sentence_score(lattice: Lattice, words: Sequence[str], *, word_penalty: float = 0.0) -> float | None:
    """The best path score of a path through ``lattice`` saying exactly ``words`` (silence and noise
    between them free), or None when the lattice has no such path.

    Lets an n-best list from elsewhere (the decoder's own A*, which repeats one
    sentence once per timing) be scored on the same scale as ``distinct_paths``.
    """
    target = tuple(words)
    out_edges: dict[int, list[LatticeEdge]] = defaultdict(list)
    for e in lattice.edges:
        out_edges[e.source].append(e)
    neg = -math.inf
    # best[n][k]: best score of a path from the start to node n having said target[:k]
    best: dict[int, dict[int, float]] = defaultdict(dict)
    first = spoken(lattice.nodes[lattice.initial].word)
    if first is None:
        best[lattice.initial][0] = 0.0
    elif target[:1] == (first,):
        best[lattice.initial][1] = word_penalty
    for n in _topological(lattice, out_edges):
        here = best.get(n)
        if not here:
            continue
        for e in out_edges[n]:
            word = spoken(lattice.nodes[e.target].word)
            there = best[e.target]
            for k, score in here.items():
                if word is None:
                    k2, s = k, score + e.score
                elif k < len(target) and target[k] == word:
                    k2, s = k + 1, score + e.score + word_penalty
                else:
                    continue
                if s > there.get(k2, neg):
                    there[k2] = s
    final = best.get(lattice.final, {}).get(len(target))
    return final


def _path_words(
    lattice: Lattice, through: int, fwd_from: dict[int, int], bwd_to: dict[int, int]
) -> tuple[str, ...] | None:
    back: list[int] = []
    n = through
    while n != lattice.initial:
        if n not in fwd_from:
            return None
        n = fwd_from[n]
        back.append(n)
    path = list(reversed(back)) + [through]
    n = through
    while n != lattice.final:
        if n not in bwd_to:
            return None
        n = bwd_to[n]
        path.append(n)
    words = (spoken(lattice.nodes[i].word) for i in path)
    return tuple(w for w in words if w)


def _topological(lattice: Lattice, out_edges: dict[int, list[LatticeEdge]]) -> list[int]:
    indegree = {n: 0 for n in lattice.nodes}
    for edges in out_edges.values():
        for e in edges:
            indegree[e.target] += 1
    queue = deque(sorted((n for n, d in indegree.items() if d == 0), key=lambda n: lattice.nodes[n].start_frame))
    order: list[int] = []
    while queue:
        n = queue.popleft()
        order.append(n)
        for e in out_edges[n]:
            indegree[e.target] -= 1
            if indegree[e.target] == 0:
                queue.append(e.target)
    return order
