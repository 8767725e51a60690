"""A day's figures (counted in SQL on each backend, folded by one pure function) and the calls' changes on the
change feed, which the dashboard shows transcripts from as they happen. Each store test runs once per backend."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from tests.store_backends import make_store
from tests.unit.test_store_queue import clock, next_change, store  # noqa: F401 (fixtures)
from voicebot.calls.report import CallReport, Turn
from voicebot.events import IntakeForm, Transfer
from voicebot.storage import CallChange, QueueChange
from voicebot.storage.figures import (
    UNSPECIFIED_REASON, CallGroup, WaitGroup, day_window, fold_figures, hour_starts, text_margin,
)

HELSINKI = ZoneInfo("Europe/Helsinki")
DAY = date(2026, 11, 28)
#: 2026-11-28 in Helsinki (UTC+2): 2026-11-27T22:00Z .. 2026-11-28T22:00Z
SINCE, UNTIL = day_window(DAY, HELSINKI)


def utc(hour: int, minute: int = 0, second: float = 0.0, *, day: int = 28) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=timezone.utc) + timedelta(seconds=second)


async def add_call(store, call_id: str, started: datetime, *, outcome: str | None = "completed",
                   reason: str | None = None, text: str | None = None) -> None:
    """A call started at ``started`` (its report's text: ``text`` if given); ``outcome`` None leaves it active."""
    report = CallReport(call=f"sip:{call_id}", call_id=call_id, caller_id="+358401234567",
                        started_at=text or started.isoformat(timespec="seconds"))
    await store.start_call(report)
    if outcome is None:
        return
    report.outcome = outcome
    report.transfer = Transfer(reason, "general") if reason else None
    report.ended_at = (started + timedelta(minutes=2)).isoformat(timespec="seconds")
    report.duration_s = 120.0
    await store.end_call(report)


# ---------------------------------------------------------------------- calls on the change feed


async def test_a_calls_record_changes_reach_the_feed_as_they_happen(store):
    report = CallReport(call="sip:a", call_id="a", caller_id="+358401", started_at="2026-11-28T10:00:00+00:00")
    async with store.changes() as feed:
        await store.start_call(report)
        await store.save_progress("a", {0: Turn("bot", "Welcome.", 0.0, 1.0)}, [])
        await store.save_intake("a", IntakeForm("housing_allowance", "incomplete", {"postal_code": "00100"}))
        await store.submit_intake("a", IntakeForm("housing_allowance", "submitted", {"postal_code": "00100"}))
        await store.enqueue("a", "general")
        report.outcome = "completed"
        await store.end_call(report)
        seen = [await next_change(feed) for _ in range(6)]
    assert seen[:4] == [CallChange("a", "started"), CallChange("a", "progress"), CallChange("a", "intake"),
                        CallChange("a", "intake")]
    assert isinstance(seen[4], QueueChange) and seen[5] == CallChange("a", "ended")


async def test_another_processs_call_progress_reaches_this_feed(store, store_url, clock):
    async with make_store(store_url, now=clock, recover=False) as other:
        async with store.changes() as feed:
            await other.start_call(CallReport(call="sip:b", call_id="b", started_at="2026-11-28T10:00:00+00:00"))
            assert await next_change(feed) == CallChange("b", "started")
            await other.save_progress("b", {0: Turn("caller", "hello", 0.0, 1.0)}, [])
            assert await next_change(feed) == CallChange("b", "progress")


async def test_calls_left_open_by_a_crash_are_announced_as_interrupted(store_url, clock):
    async with make_store(store_url, now=clock) as first:
        await first.start_call(CallReport(call="sip:c", call_id="c", started_at="2026-11-28T10:00:00+00:00"))
        async with make_store(store_url, now=clock, recover=False) as watcher:
            async with watcher.changes() as feed:
                assert await first.recover_interrupted() == 1
                assert await next_change(feed) == CallChange("c", "interrupted")


# ---------------------------------------------------------------------- the day's figures in the store


async def test_a_days_figures_count_calls_containment_transfers_abandons_and_waits(store, clock):
    # before the day (Helsinki midnight is 22:00 UTC the day before) and after it: not counted
    await add_call(store, "yesterday", utc(21, 59, 59, day=27))
    await add_call(store, "tomorrow", utc(22, 0, 0))
    # hour 0 of the day (22:00-23:00 UTC): one contained call, written with a +02:00 offset
    await add_call(store, "night", utc(22, 30, day=27), text="2026-11-28T00:30:00+02:00")
    # hour 12 (10:00-11:00 UTC): two contained, one transferred (caller asked), one hung up on the bot
    await add_call(store, "ok1", utc(10, 5))
    await add_call(store, "ok2", utc(10, 6))
    await add_call(store, "asked", utc(10, 10), outcome="transferred", reason="caller_request")
    await add_call(store, "gone", utc(10, 20), outcome="abandoned")
    # hour 13: still on the line and waiting in the queue (its transfer reason comes from the queue entry)
    await add_call(store, "waits", utc(11, 0), outcome=None)
    await add_call(store, "talking", utc(11, 1), outcome=None)

    clock.now = utc(10, 10)
    asked = await store.enqueue("asked", "general", reason="caller_request")
    clock.now = utc(10, 11, 30)
    await store.take_next("alice", ["general"])                 # waited 90 s
    clock.now = utc(11, 0)
    waits = await store.enqueue("waits", "general", reason="not_understood")
    clock.now = utc(11, 1)
    abandoner = await store.enqueue("talking", "general", reason="complex_case")
    clock.now = utc(11, 1, 30)
    await store.leave_queue(abandoner.entry_id, "abandoned")    # hung up after 30 s
    figures = await store.day_figures(SINCE, UNTIL, now=utc(11, 10))

    assert (figures.calls, figures.ended, figures.contained) == (7, 5, 3)
    assert figures.containment == pytest.approx(3 / 5)
    assert figures.transfers_by_reason == {"caller_request": 1, "not_understood": 1, "complex_case": 1}
    assert (figures.queued, figures.waiting, figures.answered, figures.abandoned, figures.callbacks) == (3, 1, 1, 1, 0)
    assert figures.abandon_rate == pytest.approx(1 / 2)
    assert figures.average_wait_s == pytest.approx((90 + 30) / 2)
    assert figures.longest_wait_s == pytest.approx(600)          # "waits" has waited 10 minutes by now
    assert asked.entry_id != waits.entry_id

    assert len(figures.hours) == 24 and figures.hours[0].start == datetime(2026, 11, 28, tzinfo=HELSINKI)
    by_hour = {h.start.hour: h for h in figures.hours if h.calls or h.longest_wait_s is not None}
    assert sorted(by_hour) == [0, 12, 13]
    assert (by_hour[0].calls, by_hour[12].calls, by_hour[13].calls) == (1, 4, 2)
    assert (by_hour[12].transfers, by_hour[13].transfers, by_hour[13].abandoned) == (1, 2, 1)
    assert by_hour[12].average_wait_s == pytest.approx(90) and by_hour[13].average_wait_s == pytest.approx(30)
    assert by_hour[13].longest_wait_s == pytest.approx(600)


async def test_an_empty_day_has_no_rates_rather_than_zero_ones(store):
    figures = await store.day_figures(SINCE, UNTIL, now=utc(12))
    assert (figures.calls, figures.containment, figures.abandon_rate, figures.average_wait_s) == (0, None, None, None)
    assert figures.longest_wait_s is None and len(figures.hours) == 24
    assert figures.to_json()["containment"] is None


async def test_figures_from_sql_match_a_plain_count_over_the_same_calls(store, clock):
    """Random calls and queue entries; the backend's figures must equal a direct count in Python."""
    rng = random.Random(20261128)
    calls, entries = [], []
    for i in range(60):
        started = SINCE - timedelta(hours=2) + timedelta(seconds=rng.uniform(0, 28 * 3600))
        outcome = rng.choice([None, "completed", "completed", "transferred", "abandoned"])
        reason = rng.choice(["caller_request", "complex_case"]) if outcome == "transferred" else None
        await add_call(store, f"r{i}", started, outcome=outcome, reason=reason)
        calls.append((started.replace(microsecond=0), outcome, reason))
    moment = SINCE + timedelta(hours=20)
    for i in range(40):
        clock.now = SINCE - timedelta(hours=1) + timedelta(seconds=rng.uniform(0, 22 * 3600))
        entry = await store.enqueue(f"q{i}", "general", reason="not_understood")
        state = rng.choice(["waiting", "taken", "abandoned", "callback"])
        wait_s = rng.uniform(1, 900)
        clock.now += timedelta(seconds=wait_s)
        if state == "taken":
            await store.take_next(f"agent{i}", ["general"])  # the oldest waiting, maybe not this one
        elif state in ("abandoned", "callback"):
            await store.leave_queue(entry.entry_id, state)
        entries.append(entry.entry_id)
    figures = await store.day_figures(SINCE, UNTIL, now=moment)

    inside = [c for c in calls if SINCE <= c[0] < UNTIL]
    assert figures.calls == len(inside)
    assert figures.ended == sum(1 for c in inside if c[1] is not None)
    assert figures.contained == sum(1 for c in inside if c[1] == "completed")
    reasons: dict[str, int] = {}
    for c in inside:
        if c[2]:
            reasons[c[2]] = reasons.get(c[2], 0) + 1
    assert figures.transfers_by_reason == reasons
    for hour in figures.hours:
        assert hour.calls == sum(1 for c in inside if hour.start <= c[0] < hour.start + timedelta(hours=1))

    queued = [e for e in await store.list_queue(states=["waiting", "connecting", "connected", "abandoned",
                                                        "callback", "done"], limit=500)
              if SINCE <= e.enqueued_at < UNTIL]
    ended = [e.wait_s for e in queued if e.state != "waiting" and e.wait_s is not None]
    going = [(moment - e.enqueued_at).total_seconds() for e in queued if e.state == "waiting"]
    assert figures.queued == len(queued) and figures.waiting == len(going)
    assert figures.abandoned == sum(1 for e in queued if e.state == "abandoned")
    assert figures.callbacks == sum(1 for e in queued if e.state == "callback")
    assert figures.average_wait_s == pytest.approx(sum(ended) / len(ended))
    assert figures.longest_wait_s == pytest.approx(max(ended + [max(0.0, g) for g in going]))
    assert 0 < figures.queued < len(entries)


# ---------------------------------------------------------------------- folding (pure)


def test_a_day_with_a_daylight_saving_change_has_its_real_number_of_hours():
    since, until = day_window(date(2026, 3, 29), HELSINKI)   # clocks go forward: 03:00 -> 04:00
    starts = hour_starts(since, until)
    assert len(starts) == 23
    assert [s.hour for s in starts[2:5]] == [2, 4, 5]
    since, until = day_window(date(2026, 10, 25), HELSINKI)  # and back
    assert len(hour_starts(since, until)) == 25


def test_folding_adds_groups_up_and_keeps_hours_apart():
    since, until = day_window(DAY, timezone.utc)
    figures = fold_figures(since, until, [
        CallGroup(9, "ended", "completed", None, 4),
        CallGroup(9, "ended", "transferred", "complex_case", 2),
        CallGroup(10, "active", None, "", 1),                      # queued with no reason given
        CallGroup(10, "interrupted", "abandoned", None, 1),
        CallGroup(99, "ended", "completed", None, 1),              # outside the window's hours: totals only
    ], [
        WaitGroup(9, "done", 2, 100.0, 2, 70.0),
        WaitGroup(10, "waiting", 1, 0.0, 0, 400.0),
        WaitGroup(10, "abandoned", 1, 20.0, 1, 20.0),
    ])
    assert (figures.calls, figures.ended, figures.contained) == (9, 8, 5)
    assert figures.transfers_by_reason == {"complex_case": 2, UNSPECIFIED_REASON: 1} and figures.transfers == 3
    assert figures.abandon_rate == pytest.approx(1 / 3) and figures.average_wait_s == pytest.approx(40)
    assert figures.longest_wait_s == 400.0
    assert (figures.hours[9].calls, figures.hours[9].transfers, figures.hours[9].average_wait_s) == (6, 2, 50)
    assert (figures.hours[10].calls, figures.hours[10].abandoned, figures.hours[10].longest_wait_s) == (2, 1, 400)
    assert sum(h.calls for h in figures.hours) == 8
    data = figures.to_json()
    assert data["containment"] == round(5 / 8, 3) and data["hours"][9]["start"] == "2026-11-28T09:00:00+00:00"


def test_the_text_margin_takes_in_any_utc_offset():
    lo, hi = text_margin(SINCE, UNTIL)
    assert lo < "2026-11-28T00:30:00+14:00" and "2026-11-28T21:59:59-12:00" < hi
    assert lo == "2026-11-26T22:00:00" and hi == "2026-11-29T22:00:00"
