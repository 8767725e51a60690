"""Per-state grammars: a small JSGF subset, parsed once and compiled per engine.

The files in grammars/ are plain JSGF (rules, ``|``, ``( )``, ``[ ]``, ``+``,
``*``, ``public``). Letter names are written as the letter and a period
(``d.``), as in the CMU dictionary, so that a spelled letter never collides
with a word such as the article "a"; engines map them to their own spelling
and report the bare letter. ``commands.jsgf`` holds phrases the caller may say
in any state: the compiler joins its root to every other grammar's root, so
the engines never need a second search for them.

This module knows no engine; each engine asks for the form it can load
(JSGF text, a phrase list, a word list).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from voicebot.asr.base import RecognizerError

COMMANDS = "commands"
#: phrases() gives up above this many sentences (a word list is better then)
MAX_PHRASES = 2000


class GrammarError(RecognizerError):
    """A grammar file that does not parse; the message names file:line."""


# --------------------------------------------------------------------------- syntax tree


@dataclass(frozen=True, slots=True)
class Word:
    text: str


@dataclass(frozen=True, slots=True)
class RuleRef:
    name: str
    line: int


@dataclass(frozen=True, slots=True)
class Seq:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Alt:
    options: tuple[Node, ...]
    #: JSGF weights (``/20/ dash | /1/ x.``): a prior the recognizer applies where it can (PocketSphinx
    #: turns them into transition probabilities; Vosk phrase lists cannot carry them)
    weights: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class Optional_:
    body: Node


@dataclass(frozen=True, slots=True)
class Repeat:
    body: Node
    at_least_one: bool


Node = Word | RuleRef | Seq | Alt | Optional_ | Repeat


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    public: bool
    body: Node
    line: int


# --------------------------------------------------------------------------- parsing

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<ruleref><[A-Za-z0-9_.\-]+>)
  | (?P<quoted>"[^"\n]*")
  | (?P<weight>/[0-9]+(?:\.[0-9]+)?/)
  | (?P<punct>[=|()\[\];+*])
  | (?P<word>[^\s=|()\[\];+*<>"/{}]+)
  | (?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    line: int


def _tokenize(text: str, where: str) -> list[_Tok]:
    toks: list[_Tok] = []
    line = 1
    for m in _TOKEN.finditer(text):
        kind, value = m.lastgroup or "bad", m.group()
        if kind == "bad":
            hint = " (tags are not supported; a weight is /number/)" if value in "{}/" else ""
            raise GrammarError(f"{where}:{line}: unexpected character {value!r}{hint}")
        if kind not in ("space", "comment"):
            toks.append(_Tok(kind, value, line))
        line += value.count("\n")
    return toks


class _Parser:
    def __init__(self, toks: list[_Tok], where: str) -> None:
        self.toks = toks
        self.pos = 0
        self.where = where

    def _error(self, message: str, tok: _Tok | None = None) -> GrammarError:
        tok = tok or self._peek()
        line = tok.line if tok else (self.toks[-1].line if self.toks else 1)
        return GrammarError(f"{self.where}:{line}: {message}")

    def _peek(self) -> _Tok | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def _next(self) -> _Tok:
        tok = self._peek()
        if tok is None:
            raise self._error("unexpected end of file")
        self.pos += 1
        return tok

    def _expect(self, text: str) -> _Tok:
        tok = self._next()
        if tok.text != text:
            raise self._error(f"expected {text!r}, found {tok.text!r}", tok)
        return tok

    def header(self) -> str | None:
        """Skip ``#JSGF V1.0;`` and read ``grammar NAME;`` if present."""
        tok = self._peek()
        if tok and tok.kind == "word" and tok.text.startswith("#JSGF"):
            while self._next().text != ";":
                pass
        tok = self._peek()
        if tok and tok.kind == "word" and tok.text == "grammar":
            self._next()
            name = self._next()
            self._expect(";")
            return name.text
        return None

    def rules(self) -> list[Rule]:
        out: list[Rule] = []
        while (tok := self._peek()) is not None:
            public = False
            if tok.kind == "word" and tok.text == "public":
                public = True
                self._next()
                tok = self._peek()
            if tok is None or tok.kind != "ruleref":
                raise self._error(f"expected a rule name like <name>, found {tok.text if tok else 'end of file'!r}")
            self._next()
            self._expect("=")
            body = self.alternatives()
            self._expect(";")
            out.append(Rule(tok.text[1:-1], public, body, tok.line))
        return out

    def alternatives(self) -> Node:
        weights = [self._weight()]
        options = [self.sequence()]
        while (tok := self._peek()) is not None and tok.text == "|":
            self._next()
            weights.append(self._weight())
            options.append(self.sequence())
        given = [w for w in weights if w is not None]
        if given and (len(given) != len(weights) or len(options) == 1):
            raise self._error("give every alternative of a choice a weight, or none")
        if len(options) == 1:
            return options[0]
        return Alt(tuple(options), tuple(given) if given else None)

    def _weight(self) -> float | None:
        tok = self._peek()
        if tok is None or tok.kind != "weight":
            return None
        self._next()
        return float(tok.text.strip("/"))

    def sequence(self) -> Node:
        items: list[Node] = []
        while (tok := self._peek()) is not None and tok.text not in ("|", ")", "]", ";"):
            items.append(self.item())
        if not items:
            raise self._error("empty alternative")
        return items[0] if len(items) == 1 else Seq(tuple(items))

    def item(self) -> Node:
        tok = self._next()
        node: Node
        if tok.text == "(":
            node = self.alternatives()
            self._expect(")")
        elif tok.text == "[":
            node = Optional_(self.alternatives())
            self._expect("]")
        elif tok.kind == "ruleref":
            node = RuleRef(tok.text[1:-1], tok.line)
        elif tok.kind == "quoted":
            words = tok.text[1:-1].lower().split()
            if not words:
                raise self._error("empty quoted token", tok)
            node = Word(words[0]) if len(words) == 1 else Seq(tuple(Word(w) for w in words))
        elif tok.kind == "word":
            node = Word(tok.text.lower())
        else:
            raise self._error(f"unexpected {tok.text!r}", tok)
        while (nxt := self._peek()) is not None and nxt.text in ("+", "*"):
            self._next()
            node = Repeat(node, nxt.text == "+")
        return node


# --------------------------------------------------------------------------- grammar


def _walk(node: Node) -> Iterator[Node]:
    yield node
    if isinstance(node, Seq):
        for item in node.items:
            yield from _walk(item)
    elif isinstance(node, Alt):
        for option in node.options:
            yield from _walk(option)
    elif isinstance(node, (Optional_, Repeat)):
        yield from _walk(node.body)


def _to_jsgf(node: Node, prefix: str) -> str:
    if isinstance(node, Word):
        return node.text
    if isinstance(node, RuleRef):
        return f"<{prefix}{node.name}>"
    if isinstance(node, Seq):
        return " ".join(_to_jsgf(i, prefix) for i in node.items)
    if isinstance(node, Alt):
        weights = node.weights or (None,) * len(node.options)
        return "(" + " | ".join((f"/{w:g}/ " if w is not None else "") + _to_jsgf(o, prefix)
                                for w, o in zip(weights, node.options)) + ")"
    if isinstance(node, Optional_):
        return "[" + _to_jsgf(node.body, prefix) + "]"
    return "(" + _to_jsgf(node.body, prefix) + ")" + ("+" if node.at_least_one else "*")


@dataclass(frozen=True)
class _RuleSet:
    """One parsed file: its rules and its root."""

    path: str
    rules: Mapping[str, Rule]
    root: str

    def expand(self, node: Node, limit: int) -> list[tuple[str, ...]] | None:
        """Every word sequence ``node`` allows, or None when infinite or over ``limit``."""
        if isinstance(node, Word):
            return [(node.text,)]
        if isinstance(node, RuleRef):
            return self.expand(self.rules[node.name].body, limit)
        if isinstance(node, Repeat):
            return None
        if isinstance(node, Optional_):
            inner = self.expand(node.body, limit)
            return None if inner is None else [()] + inner
        if isinstance(node, Alt):
            out: list[tuple[str, ...]] = []
            for option in node.options:
                part = self.expand(option, limit)
                if part is None or len(out) + len(part) > limit:
                    return None
                out.extend(part)
            return out
        seqs: list[tuple[str, ...]] = [()]
        for item in node.items:
            part = self.expand(item, limit)
            if part is None or len(seqs) * len(part) > limit:
                return None
            seqs = [a + b for a, b in itertools.product(seqs, part)]
        return seqs

    def words(self) -> set[str]:
        return {n.text for r in self.rules.values() for n in _walk(r.body) if isinstance(n, Word)}

    def jsgf_rules(self, prefix: str) -> list[str]:
        return [f"<{prefix}{r.name}> = {_to_jsgf(r.body, prefix)};" for r in self.rules.values()]


def _parse_file(path: Path) -> _RuleSet:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GrammarError(f"{path}: cannot read grammar ({exc})") from None
    return _parse_text(text, path.name, path.stem)


def _parse_text(text: str, where: str, stem: str) -> _RuleSet:
    parser = _Parser(_tokenize(text, where), where)
    parser.header()
    rules: dict[str, Rule] = {}
    for rule in parser.rules():
        if rule.name in rules:
            raise GrammarError(f"{where}:{rule.line}: rule <{rule.name}> defined twice")
        rules[rule.name] = rule
    if not rules:
        raise GrammarError(f"{where}:1: no rules")
    for rule in rules.values():
        for node in _walk(rule.body):
            if isinstance(node, RuleRef) and node.name not in rules:
                raise GrammarError(f"{where}:{node.line}: undefined rule <{node.name}>")
    _check_no_recursion(rules, where)
    public = [r for r in rules.values() if r.public]
    if not public:
        raise GrammarError(f"{where}:1: no public rule")
    root = next((r for r in public if r.name == stem), public[0])
    return _RuleSet(where, rules, root.name)


def _check_no_recursion(rules: Mapping[str, Rule], where: str) -> None:
    """Engines compile grammars to finite-state graphs, so rules may not refer to themselves."""
    state: dict[str, int] = {}

    def visit(name: str) -> None:
        state[name] = 1
        for node in _walk(rules[name].body):
            if isinstance(node, RuleRef):
                if state.get(node.name) == 1:
                    raise GrammarError(f"{where}:{node.line}: rule <{node.name}> is recursive (use + or *)")
                if node.name not in state:
                    visit(node.name)
        state[name] = 2

    for name in rules:
        if name not in state:
            visit(name)


@dataclass(frozen=True)
class Grammar:
    """One dialogue state's grammar, with the always-available commands joined in."""

    name: str
    _own: _RuleSet
    _commands: _RuleSet | None = None

    @property
    def vocabulary(self) -> frozenset[str]:
        words = self._own.words()
        if self._commands is not None:
            words |= self._commands.words()
        return frozenset(words)

    @property
    def words(self) -> tuple[str, ...]:
        """The vocabulary, sorted (a word list for engines that take one)."""
        return tuple(sorted(self.vocabulary))

    def to_jsgf(self) -> str:
        """One self-contained JSGF document whose public root also accepts the commands."""
        lines = ["#JSGF V1.0;", f"grammar {_safe(self.name)};"]
        root = f"<s_{self._own.root}>"
        if self._commands is not None:
            lines.append(f"public <{_safe(self.name)}_root> = {root} | <c_{self._commands.root}>;")
        else:
            lines.append(f"public <{_safe(self.name)}_root> = {root};")
        lines += self._own.jsgf_rules("s_")
        if self._commands is not None:
            lines += self._commands.jsgf_rules("c_")
        return "\n".join(lines) + "\n"

    def log_prior(self, words: Sequence[str]) -> float | None:
        """Natural log of the JSGF weights along the best parse of ``words`` (dictionary spellings),
        or None when the grammar does not accept them.

        Only explicit weights count (each normalised within its alternative):
        engines that rank a lattice without the grammar (PocketSphinx's best
        path) re-score with this, so the prior the grammar states still holds.
        """
        target = tuple(words)
        scores = [_Matcher(rules, target).match(RuleRef(rules.root, 0), 0).get(len(target))
                  for rules in (self._own, self._commands) if rules is not None]
        found = [x for x in scores if x is not None]
        return max(found) if found else None

    def phrases(self, limit: int = MAX_PHRASES) -> list[str] | None:
        """Every sentence the grammar accepts, when that is a finite list of at most ``limit``."""
        own = self._own.expand(RuleRef(self._own.root, 0), limit)
        if own is None:
            return None
        out = [" ".join(s) for s in own if s]
        if self._commands is not None:
            cmds = self._commands.expand(RuleRef(self._commands.root, 0), limit)
            if cmds is None or len(out) + len(cmds) > limit:
                return None
            out += [" ".join(s) for s in cmds if s]
        return list(dict.fromkeys(out))


class _Matcher:
    """Parses one word sequence with one rule set: for a node and a start, the ends it can reach
    and the best log weight of getting there."""

    def __init__(self, rules: _RuleSet, words: tuple[str, ...]) -> None:
        self._rules = rules
        self._words = words
        self._memo: dict[tuple[int, int], dict[int, float]] = {}

    def match(self, node: Node, start: int) -> dict[int, float]:
        key = (id(node), start)
        if key not in self._memo:
            self._memo[key] = self._match(node, start)
        return self._memo[key]

    def _match(self, node: Node, start: int) -> dict[int, float]:
        if isinstance(node, Word):
            ok = start < len(self._words) and self._words[start] == node.text
            return {start + 1: 0.0} if ok else {}
        if isinstance(node, RuleRef):
            return self.match(self._rules.rules[node.name].body, start)
        if isinstance(node, Seq):
            ends = {start: 0.0}
            for item in node.items:
                ends = _best_of((end, s + t) for pos, s in ends.items() for end, t in self.match(item, pos).items())
            return ends
        if isinstance(node, Alt):
            total = sum(node.weights) if node.weights else 0.0
            logs = [math.log(w / total) if total > 0 and w > 0 else (0.0 if not total else -math.inf)
                    for w in (node.weights or (0.0,) * len(node.options))]
            return _best_of((end, s + lw) for option, lw in zip(node.options, logs)
                            for end, s in self.match(option, start).items())
        if isinstance(node, Optional_):
            return _best_of([(start, 0.0), *self.match(node.body, start).items()])
        # Repeat: keep extending until no new end is reached (ends only grow, words are finite)
        ends = dict(self.match(node.body, start))
        if not node.at_least_one:
            ends = _best_of([(start, 0.0), *ends.items()])
        frontier = [e for e in ends if e != start]
        while frontier:
            grown = _best_of((end, ends[pos] + s) for pos in frontier for end, s in self.match(node.body, pos).items())
            frontier = [e for e, s in grown.items() if e not in ends or s > ends[e]]
            ends.update({e: grown[e] for e in frontier})
        return ends


def _best_of(pairs: Iterable[tuple[int, float]]) -> dict[int, float]:
    out: dict[int, float] = {}
    for end, score in pairs:
        if score > out.get(end, -math.inf):
            out[end] = score
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


class GrammarSet(Mapping[str, Grammar]):
    """All grammars of a grammars/ directory, by state name."""

    def __init__(self, grammars: Mapping[str, Grammar], directory: Path | None = None) -> None:
        self._grammars = dict(grammars)
        self.directory = directory

    @classmethod
    def load(cls, directory: Path | str) -> GrammarSet:
        directory = Path(directory)
        if not directory.is_dir():
            raise GrammarError(f"{directory}: grammar directory not found")
        files = sorted(directory.glob("*.jsgf"))
        if not files:
            raise GrammarError(f"{directory}: no .jsgf grammar files")
        return cls._join({p.stem: _parse_file(p) for p in files}, directory)

    @classmethod
    def from_texts(cls, texts: Mapping[str, str]) -> GrammarSet:
        """Grammars from strings (name -> JSGF text); for tests and generated grammars."""
        return cls._join({name: _parse_text(text, f"{name}.jsgf", name) for name, text in texts.items()}, None)

    @classmethod
    def _join(cls, parsed: Mapping[str, _RuleSet], directory: Path | None) -> GrammarSet:
        commands = parsed.get(COMMANDS)
        grammars = {
            name: Grammar(name, rules, None if name == COMMANDS else commands) for name, rules in parsed.items()
        }
        return cls(grammars, directory)

    def __getitem__(self, name: str) -> Grammar:
        return self._grammars[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._grammars)

    def __len__(self) -> int:
        return len(self._grammars)

    @property
    def vocabulary(self) -> frozenset[str]:
        return frozenset().union(*(g.vocabulary for g in self._grammars.values()))


def spoken_word(word: str) -> str:
    """The word as a result reports it: letter names lose their period (``d.`` -> ``d``)."""
    return word[:-1] if len(word) == 2 and word.endswith(".") else word


def normalize_result(text: str) -> str:
    """Engine output to the project's result form: lower case, bare letters, single spaces."""
    return " ".join(spoken_word(w) for w in text.lower().split())
