"""The routes ``voicebot replay --server`` uses, through its own client, over real HTTP and a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest
from argon2 import PasswordHasher

from voicebot.calls.queue import AgentTook, QueueError, Waiting
from voicebot.calls.report import CallReport, Turn
from voicebot.events import IntakeForm, Transfer
from voicebot.metrics import CallMetrics
from voicebot.storage import SqliteCallStore
from voicebot.web.accounts import add_account, issue_token
from voicebot.web.api import make_app
from voicebot.web.auth import Auth, Passwords
from voicebot.web.queue_api import ServiceError, ServiceLink, report_from_json, report_to_json
from voicebot.web.server import run_http

PASSWORD = "correct horse battery"


@pytest.fixture
async def store(tmp_path: Path):
    async with SqliteCallStore(tmp_path / "voicebot.sqlite3") as s:
        yield s


@pytest.fixture
async def tokens(store) -> dict[str, str]:
    """API tokens of a supervisor and of an agent."""
    passwords = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    await add_account(store, passwords, "sam", "supervisor", PASSWORD)
    await add_account(store, passwords, "gail", "agent", PASSWORD, queues=["general"], sip_uri="sip:gail@pbx")
    return {"supervisor": (await issue_token(store, "sam"))[0], "agent": (await issue_token(store, "gail"))[0]}


@pytest.fixture
async def service(loop_guard, store):
    """The service's HTTP API on a free loopback port."""
    async with run_http(make_app(store, CallMetrics(), auth=Auth(store)), "127.0.0.1", 0) as endpoint:
        yield endpoint.url


def a_report(call_id: str = "replay-1") -> CallReport:
    report = CallReport(call="examples/calls/s05_person.wav", call_id=call_id, caller_id="replay", engine="scripted",
                        started_at="2026-11-28T10:00:00+00:00")
    report.turns = [Turn("bot", "Welcome.", 0.0, 2.0), Turn("caller", "agent", 3.0, 3.5, intent="agent",
                                                            confidence=0.9),
                    Turn("caller", "no thanks goodbye", 4.0, 5.0, intent="goodbye", confidence=0.8, counted=False)]
    report.transfer, report.outcome = Transfer("caller_request", "general"), "transferred"
    return report


def test_a_report_survives_the_wire_with_what_to_json_leaves_out():
    report = a_report()
    report.intake = IntakeForm("housing_allowance", "incomplete", {"postal_code": "00180"})
    back = report_from_json(report_to_json(report))
    assert back.to_json() == report.to_json()
    assert [t.counted for t in back.turns] == [True, True, False]


async def test_a_replay_needs_a_supervisors_token(service, tokens):
    async with ServiceLink.open(service, tokens["supervisor"]):
        pass
    for token, refusal in ((tokens["agent"], "403"), ("vbt_not-a-token", "401")):
        with pytest.raises(ServiceError, match=refusal):
            async with ServiceLink.open(service, token):
                pass
    with pytest.raises(ServiceError, match="token"):
        async with ServiceLink.open(service, ""):
            pass


async def test_a_replayed_call_is_recorded_in_the_services_store_as_it_goes(service, tokens, store):
    report = a_report()
    async with ServiceLink.open(service, tokens["supervisor"]) as link:
        await link.recorder.call_started(report)
        intake = IntakeForm("housing_allowance", "submitted", {"household_size": 3})
        reference = await link.recorder.submit_intake(report, intake)
        stored = await store.get_call("replay-1")
        assert stored.status == "active" and [t.text for t in stored.report.turns][:2] == ["Welcome.", "agent"]
        report.duration_s, report.ended_at = 9.0, "2026-11-28T10:00:09+00:00"
        await link.recorder.call_ended(report)
    stored = await store.get_call("replay-1")
    assert stored.status == "ended" and stored.report.outcome == "transferred"
    assert stored.report.intents == ["agent"]
    assert reference and (await store.list_applications("submitted"))[0].intake.reference == reference


async def test_a_replayed_call_waits_in_the_services_queue_until_an_agent_takes_it(service, tokens, store):
    await store.save_agent("alice", "sip:alice@agents.example.org", ["general"])
    await store.set_agent_state("alice", "available")
    earlier = await store.enqueue("earlier", "general", reason="caller_request")
    report = a_report()
    async with ServiceLink.open(service, tokens["supervisor"]) as link:
        await link.recorder.call_started(report)
        entry_id = await link.queue.join(report, "general", priority=0, reason="caller_request")
        assert await link.queue.status(entry_id) == Waiting(2, 360.0)
        await store.take_next("bob", ["general"])
        assert await link.queue.status(entry_id) == Waiting(1, 180.0)
        await store.take_next("alice", ["general"])
        assert await link.queue.status(entry_id) == AgentTook("alice", "sip:alice@agents.example.org")
        await link.queue.connected(entry_id)
    entry = await store.get_queue_entry(entry_id)
    assert (entry.call_id, entry.state, entry.agent, entry.reason) == ("replay-1", "connected", "alice",
                                                                      "caller_request")
    assert (await store.get_queue_entry(earlier.entry_id)).state == "connecting"


async def test_a_callback_from_a_replayed_call_is_stored_and_a_bad_number_refused(service, tokens, store):
    report = a_report()
    async with ServiceLink.open(service, tokens["supervisor"]) as link:
        await link.recorder.call_started(report)
        entry_id = await link.queue.join(report, "general", priority=2, reason="not_understood")
        with pytest.raises(QueueError, match="400"):
            await link.queue.callback(entry_id, "12ab")
        await link.queue.callback(entry_id, "+358401234567")
    [callback] = await store.list_callbacks()
    assert (callback.call_id, callback.number, callback.queue) == ("replay-1", "+358401234567", "general")
    assert (await store.get_queue_entry(entry_id)).state == "callback"


async def test_a_replay_touches_only_the_queue_entries_of_its_own_calls(service, tokens, store):
    other = await store.enqueue("live-call", "general", reason="complex_case")
    async with ServiceLink.open(service, tokens["supervisor"]) as link:
        for path in (f"/api/replays/replay-1/queue/{other.entry_id}",
                     f"/api/replays/replay-1/queue/{other.entry_id}/abandoned"):
            with pytest.raises(ServiceError, match="404"):
                await link.request("POST" if path.endswith("abandoned") else "GET", path)
    assert (await store.get_queue_entry(other.entry_id)).state == "waiting"


async def test_a_hang_up_while_waiting_abandons_the_entry(service, tokens, store):
    report = a_report()
    async with ServiceLink.open(service, tokens["supervisor"]) as link:
        await link.recorder.call_started(report)
        entry_id = await link.queue.join(report, "general", priority=0, reason="caller_request")
        await link.queue.leave(entry_id)
    entry = await store.get_queue_entry(entry_id)
    assert entry.state == "abandoned" and entry.wait_s is not None


async def test_an_agent_not_reached_puts_the_replayed_caller_back_in_line_and_is_set_away(service, tokens, store):
    await store.save_agent("alice", "sip:alice@agents.example.org", ["general"])
    await store.set_agent_state("alice", "busy")
    report = a_report()
    async with ServiceLink.open(service, tokens["supervisor"]) as link:
        await link.recorder.call_started(report)
        entry_id = await link.queue.join(report, "general", priority=0, reason="caller_request")
        await store.take_next("alice", ["general"])
        await link.queue.back_in_line(entry_id)
        assert await link.queue.status(entry_id) == Waiting(1, None)  # the only agent is away now
    entry = await store.get_queue_entry(entry_id)
    assert (entry.state, entry.agent) == ("waiting", None)
    assert (await store.get_agent("alice")).state == "away"
