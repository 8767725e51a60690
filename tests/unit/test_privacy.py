"""Personal identity codes are masked wherever a log line could carry one."""

from __future__ import annotations

import pytest

from voicebot.privacy import mask_fields, mask_personal_id


@pytest.mark.parametrize("code, masked", [
    ("131052-308T", "131052-***T"),
    ("290288-136D", "290288-***D"),
    ("010101A1234", "010101A***4"),
    ("311299y9876", "311299y***6"),
])
def test_the_individual_number_is_hidden(code, masked):
    assert mask_personal_id(code) == masked


def test_every_code_inside_a_sentence_is_hidden():
    text = "fields {'personal_id': '131052-308T'}, spouse 290288-136D."
    assert mask_personal_id(text) == "fields {'personal_id': '131052-***T'}, spouse 290288-***D."


@pytest.mark.parametrize("text", ["00180", "HA100001", "+358401234567", "call 1a2b3c4d5e6f", "1310520308T9"])
def test_text_without_a_code_is_left_alone(text):
    assert mask_personal_id(text) == text


def test_fields_are_masked_for_a_log_line_without_touching_other_values():
    fields = {"personal_id": "131052-308T", "postal_code": "00180", "household_size": 3}
    assert mask_fields(fields) == {"personal_id": "131052-***T", "postal_code": "00180", "household_size": 3}
    assert fields["personal_id"] == "131052-308T"
