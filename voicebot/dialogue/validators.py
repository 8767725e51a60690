"""The intake form's rules, independent of how the answer arrived (speech, keys, typing).

Every check returns a value instead of raising, so the dialogue can try each
recognizer alternative in turn and speak the first failure's ``detail`` back.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from typing import Generic, Literal, TypeVar, Union

T = TypeVar("T")

FieldName = Literal["personal_id", "postal_code", "monthly_rent", "household_size"]
FIELD_NAMES: tuple[FieldName, ...] = ("personal_id", "postal_code", "monthly_rent", "household_size")

Reason = Literal[
    "length",  # wrong number of characters / digits
    "format",  # a letter or sign where a digit belongs
    "century_sign",
    "bad_date",
    "future_date",
    "individual_number",
    "check_character",
    "not_a_number",  # several numbers or something that is not a whole number
    "not_whole_euros",
    "out_of_range",
    "no_digits",
]


@dataclass(frozen=True, slots=True)
class Parsed(Generic[T]):
    """An answer that passed every rule; ``value`` is what the form stores."""

    value: T


@dataclass(frozen=True, slots=True)
class Invalid:
    """An answer that was understood but breaks a rule.

    ``reason`` is a stable code for logs and tests; ``detail`` is a short sentence
    the bot can speak to the caller.
    """

    reason: Reason
    detail: str


# None means "nothing recognisable": the caller said something else entirely.
ParseResult = Union[Parsed[T], Invalid, None]

# --------------------------------------------------------------------------- personal identity code

CHECK_CHARACTERS = "0123456789ABCDEFHJKLMNPRSTUVWXY"

# Signs in force since 1 January 2023 (Population Information Act amendment).
CENTURY_BY_SIGN: dict[str, int] = {
    "+": 1800,
    **{sign: 1900 for sign in "-YXWVU"},
    **{sign: 2000 for sign in "ABCDEF"},
}

# English names spelled out: calendar.month_name follows the process locale.
MONTH_NAMES = ("", "January", "February", "March", "April", "May", "June", "July",
               "August", "September", "October", "November", "December")


def check_character(birth_ddmmyy: str, individual_number: str) -> str:
    """The check character for the nine digits DDMMYY + ZZZ."""
    return CHECK_CHARACTERS[int(birth_ddmmyy + individual_number) % 31]


def _ordinal(day: int) -> str:
    if 10 <= day % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _date_problem(day: int, month: int, year: int) -> str | None:
    if not 1 <= month <= 12:
        return f"there is no month {month}"
    last_day = calendar.monthrange(year, month)[1]
    if not 1 <= day <= last_day:
        if day == 0:
            return "there is no day zero"
        return f"there is no {_ordinal(day)} of {MONTH_NAMES[month]} {year}"
    return None


def validate_personal_id(code: str, today: date) -> Parsed[str] | Invalid:
    """Check a Finnish personal identity code DDMMYYCZZZQ.

    ``today`` is explicit so the check stays pure: a birth date after it is invalid.
    The stored form is upper case with its century sign, e.g. ``"131052-308T"``.
    """
    code = code.strip().upper()
    if len(code) != 11:
        return Invalid("length", f"I got {len(code)} characters, but the code has 11")
    birth, sign, individual, check = code[:6], code[6], code[7:10], code[10]
    if not (birth.isascii() and birth.isdigit() and individual.isascii() and individual.isdigit()):
        return Invalid("format", "the birth date and the three numbers after the sign must be digits")
    century = CENTURY_BY_SIGN.get(sign)
    if century is None:
        return Invalid("century_sign", "the sign after the birth date must be a dash, a plus or a century letter")
    day, month, year = int(birth[:2]), int(birth[2:4]), century + int(birth[4:])
    problem = _date_problem(day, month, year)
    if problem is not None:
        return Invalid("bad_date", problem)
    if date(year, month, day) > today:
        return Invalid("future_date", "that birth date is in the future")
    if int(individual) < 2:
        return Invalid("individual_number", "the three numbers after the sign cannot be 000 or 001")
    if check != check_character(birth, individual):
        return Invalid("check_character", "the check character does not match")
    return Parsed(code)


def birth_date(code: str) -> date:
    """The birth date inside an already validated code."""
    century = CENTURY_BY_SIGN[code[6]]
    return date(century + int(code[4:6]), int(code[2:4]), int(code[0:2]))


# --------------------------------------------------------------------------- numeric fields

MONTHLY_RENT_RANGE_EUR = (1, 10_000)
HOUSEHOLD_SIZE_RANGE = (1, 20)


def validate_postal_code(digits: str) -> Parsed[str] | Invalid:
    """A Finnish postal code: exactly five digits, leading zeros kept."""
    if not digits:
        return Invalid("no_digits", "I did not get any digits")
    if not (digits.isascii() and digits.isdigit()):
        return Invalid("format", "a postal code has only digits")
    if len(digits) != 5:
        return Invalid("length", f"I got {len(digits)} digits, but a postal code has 5")
    return Parsed(digits)


def validate_monthly_rent(euros: int) -> Parsed[int] | Invalid:
    low, high = MONTHLY_RENT_RANGE_EUR
    if euros < low:
        return Invalid("out_of_range", "the rent must be at least one euro")
    if euros > high:
        return Invalid("out_of_range", f"a monthly rent over {high} euros is not accepted here")
    return Parsed(euros)


def validate_household_size(people: int) -> Parsed[int] | Invalid:
    low, high = HOUSEHOLD_SIZE_RANGE
    if not low <= people <= high:
        return Invalid("out_of_range", f"the household must have between {low} and {high} people")
    return Parsed(people)


# --------------------------------------------------------------------------- phone numbers (callbacks)

#: digits a phone number to call back may have (E.164 allows 15; short national numbers exist)
PHONE_DIGITS_RANGE = (5, 15)
_CALLER_ID_PUNCTUATION = str.maketrans("", "", " -().")


def validate_phone_number(number: str) -> Parsed[str] | Invalid:
    """Digits with an optional leading '+': "+358401234567" or "0401234567"."""
    digits = number[1:] if number.startswith("+") else number
    if not digits:
        return Invalid("no_digits", "I did not get any digits")
    if not (digits.isascii() and digits.isdigit()):
        return Invalid("format", "a phone number has only digits")
    low, high = PHONE_DIGITS_RANGE
    if not low <= len(digits) <= high:
        return Invalid("length", f"I got {len(digits)} digits, but a phone number has {low} to {high}")
    return Parsed(number)


def phone_number_of_caller_id(caller_id: str) -> str | None:
    """The caller ID as a number to call back, or None when it is none ("anonymous", a SIP name)."""
    result = validate_phone_number(caller_id.strip().translate(_CALLER_ID_PUNCTUATION))
    return result.value if isinstance(result, Parsed) else None


# --------------------------------------------------------------------------- DTMF


def digits_from_dtmf(keys: str) -> str:
    """The digits a caller keyed: '#' ends the entry, '*' starts it over, A-D are ignored."""
    digits: list[str] = []
    for key in keys:
        if key == "#":
            break
        if key == "*":
            digits.clear()
        elif key.isascii() and key.isdigit():
            digits.append(key)
    return "".join(digits)


def parse_dtmf(field: FieldName, digits: str) -> Parsed[str] | Parsed[int] | Invalid:
    """Validate a keyed numeric answer. A personal id cannot be keyed (no letters on a keypad)."""
    if field == "postal_code":
        return validate_postal_code(digits)
    if field not in ("monthly_rent", "household_size"):
        raise ValueError(f"no keypad entry for field {field!r}")
    if not digits:
        return Invalid("no_digits", "I did not get any digits")
    if not (digits.isascii() and digits.isdigit()):
        return Invalid("not_a_number", "only digits can be keyed")
    number = int(digits)
    return validate_monthly_rent(number) if field == "monthly_rent" else validate_household_size(number)
