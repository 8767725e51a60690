"""Keeping personal identity codes out of logs, API responses and pages.

Logs are read by more people, and kept longer, than the application store, so
every log line that could carry a code goes through ``mask_personal_id``.
Transcripts are never logged at all.

The web side shows codes masked to everyone (``mask_json``); only the agent
handling a caller may open the code itself, and that is audited. In a
transcript a code is mostly spoken ("two nine zero two eight eight dash one three
six dee", or the bot's read-back "2 9 0 2 8 8, dash, 1 3 6, D"), which no pattern
over characters finds, so transcript text also goes through
``mask_spoken_personal_ids``: the individual number after the century sign is
hidden, as in the written form.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

# DDMMYY, century sign, three-digit individual number, check character.
_PERSONAL_ID = re.compile(r"(?<![0-9A-Za-z])(\d{6}[-+A-FU-Y])(\d{3})([0-9A-Y])(?![0-9A-Za-z])", re.IGNORECASE)
#: what stands for the hidden digits
MASK = "***"

# ---------------------------------------------------------------------- the spoken form's vocabulary
# (the words voicebot.dialogue.spoken reads codes from; kept here so masking needs no dialogue import)

_TOKEN = re.compile(r"[a-z0-9']+|[-+]")
_ONE_DIGIT = frozenset("zero oh o nought naught one two three four five six seven eight nine hundred".split())
_TWO_DIGITS = frozenset(
    "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen "
    "twenty thirty forty fifty sixty seventy eighty ninety".split())
#: words inside a spoken number that add no digit of their own
_NUMBER_GLUE = frozenset({"and", "double", "triple"})
_SIGN_WORDS = frozenset({"dash", "minus", "hyphen", "-", "plus", "+", "eh"})
#: century letters (A-F for 2000-2099, U-Y for 1900-1999) as letters, letter names and spelling alphabet
_CENTURY_LETTER_WORDS = frozenset(
    list("abcdefuvwxy")
    + "ay be bee see sea cee dee ee ef eff you yew vee doubleyou ex why wye".split()
    + "alpha alfa bravo charlie delta echo foxtrot uniform victor whiskey whisky xray yankee".split())
_HESITATIONS = frozenset("uh um umm eh er erm ah hmm mm".split())
#: digits before a century sign: the birth date
_DATE_DIGITS = 6


def mask_personal_id(text: str) -> str:
    """Hide the individual number of every code in ``text``: "131052-308T" -> "131052-***T"."""
    return _PERSONAL_ID.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)


def mask_fields(fields: Mapping[str, object]) -> dict[str, object]:
    """Intake fields fit for a log line."""
    return {name: mask_personal_id(value) if isinstance(value, str) else value for name, value in fields.items()}


def personal_ids(fields: Mapping[str, object]) -> dict[str, str]:
    """The fields whose value is (or holds) a personal identity code, unmasked."""
    return {name: value for name, value in fields.items() if isinstance(value, str) and _PERSONAL_ID.search(value)}


def mask_spoken_personal_ids(text: str) -> str:
    """Hide the individual number of codes spelled out in words or spaced digits.

    "two nine zero two eight eight dash one three six dee" -> "two nine zero two eight
    eight dash *** dee". A sign counts after at least six digits; a run of nine or more
    single digits with no sign (the recognizer missed it) loses its seventh to ninth.
    Masking a number that was no code costs nothing; missing a code would.
    """
    tokens = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text.lower())]
    spans: list[tuple[int, int]] = []
    digits = 0
    singles: list[int] = []  # indexes of one-digit tokens in the current stretch
    i = 0
    while i < len(tokens):
        word = tokens[i][2]
        if digits >= _DATE_DIGITS and (word in _SIGN_WORDS or word in _CENTURY_LETTER_WORDS):
            end = _individual_number(tokens, i + 1, spans)
            if end is not None:
                digits, singles, i = 0, [], end
                continue
        count = _digit_count(word)
        if count:
            digits += count
            singles = singles + [i] if count == 1 and word != "hundred" else singles
            i += 1
            continue
        if word in _NUMBER_GLUE or word in _HESITATIONS:
            i += 1
            continue
        _mask_unsigned_run(tokens, singles, spans)
        digits, singles = (_leading_digits(word), []) if _leading_digits(word) else (0, [])
        if digits >= _DATE_DIGITS and word[digits:] in _CENTURY_LETTER_WORDS:  # "290288a one two three"
            end = _individual_number(tokens, i + 1, spans)
            if end is not None:
                digits, i = 0, end
                continue
        i += 1
    _mask_unsigned_run(tokens, singles, spans)
    for start, end in reversed(spans):
        text = text[:start] + MASK + text[end:]
    return text


def mask_personal_data(text: str) -> str:
    """Written and spoken codes in free text (a transcript line)."""
    return mask_spoken_personal_ids(mask_personal_id(text))


#: keys whose string values are transcript text, where codes may be spoken
TRANSCRIPT_KEYS = frozenset({"text"})


def mask_json(value: Any, *, _key: str = "") -> Any:
    """A JSON-ready value with every code masked: written codes in every string, spoken ones in
    transcript text (values under a ``"text"`` key). Identifiers are safe: the written pattern
    needs a whole code between non-alphanumerics, and spoken masking only reads transcripts."""
    if isinstance(value, str):
        return mask_personal_data(value) if _key in TRANSCRIPT_KEYS else mask_personal_id(value)
    if isinstance(value, Mapping):
        return {k: mask_json(v, _key=k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_json(v, _key=_key) for v in value]
    return value


# ---------------------------------------------------------------------- helpers


def _digit_count(word: str) -> int:
    if word.isdigit():
        return len(word)
    if word in _ONE_DIGIT:
        return 1
    return 2 if word in _TWO_DIGITS else 0


def _leading_digits(word: str) -> int:
    return len(word) - len(word.lstrip("0123456789"))


def _individual_number(tokens: list[tuple[int, int, str]], start: int, spans: list[tuple[int, int]]) -> int | None:
    """Mask the number after a century sign; the index after it, or None if no number follows."""
    i = start
    while i < len(tokens) and tokens[i][2] in _HESITATIONS:
        i += 1
    first = last = None
    while i < len(tokens):
        word = tokens[i][2]
        if _digit_count(word):
            first = i if first is None else first
            last = i
        elif not (word in _NUMBER_GLUE or word in _HESITATIONS):
            break
        i += 1
    if first is not None and last is not None:
        spans.append((tokens[first][0], tokens[last][1]))
        return last + 1
    if i < len(tokens) and _leading_digits(tokens[i][2]):  # "136d"
        begin = tokens[i][0]
        spans.append((begin, begin + _leading_digits(tokens[i][2])))
        return i + 1
    return None


def _mask_unsigned_run(tokens: list[tuple[int, int, str]], singles: list[int], spans: list[tuple[int, int]]) -> None:
    """Nine or more single digits with no sign between: the 7th to 9th are the individual number."""
    if len(singles) >= 9:
        spans.append((tokens[singles[6]][0], tokens[singles[8]][1]))
