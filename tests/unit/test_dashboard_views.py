"""The dashboard's views as pure functions: masking, escaping, the queue's order, the chart and the CSV export."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, timedelta, timezone

import pytest

from voicebot.calls.report import CallReport, Turn
from voicebot.events import IntakeForm
from voicebot.storage.base import ApplicationRecord, CallRecord
from voicebot.storage.figures import CallGroup, WaitGroup, day_window, fold_figures
from voicebot.storage.records import QueueEntry
from voicebot.web.dashboard_views import (
    ApplicationView, CallView, QueueRow, applications_csv, duration_text, hourly_chart_svg, mask_phone, mask_text, queue_rows,
    render_application, render_call, render_figures, render_queue,
)

UTC = timezone.utc
NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
PID = "131052-308T"
EVIL = '<img src=x onerror="alert(1)">'


def entry(entry_id: int, call_id: str, queue: str = "general", state: str = "waiting", *, priority: int = 0,
          ago_s: float = 60.0, reason: str = "caller_request", agent: str | None = None,
          wait_s: float | None = None) -> QueueEntry:
    return QueueEntry(entry_id, call_id, queue, priority, reason, "+358401234567", state,
                      NOW - timedelta(seconds=ago_s), agent, wait_s)


def record(call_id: str, turns: list[Turn], fields: dict | None = None, caller: str = "+358401234567") -> CallRecord:
    report = CallReport(call=f"sip:{call_id}", call_id=call_id, caller_id=caller, started_at="2026-11-28T09:58:00+00:00",
                        turns=turns, intake=IntakeForm("housing_allowance", "incomplete", fields) if fields else None)
    return CallRecord(report, "active")


@pytest.mark.parametrize("number, masked", [
    ("+358401234567", "+358******567"), ("0401234567", "040****567"), ("12345", "***45"),
    ("+358 40 123 4567", "+358 ** *** *567"), ("replay", "replay"), ("", ""),
])
def test_phone_numbers_keep_only_their_ends(number, masked):
    assert mask_phone(number) == masked


@pytest.mark.parametrize("text, shown", [
    ("call me at 0401234567 please", "call me at 040****567 please"),
    ("+358 40 123 4567", "+358 ** *** *567"),
    ("it is 131052-308T", "it is 131052-***T"),
    ("one three one zero five two dash three zero eight tee", "one three one zero five two dash *** tee"),
    ("rent 850, postal code 00100, reference HA100001", "rent 850, postal code 00100, reference HA100001"),
])
def test_transcript_text_loses_identity_codes_and_phone_numbers_but_keeps_other_numbers(text, shown):
    assert mask_text(text) == shown


@pytest.mark.parametrize("seconds, text", [(None, "–"), (0, "0 s"), (59.4, "59 s"), (75, "1 min 15 s"),
                                           (3725, "1 h 02 min")])
def test_durations_read_as_people_say_them(seconds, text):
    assert duration_text(seconds) == text


def test_the_queue_lists_waiting_callers_by_queue_and_position_then_those_an_agent_has():
    entries = [entry(1, "a", ago_s=300), entry(2, "b", "benefits", ago_s=200), entry(3, "c", ago_s=100, priority=5),
               entry(4, "d", state="connecting", agent="gail", wait_s=42.0, ago_s=400)]
    served_order = [entry(2, "b", "benefits"), entry(3, "c", priority=5), entry(1, "a")]
    rows = queue_rows(entries, served_order, {}, NOW)
    assert [(r.call_id, r.position) for r in rows] == [("b", 1), ("c", 1), ("a", 2), ("d", None)]
    assert rows[0].wait_s == 200 and rows[3].wait_s == 42.0 and rows[3].agent == "gail"


def test_a_queue_row_carries_the_bots_context_masked():
    turns = [Turn("bot", "Please say your code.", 0, 1), Turn("caller", "one three one zero five two dash three "
                                                                        "zero eight tee", 1, 3),
             Turn("caller", "I want to speak to a person", 4, 6, intent="agent"), Turn("caller", "  ", 7, 8)]
    row = QueueRow.of(entry(1, "a"), 1, record("a", turns, {"personal_id": PID}), NOW)
    data = row.to_json()
    assert data["caller"] == "+358******567" and data["context"]["intents"] == ["agent"]
    assert data["context"]["last_caller_words"] == "I want to speak to a person"
    assert data["context"]["fields"] == {"personal_id": "131052-***T"}
    assert PID not in render_queue([row])


def test_everything_a_caller_or_the_store_says_is_escaped_in_html():
    turns = [Turn("caller", EVIL, 0, 1, intent=EVIL)]
    view = CallView.of(record(EVIL, turns, {EVIL: EVIL}, caller=EVIL), 10)
    row = QueueRow.of(entry(1, EVIL, queue=EVIL, reason=EVIL), 1, record(EVIL, turns, {EVIL: EVIL}), NOW)
    application = ApplicationView.of(ApplicationRecord(EVIL, EVIL, "active", IntakeForm(EVIL, "incomplete", {EVIL: EVIL},
                                                                                        EVIL), EVIL, EVIL, None))
    for html in (render_call(view, UTC), render_queue([row]), render_application(application, view, UTC)):
        assert "<img" not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html


def test_a_call_card_shows_the_last_turns_and_says_how_many_came_before():
    turns = [Turn("bot" if i % 2 else "caller", f"turn {i}", i, i + 0.5) for i in range(20)]
    view = CallView.of(record("c1", turns), 5)
    assert [t.text for t in view.turns] == [f"turn {i}" for i in range(15, 20)] and view.earlier_turns == 15
    html = render_call(view, UTC)
    assert "15 earlier turn(s)" in html and html.count("<li") == 5 and 'data-call="c1"' in html


def figures_with(calls_per_hour: dict[int, int], waits: dict[int, float]):
    since, until = day_window(date(2026, 11, 28), UTC)
    return fold_figures(since, until, [CallGroup(h, "ended", "completed", None, n) for h, n in calls_per_hour.items()],
                        [WaitGroup(h, "done", 1, w, 1, w) for h, w in waits.items()])


def test_the_chart_draws_a_bar_per_hour_in_proportion_and_the_wait_as_a_line():
    svg = hourly_chart_svg(figures_with({8: 10, 9: 5, 10: 20}, {9: 120.0, 10: 600.0}), UTC)
    bars = re.findall(r'<rect class="bar" data-hour="(\d\d)" data-calls="(\d+)" x="[\d.]+" y="([\d.]+)" '
                      r'width="[\d.]+" height="([\d.]+)"', svg)
    assert len(bars) == 24
    heights = {hour: float(h) for hour, _, _, h in bars}
    assert heights["10"] == pytest.approx(2 * heights["08"]) == pytest.approx(4 * heights["09"])
    assert heights["00"] == 0 and 'aria-label="Calls and average wait per hour, 2026-11-28"' in svg
    points = re.search(r'<polyline class="wait-line" fill="none" points="([^"]+)"', svg).group(1).split()
    assert len(points) == 2 and float(points[0].split(",")[1]) > float(points[1].split(",")[1])  # longer wait: higher
    assert ">20<" in svg and ">10 min<" in svg  # the axes' tops


def test_an_empty_day_draws_an_empty_chart_and_dashes_for_rates():
    figures = figures_with({}, {})
    html = render_figures(figures, UTC)
    assert "<polyline" not in html and html.count('class="bar"') == 24
    assert re.search(r'data-figure="containment".*?<span class="value">–</span>', html)


def test_the_csv_export_keeps_formulas_from_running_and_has_a_column_per_field():
    views = [ApplicationView.of(ApplicationRecord("c1", "+358401234567", "ended",
                                                  IntakeForm("housing_allowance", "submitted",
                                                             {"personal_id": PID, "monthly_rent": "-5+cmd|' /C calc'!A0"},
                                                             "HA100001"), "2026-11-28T10:00:00.000+00:00",
                                                  "2026-11-28T10:05:00.000+00:00", "2026-11-28T10:05:00.000+00:00")),
             ApplicationView.of(ApplicationRecord("c2", "", "active", IntakeForm("other", "incomplete",
                                                                                 {"postal_code": "00100"}),
                                                  "2026-11-28T11:00:00.000+00:00", "2026-11-28T11:00:00.000+00:00",
                                                  None))]
    rows = list(csv.reader(io.StringIO(applications_csv(views))))
    assert rows[0][-3:] == ["monthly_rent", "personal_id", "postal_code"]
    first = dict(zip(rows[0], rows[1]))
    assert first["caller"] == "'+358******567" and first["monthly_rent"].startswith("'-5")
    assert first["personal_id"] == "131052-***T" and first["postal_code"] == ""
    assert dict(zip(rows[0], rows[2]))["postal_code"] == "00100" and len(rows) == 3
