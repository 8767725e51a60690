"""The store's live-agent queue, callbacks, agents, logins, audit log, retention and change feed, on every
backend (a real SQLite file, a real PostgreSQL server): each test runs once per backend."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from tests.store_backends import make_store
from voicebot.calls.report import CallReport, Turn
from voicebot.events import IntakeForm
from voicebot.storage import (
    AgentChange, CallbackChange, LoginSession, QueueChange, StoreError, User,
)

START = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)
#: a feed that says nothing for this long has failed the test (a guard, not a timing claim)
FEED_GUARD_S = 20


class Clock:
    """The store's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(store_url, clock):
    async with make_store(store_url, now=clock, poll_interval_s=0.05) as s:
        yield s


async def next_change(feed):
    return await asyncio.wait_for(feed.__anext__(), FEED_GUARD_S)


# ---------------------------------------------------------------------- queue order and positions


async def test_callers_are_served_by_priority_then_in_the_order_they_came(store, clock):
    a = await store.enqueue("a", "general", reason="not_understood", caller_id="+358401")
    clock.advance(1)
    b = await store.enqueue("b", "general")
    clock.advance(1)
    urgent = await store.enqueue("c", "general", priority=5, reason="asked_for_agent")
    assert a.state == "waiting" and a.enqueued_at == START and a.reason == "not_understood"
    assert [e.call_id for e in await store.list_waiting("general")] == ["c", "a", "b"]
    positions = [await store.queue_position(e.entry_id) for e in (urgent, a, b)]
    assert [(p.position, p.waiting) for p in positions] == [(1, 3), (2, 3), (3, 3)]

    taken = [await store.take_next(agent, ["general"]) for agent in ("alice", "bob", "carol")]
    assert [e.call_id for e in taken] == ["c", "a", "b"]
    assert [(e.state, e.agent) for e in taken] == [("connecting", "alice"), ("connecting", "bob"),
                                                   ("connecting", "carol")]
    assert await store.take_next("dave", ["general"]) is None
    assert await store.queue_position(a.entry_id) is None  # no longer waiting


async def test_an_agent_takes_callers_only_from_the_queues_they_serve(store, clock):
    await store.enqueue("benefits-1", "benefits")
    clock.advance(1)
    await store.enqueue("general-1", "general")
    assert await store.take_next("bob", ["pensions"]) is None
    assert (await store.take_next("bob", ["general", "pensions"])).call_id == "general-1"
    assert (await store.take_next("carol", ["general", "benefits"])).call_id == "benefits-1"


async def test_positions_count_only_callers_of_the_same_queue(store, clock):
    await store.enqueue("x", "benefits")
    mine = await store.enqueue("y", "general")
    pos = await store.queue_position(mine.entry_id)
    assert (pos.queue, pos.position, pos.waiting) == ("general", 1, 1)
    assert [e.call_id for e in await store.list_waiting()] == ["x", "y"]


async def test_the_wait_estimate_uses_recent_handling_times_and_the_agents_not_away(store, clock):
    first = await store.enqueue("first", "general")
    second = await store.enqueue("second", "general")
    assert (await store.queue_position(second.entry_id)).estimated_wait_s is None  # nobody serves the queue
    await store.save_agent("alice", "sip:alice@example.org", ["general"])
    await store.save_agent("bob", "sip:bob@example.org", ["general", "benefits"])
    await store.save_agent("carol", "sip:carol@example.org", ["benefits"])
    for name in ("alice", "bob", "carol"):
        await store.set_agent_state(name, "available")
    pos = await store.queue_position(second.entry_id, default_handling_s=120)
    assert (pos.position, pos.agents, pos.estimated_wait_s) == (2, 2, 120.0)  # 2 x 120 s / 2 agents

    # handling times replace the default once there are some
    taken = await store.take_next("alice", ["general"])
    assert taken.entry_id == first.entry_id
    await store.mark_connected(taken.entry_id)
    clock.advance(300)
    await store.finish(taken.entry_id)
    await store.set_agent_state("bob", "away")
    pos = await store.queue_position(second.entry_id, default_handling_s=120)
    assert (pos.position, pos.agents, pos.estimated_wait_s) == (1, 1, 300.0)


# ---------------------------------------------------------------------- an entry's life


async def test_a_handled_caller_records_agent_wait_handling_time_and_note(store, clock):
    entry = await store.enqueue("c1", "general", priority=2, reason="complex_case", caller_id="+358401234567")
    clock.advance(42.5)
    taken = await store.take_next("alice", ["general"])
    assert (taken.state, taken.agent, taken.wait_s) == ("connecting", "alice", 42.5)
    clock.advance(5)
    connected = await store.mark_connected(entry.entry_id)
    assert (connected.state, connected.connected_at, connected.wait_s) == ("connected", clock.now, 47.5)
    clock.advance(180.25)
    done = await store.finish(entry.entry_id, "asked about rent; form sent")
    assert (done.state, done.handled_s, done.note, done.ended_at) == ("done", 180.25,
                                                                        "asked about rent; form sent", clock.now)
    assert await store.get_queue_entry(entry.entry_id) == done
    assert done.to_json()["enqueued_at"] == "2026-11-28T10:00:00+00:00"


async def test_a_caller_who_hangs_up_while_waiting_is_abandoned_with_the_wait_time(store, clock):
    entry = await store.enqueue("c1", "general")
    clock.advance(95)
    gone = await store.leave_queue(entry.entry_id, "abandoned")
    assert (gone.state, gone.wait_s, gone.ended_at, gone.agent) == ("abandoned", 95.0, clock.now, None)
    assert await store.list_waiting() == []
    assert await store.take_next("alice", ["general"]) is None


async def test_a_caller_who_asks_for_a_callback_leaves_the_queue(store, clock):
    entry = await store.enqueue("c1", "general")
    clock.advance(30)
    left = await store.leave_queue(entry.entry_id, "callback")
    assert (left.state, left.wait_s) == ("callback", 30.0)


async def test_a_caller_the_agent_did_not_answer_goes_back_to_their_old_place(store, clock):
    first = await store.enqueue("first", "general")
    clock.advance(1)
    await store.enqueue("second", "general")
    taken = await store.take_next("alice", ["general"])
    back = await store.requeue(taken.entry_id)
    assert (back.state, back.agent, back.wait_s) == ("waiting", None, None)
    assert (await store.queue_position(first.entry_id)).position == 1
    assert (await store.take_next("bob", ["general"])).call_id == "first"


async def test_an_agent_with_a_caller_ringing_or_talking_gets_no_second_one_until_done(store, clock):
    first, second, _ = [await store.enqueue(f"c{i}", "general") for i in range(3)]
    assert (await store.take_next("alice", ["general"])).entry_id == first.entry_id
    assert await store.take_next("alice", ["general"]) is None  # still being rung
    await store.mark_connected(first.entry_id)
    assert await store.take_next("alice", ["general", "benefits"]) is None  # talking
    assert (await store.take_next("bob", ["general"])).entry_id == second.entry_id
    await store.finish(first.entry_id)
    assert (await store.take_next("alice", ["general"])).call_id == "c2"


async def test_an_agent_whose_caller_went_back_in_line_may_take_one_again(store, clock):
    entry = await store.enqueue("c0", "general")
    await store.take_next("alice", ["general"])
    await store.requeue(entry.entry_id)
    assert (await store.take_next("alice", ["general"])).entry_id == entry.entry_id


async def test_one_agent_accepting_at_once_from_two_tabs_on_two_processes_gets_one_caller(store_url, clock):
    """Two stores on one database, as two service processes behind two browser tabs, each asked twice at once."""
    async with make_store(store_url, now=clock, poll_interval_s=0.05) as one, \
            make_store(store_url, now=clock, recover=False, poll_interval_s=0.05) as other:
        for round_no in range(10):
            agent = f"agent{round_no}"
            for i in range(4):
                await one.enqueue(f"r{round_no}-{i}", "general")
            got = await asyncio.gather(*(s.take_next(agent, ["general"]) for s in (one, other, one, other)))
            taken = [e for e in got if e is not None]
            assert len(taken) == 1, f"round {round_no}: {agent} was handed {[e.call_id for e in taken]}"
            handling = await one.list_queue(states=["connecting", "connected"], limit=500)
            assert [e.call_id for e in handling if e.agent == agent] == [taken[0].call_id]
            assert len(await one.list_waiting()) == 3
            await one.leave_queue(taken[0].entry_id, "abandoned")
            for entry in await one.list_waiting():
                await one.leave_queue(entry.entry_id, "abandoned")


async def test_moves_from_the_wrong_state_change_nothing(store):
    entry = await store.enqueue("c1", "general")
    assert await store.finish(entry.entry_id) is None
    assert await store.mark_connected(entry.entry_id) is None
    assert await store.requeue(entry.entry_id) is None
    await store.take_next("alice", ["general"])
    await store.mark_connected(entry.entry_id)
    assert await store.leave_queue(entry.entry_id, "abandoned") is None  # talking to the agent: not abandoned
    assert await store.finish(entry.entry_id) is not None
    assert await store.finish(entry.entry_id) is None
    assert await store.leave_queue(12345, "abandoned") is None
    assert (await store.get_queue_entry(entry.entry_id)).state == "done"
    with pytest.raises(ValueError):
        await store.leave_queue(entry.entry_id, "done")


async def test_the_queue_listing_shows_callers_on_the_line_unless_asked_for_other_states(store, clock):
    entries = [await store.enqueue(f"c{i}", "general") for i in range(4)]
    await store.take_next("alice", ["general"])
    await store.leave_queue(entries[1].entry_id, "abandoned")
    assert [e.call_id for e in await store.list_queue()] == ["c0", "c2", "c3"]
    assert [e.call_id for e in await store.list_queue(states=["abandoned"])] == ["c1"]
    assert [e.call_id for e in await store.list_queue(limit=1)] == ["c0"]
    with pytest.raises(ValueError, match="queue state must be one of"):
        await store.list_queue(states=["lost"])


# ---------------------------------------------------------------------- callbacks


async def test_a_callback_is_claimed_by_one_agent_only_and_closed_with_a_note(store, clock):
    cb = await store.request_callback("c1", "general", "+358401234567")
    assert (cb.state, cb.number, cb.claimed_by, cb.created_at) == ("open", "+358401234567", None, START)
    clock.advance(60)
    claimed = await store.claim_callback(cb.callback_id, "alice")
    assert (claimed.state, claimed.claimed_by, claimed.updated_at) == ("claimed", "alice", clock.now)
    assert await store.claim_callback(cb.callback_id, "bob") is None
    assert await store.close_callback(12345, "done") is None
    done = await store.close_callback(cb.callback_id, "failed", "no answer twice")
    assert (done.state, done.note, done.claimed_by) == ("failed", "no answer twice", "alice")
    assert await store.close_callback(cb.callback_id, "done") is None
    assert await store.get_callback(cb.callback_id) == done


async def test_callbacks_are_listed_oldest_first_by_state_and_queue(store, clock):
    ids = []
    for i, queue in enumerate(["general", "benefits", "general"]):
        ids.append((await store.request_callback(f"c{i}", queue, f"+35840{i}")).callback_id)
        clock.advance(1)
    await store.claim_callback(ids[0], "alice")
    assert [c.call_id for c in await store.list_callbacks()] == ["c0", "c1", "c2"]
    assert [c.call_id for c in await store.list_callbacks(["open"])] == ["c1", "c2"]
    assert [c.call_id for c in await store.list_callbacks(["open"], queue="general")] == ["c2"]
    with pytest.raises(ValueError):
        await store.list_callbacks(["lost"])


# ---------------------------------------------------------------------- agents


async def test_an_agent_saved_again_keeps_their_state_and_takes_the_new_queues(store, clock):
    alice = await store.save_agent("alice", "sip:alice@example.org", ["general"])
    assert (alice.state, alice.queues, alice.state_since) == ("away", ("general",), START)
    clock.advance(10)
    await store.set_agent_state("alice", "available")
    clock.advance(10)
    again = await store.save_agent("alice", "sip:alice@pbx.example.org", ["general", "benefits"])
    assert (again.state, again.sip_uri, again.queues) == ("available", "sip:alice@pbx.example.org",
                                                          ("general", "benefits"))
    assert again.state_since == START + timedelta(seconds=10)
    same = await store.set_agent_state("alice", "available")
    assert same.state_since == START + timedelta(seconds=10)  # no change, no new "since"
    assert await store.set_agent_state("nobody", "busy") is None
    with pytest.raises(ValueError):
        await store.set_agent_state("alice", "asleep")


async def test_agents_are_listed_by_name_and_by_the_queue_they_serve(store):
    await store.save_agent("bob", "sip:bob@example.org", ["benefits"])
    await store.save_agent("alice", "sip:alice@example.org", ["general", "benefits"])
    assert [a.name for a in await store.list_agents()] == ["alice", "bob"]
    assert [a.name for a in await store.list_agents("general")] == ["alice"]
    assert await store.get_agent("bob") == (await store.list_agents("benefits"))[1]
    assert await store.delete_agent("bob") and not await store.delete_agent("bob")
    assert await store.get_agent("bob") is None


# ---------------------------------------------------------------------- users, tokens, sessions


async def test_users_are_kept_with_their_password_hash_only_and_names_are_unique(store):
    user = await store.add_user(User("sam", "supervisor", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"))
    assert user.created_at == START and not user.disabled
    assert "password_hash" not in user.to_json()
    with pytest.raises(StoreError, match="already exists"):
        await store.add_user(User("sam", "agent", "$argon2id$other"))
    with pytest.raises(ValueError):
        await store.add_user(User("eve", "root", "x"))
    await store.add_user(User("alice", "agent", "$argon2id$a"))
    assert [u.name for u in await store.list_users()] == ["alice", "sam"]
    assert await store.set_password_hash("alice", "$argon2id$new")
    assert not await store.set_password_hash("nobody", "$argon2id$new")
    assert (await store.get_user("alice")).password_hash == "$argon2id$new"
    assert await store.get_user("nobody") is None


async def test_an_api_token_finds_its_user_until_revoked_or_the_user_is_disabled(store):
    await store.add_user(User("ops", "supervisor", "$argon2id$x"))
    token = await store.add_api_token("ops", "sha256:abc", "dashboard export")
    assert (token.user, token.label, token.created_at) == ("ops", "dashboard export", START)
    assert (await store.user_for_token("sha256:abc")).name == "ops"
    assert await store.user_for_token("sha256:nope") is None
    assert await store.list_api_tokens("ops") == [token]
    with pytest.raises(StoreError):
        await store.add_api_token("nobody", "sha256:def")
    assert await store.set_user_disabled("ops", True)
    assert await store.user_for_token("sha256:abc") is None
    await store.set_user_disabled("ops", False)
    assert await store.revoke_api_token("sha256:abc") and not await store.revoke_api_token("sha256:abc")
    assert await store.user_for_token("sha256:abc") is None


async def test_a_session_lasts_until_it_expires_or_its_user_is_deleted(store, clock):
    await store.add_user(User("alice", "agent", "$argon2id$a"))
    session = LoginSession("sha256:cookie", "alice", "csrf-123", START, START + timedelta(hours=8))
    await store.save_session(session)
    found, user = await store.get_session("sha256:cookie")
    assert found == session and user.name == "alice" and user.role == "agent"
    clock.advance(8 * 3600)
    assert await store.get_session("sha256:cookie") is None  # expired
    await store.save_session(replace(session, expires_at=clock.now + timedelta(hours=1)))  # renewed
    assert await store.get_session("sha256:cookie") is not None
    assert await store.delete_user("alice")
    assert await store.get_session("sha256:cookie") is None
    with pytest.raises(StoreError):
        await store.save_session(session)  # no such user any more


async def test_logging_out_deletes_the_session(store):
    await store.add_user(User("alice", "agent", "$argon2id$a"))
    await store.save_session(LoginSession("sha256:c", "alice", "t", START, START + timedelta(hours=1)))
    assert await store.delete_session("sha256:c") and not await store.delete_session("sha256:c")
    assert await store.get_session("sha256:c") is None


# ---------------------------------------------------------------------- audit log


async def test_opening_an_unmasked_code_is_audited_newest_first(store, clock):
    first = await store.audit("alice", "unmask_personal_id", "c1", "intake housing_allowance")
    clock.advance(1)
    await store.audit("sam", "unmask_personal_id", "c2")
    assert (first.user, first.action, first.call_id, first.at) == ("alice", "unmask_personal_id", "c1", START)
    assert [(e.user, e.call_id) for e in await store.list_audit()] == [("sam", "c2"), ("alice", "c1")]
    assert await store.list_audit("c1") == [first]


# ---------------------------------------------------------------------- retention


async def _call(store, call_id: str, *, recording: str | None = None, end: bool = True) -> None:
    report = CallReport(call=f"sip:{call_id}", call_id=call_id, caller_id="+358401234567",
                        started_at="2026-11-01T10:00:00+00:00")
    await store.start_call(report)
    await store.save_progress(call_id, {0: Turn("caller", "my code is 131052-308T", 0.0, 2.0)}, [400.0])
    await store.save_intake(call_id, IntakeForm("housing_allowance", "incomplete", {"personal_id": "131052-308T"}))
    if recording:
        await store.set_recording(call_id, recording)
    if end:
        report.turns = [Turn("caller", "my code is 131052-308T", 0.0, 2.0)]
        report.intake = IntakeForm("housing_allowance", "incomplete", {"personal_id": "131052-308T"})
        report.outcome = "transferred"
        await store.end_call(report)


async def test_retention_deletes_personal_data_older_than_the_limit_and_nothing_newer(store, clock):
    await _call(store, "old", recording="/data/recordings/old.wav")
    await _call(store, "still-on-the-line", end=False)
    old_entry = await store.enqueue("old", "general", caller_id="+358401234567")
    await store.take_next("alice", ["general"])
    await store.mark_connected(old_entry.entry_id)
    await store.finish(old_entry.entry_id, "caller's rent is 800")
    old_done = await store.request_callback("old", "general", "+358401234567")
    await store.claim_callback(old_done.callback_id, "alice")
    await store.close_callback(old_done.callback_id, "done")
    old_open = await store.request_callback("old", "general", "+358409999999")
    await store.add_user(User("alice", "agent", "$argon2id$a"))
    await store.save_session(LoginSession("sha256:gone", "alice", "t", START, START + timedelta(days=1)))
    await store.audit("alice", "unmask_personal_id", "old")

    clock.advance(31 * 86400)
    await _call(store, "new", recording="/data/recordings/new.wav")
    await store.save_session(LoginSession("sha256:live", "alice", "t", clock.now, clock.now + timedelta(days=1)))

    report = await store.apply_retention(30)
    assert (report.calls, report.intakes, report.callbacks) == (1, 1, 1)
    assert report.recording_paths == ("/data/recordings/old.wav",)

    old = await store.get_call("old")
    assert old.report.turns == [] and old.report.intake is None and old.recording_path is None
    assert old.report.caller_id == "" and old.report.outcome == "transferred"  # the figures stay
    new = await store.get_call("new")
    assert len(new.report.turns) == 1 and new.report.intake is not None
    assert new.recording_path == "/data/recordings/new.wav" and new.report.caller_id == "+358401234567"
    assert len((await store.get_call("still-on-the-line")).report.turns) == 1  # a live call is never touched
    entry = await store.get_queue_entry(old_entry.entry_id)
    assert (entry.caller_id, entry.note, entry.state) == ("", "", "done")
    assert await store.get_callback(old_done.callback_id) is None
    assert (await store.get_callback(old_open.callback_id)).number == "+358409999999"  # not worked yet
    assert await store.get_session("sha256:live") is not None
    assert len(await store.list_audit()) == 1
    assert [a.call_id for a in await store.list_applications()] == ["new", "still-on-the-line"]

    again = await store.apply_retention(30)
    assert (again.calls, again.intakes, again.callbacks, again.recording_paths) == (0, 0, 0, ())
    with pytest.raises(ValueError):
        await store.apply_retention(0)


# ---------------------------------------------------------------------- change feed


async def test_the_change_feed_reports_queue_callback_and_agent_changes_in_order(store):
    async with store.changes() as feed:
        entry = await store.enqueue("c1", "general")
        await store.take_next("alice", ["general"])
        cb = await store.request_callback("c2", "benefits", "+358401")
        await store.save_agent("alice", "sip:alice@example.org", ["general"])
        await store.set_agent_state("alice", "busy")
        await store.delete_agent("alice")
        seen = [await next_change(feed) for _ in range(6)]
    assert seen == [
        QueueChange(entry.entry_id, "c1", "general", "waiting"),
        QueueChange(entry.entry_id, "c1", "general", "connecting"),
        CallbackChange(cb.callback_id, "benefits", "open"),
        AgentChange("alice", "away"),
        AgentChange("alice", "busy"),
        AgentChange("alice", None),
    ]


async def test_a_change_made_through_another_connection_reaches_this_feed(store, store_url, clock):
    """Another store on the same database stands for another service process (SQLite: the change log read by
    polling; PostgreSQL: NOTIFY to this store's LISTEN connection)."""
    async with make_store(store_url, now=clock, recover=False) as other:
        async with store.changes() as feed:
            entry = await other.enqueue("c1", "general")
            assert await next_change(feed) == QueueChange(entry.entry_id, "c1", "general", "waiting")
            cb = await other.request_callback("c1", "general", "+358401")
            assert await next_change(feed) == CallbackChange(cb.callback_id, "general", "open")


async def test_a_write_that_changes_nothing_sends_no_change(store):
    entry = await store.enqueue("c1", "general")
    async with store.changes() as feed:
        assert await store.finish(entry.entry_id) is None
        assert await store.set_agent_state("nobody", "busy") is None
        await store.leave_queue(entry.entry_id, "abandoned")
        assert await next_change(feed) == QueueChange(entry.entry_id, "c1", "general", "abandoned")


async def test_closing_the_store_ends_its_feeds(store_url):
    store = make_store(store_url)
    await store.open()
    feed = store.changes()
    await store.close()
    assert [c async for c in feed] == []
