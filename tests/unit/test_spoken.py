"""Recognizer text to form values and back: many phrasings, strict on garbage."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from num2words import num2words

from voicebot.dialogue.spoken import (
    is_complete,
    parse_field_choice,
    parse_household_size,
    parse_monthly_rent,
    parse_personal_id,
    parse_postal_code,
    parse_yes_no,
    speak_amount,
    speak_code,
    speak_digits,
)
from tests.idcodes import TODAY, make_code, valid_codes
from voicebot.dialogue.validators import Invalid, Parsed





# How callers and recognizers say each character (from the brief, not from the module).
DIGIT_WORDS = {
    "0": ["zero", "oh", "o", "nought", "0"],
    **{d: [w, d] for d, w in zip("123456789", "one two three four five six seven eight nine".split())},
}
LETTER_WORDS = {
    "A": ["a", "ay", "alpha", "A"],
    "B": ["b", "bee", "be", "bravo"],
    "C": ["c", "see", "sea", "charlie"],
    "D": ["d", "dee", "d.", "delta", "D"],
    "E": ["e", "echo"],
    "F": ["f", "ef", "foxtrot"],
    "H": ["h", "aitch", "hotel"],
    "J": ["j", "jay", "juliet"],
    "K": ["k", "kay", "kilo"],
    "L": ["l", "el", "lima"],
    "M": ["m", "em", "mike"],
    "N": ["n", "en", "november"],
    "P": ["p", "pee", "papa"],
    "R": ["r", "are", "romeo"],
    "S": ["s", "ess", "sierra"],
    "T": ["t", "tee", "tea", "tango"],
    "U": ["u", "you", "uniform"],
    "V": ["v", "vee", "victor"],
    "W": ["w", "double u", "double-u", "whiskey"],
    "X": ["x", "ex", "x-ray"],
    "Y": ["y", "why", "yankee"],
}
SIGN_WORDS = {"-": ["dash", "minus", "hyphen", "-"], "+": ["plus", "+"]}
FILLERS = ["uh", "um", ",", "and"]


@st.composite
def spoken_codes(draw: st.DrawFn, code_strategy: st.SearchStrategy[str] | None = None) -> tuple[str, list[str]]:
    """A code and the words a caller might say for it, with fillers between characters."""
    code = draw(code_strategy if code_strategy is not None else valid_codes())
    words: list[str] = [draw(st.sampled_from(["", "my code is", "it's", "uh"]))]
    for char in code:
        table = DIGIT_WORDS if char.isdigit() else SIGN_WORDS if char in "+-" else LETTER_WORDS
        words.append(draw(st.sampled_from(table[char])))
        if draw(st.booleans()) and draw(st.booleans()):
            words.append(draw(st.sampled_from(FILLERS)))
    return code, [word for word in words if word]


# --------------------------------------------------------------------------- personal identity code


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("two nine zero two eight eight, dash, one three six, D", "290288-136D"),
        ("two nine zero two eight eight dash one three six dee", "290288-136D"),
        ("290288-136d", "290288-136D"),
        ("290288 minus 136 d.", "290288-136D"),
        ("my code is one three one zero five two minus three oh eight tee", "131052-308T"),
        ("uh it's one three one zero five two hyphen three zero eight t", "131052-308T"),
        ("twenty nine oh two eighty eight dash one hundred thirty six d", "290288-136D"),
        ("one three one oh five two dash three oh eight t as in tango", "131052-308T"),
        ("one three one oh five two dash three oh eight t for tango", "131052-308T"),
        ("two nine oh two double eight dash one three six dee", "290288-136D"),
        ("two nine zero two eight eight dash one three six d thank you", "290288-136D"),
        ("zero one zero one zero one eh zero zero two ess", "010101A002S"),
        ("three one one two nine nine plus triple nine e", "311299+999E"),
    ],
)
def test_spoken_codes_are_understood(text: str, code: str) -> None:
    assert parse_personal_id(text, TODAY) == Parsed(code)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "uh",
        "hello there",
        "i want to talk to a person",
        "yes",
        "two nine zero two eight eight dash potato",
        "one three six d as in charlie",
    ],
)
def test_codes_with_unknown_words_are_not_recognised(text: str) -> None:
    assert parse_personal_id(text, TODAY) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("two nine zero two eight eight one three six dee", "century_sign"),
        ("two nine zero two eight eight dash one three six", "length"),
        ("two nine zero two eight eight dash one three six dee dee", "length"),
        ("two nine zero two eight eight dash one three six e", "check_character"),
        ("three zero zero two eight eight dash one three six dee", "bad_date"),
        ("two nine zero two eight eight gee one three six dee", "century_sign"),
    ],
)
def test_spoken_codes_that_break_a_rule_say_which(text: str, reason: str) -> None:
    result = parse_personal_id(text, TODAY)
    assert isinstance(result, Invalid) and result.reason == reason


@given(spoken_codes())
def test_every_valid_code_spoken_any_way_parses_back(spoken: tuple[str, list[str]]) -> None:
    code, words = spoken
    assert parse_personal_id(" ".join(words), TODAY) == Parsed(code)


@given(valid_codes())
def test_read_back_text_parses_to_the_same_code(code: str) -> None:
    assert parse_personal_id(speak_code(code), TODAY) == Parsed(code)


@given(valid_codes(), st.data())
def test_a_spoken_code_with_a_wrong_check_character_is_rejected(code: str, data: st.DataObject) -> None:
    other = data.draw(st.sampled_from(sorted((set(LETTER_WORDS) | set("0123456789")) - {code[-1]})))
    _, words = data.draw(spoken_codes(st.just(code[:-1] + other)))
    result = parse_personal_id(" ".join(words), TODAY)
    assert isinstance(result, Invalid) and result.reason == "check_character"


@given(valid_codes(), st.sampled_from([0, 1]), st.data())
def test_a_spoken_individual_number_000_or_001_is_rejected(code: str, individual: int, data: st.DataObject) -> None:
    bad = make_code(int(code[:2]), int(code[2:4]), int(code[4:6]), code[6], individual)
    _, words = data.draw(spoken_codes(st.just(bad)))
    result = parse_personal_id(" ".join(words), TODAY)
    assert isinstance(result, Invalid) and result.reason == "individual_number"


@given(valid_codes(), st.sampled_from(["G", "K", "Z", "3"]))
def test_a_spoken_character_that_is_no_century_sign_is_rejected(code: str, sign: str) -> None:
    bad = code[:6] + sign + code[7:]
    words = [w for char in bad for w in ([sign.lower()] if char == sign and sign.isalpha() else [char])]
    result = parse_personal_id(" ".join(words), TODAY)
    assert isinstance(result, Invalid) and result.reason == "century_sign"


@given(spoken_codes())
def test_a_code_is_complete_only_once_its_last_character_is_heard(spoken: tuple[str, list[str]]) -> None:
    _, words = spoken
    last_character = max(i for i, word in enumerate(words) if word not in FILLERS)
    for end in range(last_character + 1):
        assert not is_complete("personal_id", " ".join(words[:end]))
    assert is_complete("personal_id", " ".join(words))


def test_completeness_ignores_today_but_not_the_check_character() -> None:
    future = make_code(1, 1, 99, "A", 123)  # 2099
    assert is_complete("personal_id", speak_code(future))
    assert not is_complete("personal_id", speak_code(future)[:-1] + "B")


# --------------------------------------------------------------------------- postal code


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("zero zero one eight zero", "00180"),
        ("00510", "00510"),
        ("oh oh five one oh", "00510"),
        ("double oh five one oh", "00510"),
        ("my postal code is three three one zero zero", "33100"),
        ("zip code nine nine nine eight zero", "99980"),
        ("zero zero one eighty", "00180"),
    ],
)
def test_postal_codes_are_understood(text: str, digits: str) -> None:
    assert parse_postal_code(text) == Parsed(digits)


@pytest.mark.parametrize("text", ["", "helsinki", "zero zero one eight zero helsinki", "a b c", "dash"])
def test_postal_codes_with_unknown_words_are_not_recognised(text: str) -> None:
    assert parse_postal_code(text) is None


@pytest.mark.parametrize("text", ["zero zero one eight", "zero zero one eight zero one", "one hundred"])
def test_postal_codes_of_the_wrong_length_are_rejected(text: str) -> None:
    result = parse_postal_code(text)
    assert isinstance(result, Invalid) and result.reason == "length"


@given(st.text("0123456789", min_size=5, max_size=5), st.data())
def test_any_five_spoken_digits_are_a_postal_code_and_complete(digits: str, data: st.DataObject) -> None:
    words = [data.draw(st.sampled_from(DIGIT_WORDS[d])) for d in digits]
    assert parse_postal_code(" ".join(words)) == Parsed(digits)
    assert is_complete("postal_code", " ".join(words))
    assert not is_complete("postal_code", " ".join(words[:4]))


# --------------------------------------------------------------------------- rent


@pytest.mark.parametrize(
    ("text", "euros"),
    [
        ("eight hundred and twenty", 820),
        ("820 euros", 820),
        ("seven hundred and ten euros", 710),
        ("one thousand two hundred fifty", 1250),
        ("nine hundred euros a month", 900),
        ("my rent is about seven hundred a month", 700),
        ("a thousand euros", 1000),
        ("1,200 euros", 1200),
        ("€ 640", 640),
        ("eight twenty", 820),
        ("twelve fifty a month", 1250),
        ("eight two zero", 820),
        ("one zero zero zero euros", 1000),
        ("six oh five a month", 605),
        ("oh it's eight hundred", 800),
        ("820.00", 820),
    ],
)
def test_rents_are_understood(text: str, euros: int) -> None:
    assert parse_monthly_rent(text) == Parsed(euros)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("zero euros", "out_of_range"),
        ("fifty thousand euros", "out_of_range"),
        ("820.50", "not_whole_euros"),
        ("eight hundred twenty euros and fifty cents", "not_whole_euros"),
        ("five hundred and six hundred", "not_a_number"),
        ("oh oh oh", "out_of_range"),
    ],
)
def test_rents_that_break_a_rule_say_which(text: str, reason: str) -> None:
    result = parse_monthly_rent(text)
    assert isinstance(result, Invalid) and result.reason == reason


@pytest.mark.parametrize(
    "text", ["", "euros", "i don't know", "eight hundred twenty yours", "eight hundred no nine hundred"]
)
def test_rents_with_unknown_words_are_not_recognised(text: str) -> None:
    assert parse_monthly_rent(text) is None


@given(st.integers(1, 10_000), st.sampled_from(["", " euros", " euros a month", " per month", " euro"]))
def test_any_rent_in_words_parses_back(euros: int, suffix: str) -> None:
    assert parse_monthly_rent(num2words(euros) + suffix) == Parsed(euros)
    assert parse_monthly_rent(num2words(euros).replace(" and", "").replace(",", "") + suffix) == Parsed(euros)


@given(st.integers(1, 10_000))
def test_any_rent_as_numerals_parses_back(euros: int) -> None:
    assert parse_monthly_rent(f"{euros} euros") == Parsed(euros)
    assert parse_monthly_rent(f"{euros:,} euros") == Parsed(euros)


@given(st.integers(10_001, 999_999))
def test_implausible_rents_are_out_of_range(euros: int) -> None:
    result = parse_monthly_rent(num2words(euros) + " euros")
    assert isinstance(result, Invalid) and result.reason == "out_of_range"


# --------------------------------------------------------------------------- household


@pytest.mark.parametrize(
    ("text", "people"),
    [
        ("three", 3),
        ("just one", 1),
        ("four people", 4),
        ("two of us", 2),
        ("it's only me", 1),
        ("just myself", 1),
        ("i live alone", 1),
        ("me and my wife", 2),
        ("my husband and i", 2),
        ("me and my two kids", 3),
        ("me my wife and our three children", 5),
        ("we are a family of five", 5),
        ("there are three of us", 3),
        ("me and two others", 3),
        ("two adults and three children", 5),
        ("one adult and a baby", 2),
        ("two grown-ups and a kid", 3),
        ("me and my two adult children", 3),
    ],
)
def test_household_sizes_are_understood(text: str, people: int) -> None:
    assert parse_household_size(text) == Parsed(people)


@pytest.mark.parametrize(
    "text", ["", "potato", "me and my kids", "me and two", "some people", "adults and children"]
)
def test_unclear_households_are_not_guessed(text: str) -> None:
    assert parse_household_size(text) is None


@given(st.integers(1, 20), st.sampled_from(["", " people", " of us", " persons"]))
def test_any_household_size_in_words_parses_back(people: int, suffix: str) -> None:
    assert parse_household_size(num2words(people) + suffix) == Parsed(people)


@pytest.mark.parametrize("text", ["zero", "twenty one people", "fifty"])
def test_households_out_of_range_are_rejected(text: str) -> None:
    result = parse_household_size(text)
    assert isinstance(result, Invalid) and result.reason == "out_of_range"


# --------------------------------------------------------------------------- yes / no and corrections


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("yes", True), ("yeah", True), ("yep", True), ("correct", True), ("that's right", True),
        ("yes that is correct", True), ("all right", True), ("sure", True), ("yes please", True),
        ("no", False), ("nope", False), ("that's wrong", False), ("no that's not right", False),
        ("that is not correct", False), ("no the rent is wrong", False),
        ("", None), ("hmm", None), ("i'm not sure", None), ("i don't know", None), ("yes no", None),
        ("what", None),
    ],
)
def test_yes_and_no(text: str, answer: bool | None) -> None:
    assert parse_yes_no(text) is answer
    assert is_complete("yes_no", text) is (answer is not None)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("the rent", "monthly_rent"), ("the amount", "monthly_rent"), ("how much i pay", "monthly_rent"),
        ("postal code", "postal_code"), ("post code", "postal_code"), ("the zip", "postal_code"),
        ("my id", "personal_id"), ("identity code", "personal_id"), ("social security number", "personal_id"),
        ("the personal identity code", "personal_id"),
        ("household", "household_size"), ("number of people", "household_size"),
        ("the code", None), ("the number", None), ("the rent and the postal code", None), ("", None),
    ],
)
def test_field_to_change(text: str, field: str | None) -> None:
    assert parse_field_choice(text) == field


def test_unknown_completeness_test_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="household_size"):
        is_complete("household_size", "three")


# --------------------------------------------------------------------------- read-back


def test_read_back_texts() -> None:
    assert speak_code("290288-136D") == "2 9 0 2 8 8, dash, 1 3 6, D"
    assert speak_code("311299+999E") == "3 1 1 2 9 9, plus, 9 9 9, E"
    assert speak_code("010101A002S") == "0 1 0 1 0 1, A, 0 0 2, S"
    assert speak_digits("00180") == "0 0 1 8 0"
    assert speak_amount(820) == "820 euros"
    assert speak_amount(1) == "1 euro"


def test_today_is_an_explicit_argument() -> None:
    code = make_code(1, 1, 26, "A", 222)  # born 2026-01-01
    assert isinstance(parse_personal_id(speak_code(code), date(2026, 1, 1)), Parsed)
    result = parse_personal_id(speak_code(code), date(2025, 12, 31))
    assert isinstance(result, Invalid) and result.reason == "future_date"
