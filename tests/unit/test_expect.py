"""Checking a replay report against a call spec's expect block."""

from __future__ import annotations

import json

import pytest

from voicebot.expect import SpecError, check_report, load_expectations

REPORT = {
    "outcome": "completed", "intents": ["apply_housing_allowance"], "transfer": None,
    "intake": {"form": "housing_allowance", "status": "submitted", "reference": "HA100001",
               "fields": {"personal_id": "290288-136D", "postal_code": "00180"}},
}


def test_a_matching_report_has_no_problems():
    expect = {"outcome": "completed", "intents": ["apply_housing_allowance"],
              "intake": {"form": "housing_allowance", "status": "submitted",
                         "fields": {"personal_id": "290288-136D", "postal_code": "00180"}}}
    assert check_report(REPORT, expect) == []


def test_every_difference_is_its_own_line():
    expect = {"outcome": "transferred", "transfer_reason": "complex_case", "intents": [],
              "intake": {"status": "incomplete", "fields": {"personal_id": "290288-136D", "monthly_rent": 700}}}
    problems = check_report(REPORT, expect)
    assert problems == [
        "outcome 'completed', expected 'transferred'",
        "intents ['apply_housing_allowance'], expected []",
        "transfer reason None, expected 'complex_case'",
        "intake status 'submitted', expected 'incomplete'",
        "intake field monthly_rent None, expected 700",
        "intake field postal_code '00180', expected None",
    ]


def test_expected_absence_of_intake():
    assert check_report(REPORT, {"intake": None}) == ["intake 'housing_allowance' present, expected none"]
    assert check_report({**REPORT, "intake": None}, {"intake": {"status": "submitted"}}) == ["no intake, expected one"]


def test_spec_file_problems_are_one_line(tmp_path):
    bad = tmp_path / "spec.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="not a call spec"):
        load_expectations(bad)
    bad.write_text(json.dumps({"calls": [{"id": "a", "expect": {"outcome": "completed"}}]}))
    assert load_expectations(bad) == {"a": {"outcome": "completed"}}
