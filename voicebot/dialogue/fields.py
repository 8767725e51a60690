"""The form's field kinds, by name: how to parse an answer, take it from keys, and say it back."""

from __future__ import annotations

from datetime import date

from voicebot.dialogue import spoken
from voicebot.dialogue.spoken import is_complete, parse_field_choice, parse_yes_no, speak_code, speak_digits
from voicebot.dialogue.validators import Invalid, Parsed, parse_dtmf as _parse_dtmf

__all__ = [
    "Invalid", "Parsed", "is_complete", "is_likely", "parse_dtmf", "parse_field", "parse_field_choice", "parse_yes_no",
    "speak_reference", "speak_value",
]


def parse_field(kind: str, text: str, today: date) -> Parsed | Invalid | None:
    """Parse a spoken answer for a field; None when nothing in it fits the field."""
    if kind == "personal_id":
        return spoken.parse_personal_id(text, today)
    if kind == "postal_code":
        return spoken.parse_postal_code(text)
    if kind == "monthly_rent":
        return spoken.parse_monthly_rent(text)
    if kind == "household_size":
        return spoken.parse_household_size(text)
    raise ValueError(f"unknown field kind {kind!r}")


#: century signs of nearly every identity code in use: '-' (1900s) and 'A' (2000s); the other letters
#: (in force since 2023) are issued only when a day's individual numbers run out, '+' means the 1800s
COMMON_CENTURY_SIGNS = frozenset("-A")


def is_likely(kind: str, value: object) -> bool:
    """Whether a valid value is a common one: a recognizer's 'ex' for 'dash' still makes a valid code."""
    if kind == "personal_id":
        return str(value)[6:7] in COMMON_CENTURY_SIGNS
    return True


def parse_dtmf(kind: str, keys: str) -> Parsed | Invalid | None:
    return _parse_dtmf(kind, keys)  # type: ignore[arg-type]


def speak_value(kind: str, value: object) -> str:
    """A value as the read-back says it: codes character by character."""
    if kind == "personal_id":
        return speak_code(str(value))
    if kind == "postal_code":
        return speak_digits(str(value))
    if kind == "monthly_rent":
        return spoken.speak_amount(int(value))  # type: ignore[call-overload]
    return str(value)


def speak_reference(reference: str) -> str:
    """ "HA100231" -> "H A, 1 0 0 2 3 1": letters, then digits one by one."""
    letters = "".join(c for c in reference if c.isalpha())
    digits = "".join(c for c in reference if c.isdigit())
    return f"{' '.join(letters)}, {speak_digits(digits)}" if letters else speak_digits(digits)
