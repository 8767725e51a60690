"""Personal identity codes are masked in what the web side shows: spoken codes in transcripts too."""

from __future__ import annotations

import pytest

from voicebot.dialogue.spoken import speak_code
from voicebot.privacy import mask_json, mask_personal_data, mask_spoken_personal_ids, personal_ids


@pytest.mark.parametrize("said, masked", [
    ("two nine zero two eight eight dash one three six dee", "two nine zero two eight eight dash *** dee"),
    ("my code is two nine zero uh two eight eight minus uh one thirty six d as in david",
     "my code is two nine zero uh two eight eight minus uh *** d as in david"),
    ("twenty nine oh two eighty eight dash one three six dee", "twenty nine oh two eighty eight dash *** dee"),
    ("zero one zero one zero five a one two three bee", "zero one zero one zero five a *** bee"),
    ("zero one zero one zero five alpha one two three bee", "zero one zero one zero five alpha *** bee"),
    ("one three one zero five two plus three zero eight tee", "one three one zero five two plus *** tee"),
    ("290288 - 136d", "290288 - ***d"),
    ("290288a one two three b", "290288a *** b"),
    ("two nine zero two eight eight one three six dee", "two nine zero two eight eight *** dee"),  # sign not heard
])
def test_a_code_spelled_out_by_the_caller_loses_its_individual_number(said, masked):
    assert mask_spoken_personal_ids(said) == masked


def test_the_bots_read_back_of_a_code_is_masked_as_well():
    line = f"Let me read that back. personal identity code: {speak_code('290288-136D')}. postal code: 0 0 1 8 0."
    assert mask_personal_data(line) == ("Let me read that back. personal identity code: 2 9 0 2 8 8, dash, ***, D. "
                                        "postal code: 0 0 1 8 0.")


@pytest.mark.parametrize("text", [
    "seven hundred and ten euros a month", "there are three of us", "zero zero one eight zero", "[DTMF 0]",
    "I want to talk to a person", "minus five", "call me back on 0401234567",
])
def test_other_answers_are_left_alone(text):
    assert mask_personal_data(text) == text


def test_json_masks_written_codes_everywhere_and_spoken_ones_in_transcript_text_only():
    record = {
        "call_id": "12345678-1234-1234-1234-123456789012",
        "started_at": "2026-11-28T10:00:00+00:00",
        "caller_id": "+358401234567",
        "intake": {"fields": {"personal_id": "290288-136D", "household_size": 3}},
        "turns": [{"speaker": "caller", "text": "two nine zero two eight eight dash one three six dee"},
                  {"speaker": "caller", "text": "it is 290288-136D", "confidence": 0.9}],
        "note": "two nine zero two eight eight dash one three six",
    }
    masked = mask_json(record)
    assert masked["call_id"] == record["call_id"] and masked["started_at"] == record["started_at"]
    assert masked["caller_id"] == "+358401234567"
    assert masked["intake"]["fields"] == {"personal_id": "290288-***D", "household_size": 3}
    assert [t["text"] for t in masked["turns"]] == ["two nine zero two eight eight dash *** dee", "it is 290288-***D"]
    assert masked["note"] == record["note"]  # not a transcript: only written codes are looked for
    assert record["intake"]["fields"]["personal_id"] == "290288-136D"  # the input is not changed


def test_personal_ids_picks_the_fields_that_hold_a_code():
    assert personal_ids({"personal_id": "290288-136D", "postal_code": "00180", "household_size": 3}) == {
        "personal_id": "290288-136D"}
