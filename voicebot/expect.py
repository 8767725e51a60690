"""Checking replayed calls against expectations (the ``expect`` blocks of a call spec)."""

from __future__ import annotations

from voicebot.errors import VoicebotError

import json
from pathlib import Path


class SpecError(VoicebotError):
    """The expectation file is unreadable (one line)."""


def load_expectations(path: Path) -> dict[str, dict]:
    """Call id -> its ``expect`` block."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        return {call["id"]: call.get("expect", {}) for call in spec["calls"]}
    except FileNotFoundError:
        raise SpecError(f"{path}: expectation file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SpecError(f"{path}: not a call spec ({e.__class__.__name__}: {e})") from None


def check_report(report: dict, expect: dict) -> list[str]:
    """Every way the report differs from the expectation, one line each."""
    problems = []
    if "outcome" in expect and report["outcome"] != expect["outcome"]:
        problems.append(f"outcome {report['outcome']!r}, expected {expect['outcome']!r}")
    if "intents" in expect and report["intents"] != expect["intents"]:
        problems.append(f"intents {report['intents']}, expected {expect['intents']}")
    if "transfer_reason" in expect:
        got = (report.get("transfer") or {}).get("reason")
        if got != expect["transfer_reason"]:
            problems.append(f"transfer reason {got!r}, expected {expect['transfer_reason']!r}")
    if "intake" in expect:
        problems += _check_intake(report.get("intake"), expect["intake"])
    return problems


def _check_intake(got: dict | None, want: dict | None) -> list[str]:
    if want is None:
        return [] if got is None else [f"intake {got.get('form')!r} present, expected none"]
    if got is None:
        return ["no intake, expected one"]
    problems = []
    for key in ("form", "status"):
        if key in want and got.get(key) != want[key]:
            problems.append(f"intake {key} {got.get(key)!r}, expected {want[key]!r}")
    if "fields" in want:
        fields, wanted = got.get("fields") or {}, want["fields"] or {}
        for name in dict.fromkeys([*wanted, *fields]):
            if fields.get(name) != wanted.get(name):
                problems.append(f"intake field {name} {fields.get(name)!r}, expected {wanted.get(name)!r}")
    return problems
