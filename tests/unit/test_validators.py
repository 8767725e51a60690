"""Rules of the intake form: personal identity code, postal code, rent, household, DTMF."""

from __future__ import annotations

import calendar
import string
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.idcodes import CHECK_TABLE, SIGNS_OF_CENTURY, TODAY, make_code, valid_codes
from voicebot.dialogue.validators import (
    Invalid,
    Parsed,
    birth_date,
    digits_from_dtmf,
    parse_dtmf,
    validate_household_size,
    validate_monthly_rent,
    validate_personal_id,
    validate_postal_code,
)


ALL_SIGNS = "".join(SIGNS_OF_CENTURY.values())




# --------------------------------------------------------------------------- known codes


@pytest.mark.parametrize("code", ["131052-308T", "290288-136D", "010101A002S", "311299+999E"])
def test_published_and_edge_codes_are_valid(code: str) -> None:
    assert validate_personal_id(code, TODAY) == Parsed(code)


def test_lower_case_and_surrounding_space_are_normalised() -> None:
    assert validate_personal_id("  290288-136d ", TODAY) == Parsed("290288-136D")


def test_new_century_signs_since_2023_are_accepted_and_keep_the_check_character() -> None:
    for sign in "-YXWVU":
        code = make_code(1, 2, 3, sign, 456)
        assert validate_personal_id(code, TODAY) == Parsed(code)
        assert birth_date(code) == date(1903, 2, 1)
    for sign in "ABCDEF":
        assert birth_date(make_code(1, 2, 3, sign, 456)) == date(2003, 2, 1)
    assert birth_date(make_code(1, 2, 3, "+", 456)) == date(1803, 2, 1)
    assert len({make_code(1, 2, 3, sign, 456)[-1] for sign in ALL_SIGNS}) == 1


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("290288-136", "length"),
        ("290288-136DX", "length"),
        ("29O288-136D", "format"),
        ("290288-13GD", "format"),
        ("290288G136D", "century_sign"),
        ("290288/136D", "century_sign"),
        ("290288-136E", "check_character"),
        ("300288-136D", "bad_date"),
        ("010100-001X", "individual_number"),
    ],
)
def test_broken_codes_name_what_is_wrong(code: str, reason: str) -> None:
    result = validate_personal_id(code, TODAY)
    assert isinstance(result, Invalid)
    assert result.reason == reason
    assert result.detail and "\n" not in result.detail


def test_invalid_date_detail_is_a_sentence_the_bot_can_speak() -> None:
    assert validate_personal_id(make_code(30, 2, 88, "-", 136), TODAY) == Invalid(
        "bad_date", "there is no 30th of February 1988"
    )
    assert validate_personal_id(make_code(1, 13, 88, "-", 136), TODAY) == Invalid("bad_date", "there is no month 13")


def test_leap_day_depends_on_the_century() -> None:
    assert isinstance(validate_personal_id(make_code(29, 2, 0, "A", 123), TODAY), Parsed)  # 2000 is leap
    result = validate_personal_id(make_code(29, 2, 0, "-", 123), TODAY)  # 1900 is not
    assert isinstance(result, Invalid) and result.reason == "bad_date"


def test_birth_date_today_is_valid_and_tomorrow_is_not() -> None:
    born_today = make_code(TODAY.day, TODAY.month, TODAY.year % 100, "A", 200)
    assert isinstance(validate_personal_id(born_today, TODAY), Parsed)
    result = validate_personal_id(born_today, TODAY - timedelta(days=1))
    assert isinstance(result, Invalid) and result.reason == "future_date"


# --------------------------------------------------------------------------- properties


@given(valid_codes())
def test_every_well_formed_code_validates(code: str) -> None:
    assert validate_personal_id(code, TODAY) == Parsed(code)
    assert birth_date(code) <= TODAY


@given(valid_codes(), st.sampled_from(CHECK_TABLE))
def test_any_other_check_character_is_rejected(code: str, other: str) -> None:
    if other == code[-1]:
        return
    result = validate_personal_id(code[:-1] + other, TODAY)
    assert isinstance(result, Invalid) and result.reason == "check_character"


@given(valid_codes(), st.sampled_from(sorted(set(string.ascii_uppercase + string.digits + "*/.=_#") - set(ALL_SIGNS))))
def test_a_character_that_is_no_century_sign_is_rejected(code: str, sign: str) -> None:
    result = validate_personal_id(code[:6] + sign + code[7:], TODAY)
    assert isinstance(result, Invalid) and result.reason == "century_sign"


@st.composite
def impossible_dates(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """(day, month, yy, century) with no such calendar day."""
    century = draw(st.sampled_from(sorted(SIGNS_OF_CENTURY)))
    yy = draw(st.integers(0, 99))
    kind = draw(st.sampled_from(["month", "day_zero", "day_past_end"]))
    if kind == "month":
        return draw(st.integers(1, 28)), draw(st.sampled_from([0, *range(13, 100)])), yy, century
    month = draw(st.integers(1, 12))
    if kind == "day_zero":
        return 0, month, yy, century
    last = calendar.monthrange(century + yy, month)[1]
    return draw(st.integers(last + 1, 99)), month, yy, century


@given(impossible_dates(), st.data())
def test_an_impossible_date_is_rejected_even_with_a_correct_check_character(
    when: tuple[int, int, int, int], data: st.DataObject
) -> None:
    day, month, yy, century = when
    sign = data.draw(st.sampled_from(SIGNS_OF_CENTURY[century]))
    result = validate_personal_id(make_code(day, month, yy, sign, data.draw(st.integers(2, 999))), TODAY)
    assert isinstance(result, Invalid) and result.reason == "bad_date"


@given(valid_codes(), st.sampled_from([0, 1]))
def test_individual_numbers_000_and_001_are_rejected(code: str, individual: int) -> None:
    day, month, yy = int(code[:2]), int(code[2:4]), int(code[4:6])
    result = validate_personal_id(make_code(day, month, yy, code[6], individual), TODAY)
    assert isinstance(result, Invalid) and result.reason == "individual_number"


@given(st.dates(TODAY + timedelta(days=1), date(2099, 12, 31)), st.sampled_from("ABCDEF"))
def test_a_birth_date_after_today_is_rejected(born: date, sign: str) -> None:
    result = validate_personal_id(make_code(born.day, born.month, born.year % 100, sign, 555), TODAY)
    assert isinstance(result, Invalid) and result.reason == "future_date"


# --------------------------------------------------------------------------- other fields


def test_postal_code_is_exactly_five_digits() -> None:
    assert validate_postal_code("00180") == Parsed("00180")
    assert validate_postal_code("0018").reason == "length"  # type: ignore[union-attr]
    assert validate_postal_code("001800").reason == "length"  # type: ignore[union-attr]
    assert validate_postal_code("0018O").reason == "format"  # type: ignore[union-attr]
    assert validate_postal_code("").reason == "no_digits"  # type: ignore[union-attr]


@pytest.mark.parametrize(("euros", "ok"), [(0, False), (1, True), (820, True), (10_000, True), (10_001, False)])
def test_monthly_rent_range(euros: int, ok: bool) -> None:
    result = validate_monthly_rent(euros)
    assert result == Parsed(euros) if ok else isinstance(result, Invalid) and result.reason == "out_of_range"


@pytest.mark.parametrize(("people", "ok"), [(0, False), (1, True), (20, True), (21, False)])
def test_household_size_range(people: int, ok: bool) -> None:
    result = validate_household_size(people)
    assert result == Parsed(people) if ok else isinstance(result, Invalid) and result.reason == "out_of_range"


# --------------------------------------------------------------------------- DTMF


@pytest.mark.parametrize(
    ("keys", "digits"),
    [("00180#", "00180"), ("00180", "00180"), ("12*00180#", "00180"), ("820#99", "820"), ("#", ""), ("1A2B#", "12")],
)
def test_dtmf_keys_end_at_hash_and_restart_at_star(keys: str, digits: str) -> None:
    assert digits_from_dtmf(keys) == digits


def test_keyed_numeric_fields_are_validated() -> None:
    assert parse_dtmf("postal_code", "00180") == Parsed("00180")
    assert parse_dtmf("monthly_rent", "0820") == Parsed(820)
    assert parse_dtmf("household_size", "3") == Parsed(3)
    assert parse_dtmf("household_size", "30").reason == "out_of_range"  # type: ignore[union-attr]
    assert parse_dtmf("monthly_rent", "").reason == "no_digits"  # type: ignore[union-attr]
    assert parse_dtmf("postal_code", "").reason == "no_digits"  # type: ignore[union-attr]
    assert parse_dtmf("postal_code", "1234").reason == "length"  # type: ignore[union-attr]


def test_a_personal_id_cannot_be_keyed() -> None:
    with pytest.raises(ValueError, match="personal_id"):
        parse_dtmf("personal_id", "290288136")
