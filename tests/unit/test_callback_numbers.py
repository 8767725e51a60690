"""The number a callback goes to: spoken, keyed or from the caller ID, and how the bot reads it back."""

from __future__ import annotations

import pytest

from voicebot.dialogue.spoken import parse_callback_request, parse_phone_number, speak_phone_number
from voicebot.dialogue.validators import Invalid, Parsed, phone_number_of_caller_id, validate_phone_number


@pytest.mark.parametrize("said, number", [
    ("oh four oh one two three four five six seven", "0401234567"),
    ("my number is plus three five eight four oh one two three four five six seven", "+358401234567"),
    ("zero nine double one two three four", "0911234"),
    ("it's five five five one two", "55512"),
])
def test_a_spoken_number_is_read_digit_by_digit(said, number):
    assert parse_phone_number(said) == Parsed(number)


def test_too_few_or_too_many_digits_are_understood_but_refused():
    assert isinstance(parse_phone_number("one two three"), Invalid)
    assert isinstance(parse_phone_number("one " * 16), Invalid)
    assert validate_phone_number("1234").reason == "length"  # type: ignore[union-attr]


def test_words_that_are_no_number_are_not_a_number_at_all():
    assert parse_phone_number("call me back please") is None
    assert parse_phone_number("purple monkey dishwasher") is None
    assert parse_phone_number("four plus five") is None


@pytest.mark.parametrize("caller_id, number", [
    ("+358 40 123 4567", "+358401234567"), ("040-123 4567", "0401234567"), ("(09) 123.456", "09123456"),
    ("anonymous", None), ("replay", None), ("", None), ("123", None),
])
def test_the_caller_id_is_a_number_to_call_only_when_it_looks_like_one(caller_id, number):
    assert phone_number_of_caller_id(caller_id) == number


@pytest.mark.parametrize("said", ["call me back", "a callback please", "could you call back later", "ring me"])
def test_ways_of_asking_for_a_callback(said):
    assert parse_callback_request(said)


@pytest.mark.parametrize("said", ["yes", "I'll wait", "back to the menu", "call centre"])
def test_what_is_no_callback_request(said):
    assert not parse_callback_request(said)


def test_a_number_is_read_back_in_groups_of_three_digits():
    assert speak_phone_number("0401234567") == "0 4 0, 1 2 3, 4 5 6 7"
    assert speak_phone_number("+358401234567") == "plus, 3 5 8, 4 0 1, 2 3 4, 5 6 7"
    assert speak_phone_number("55512") == "5 5 5, 1 2"
