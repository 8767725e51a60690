"""A transferred call waiting in the real SQLite store's queue, replayed on the virtual clock.

The store's clock is the call's virtual clock too, so waits and estimates are
exact; other callers and agents act at set virtual times through the transport.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable, Collection

import numpy as np
import pytest

from voicebot.calls.memory import MemoryRecorder
from voicebot.calls.queue import StoreQueue
from voicebot.calls.session import CallSession, SessionServices
from voicebot.clock import VirtualClock
from voicebot.storage.sqlite import SqliteCallStore
from voicebot.transports.replay import ReplayTransport
from tests.unit.test_session import RATE, ScriptedEngine, SilentPrompts, call_audio, policy, silence, speech, tone

__all__ = ["policy", "speech"]  # fixtures
EPOCH = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
KEY_1_HZ = (697, 1209)


class ScriptedReplay(ReplayTransport):
    """A replayed caller; ``at`` runs other parties' moves (agents, callers) once the call reaches their time."""

    def __init__(self, samples: np.ndarray, clock: VirtualClock, at: list[tuple[float, Callable[[], Awaitable]]],
                 caller_id: str = "replay", unreachable: Collection[str] = ()) -> None:
        """``unreachable``: agents' SIP URIs whose phones turn the call away."""
        super().__init__(samples, RATE, clock, caller_id=caller_id)
        self._at = sorted(at, key=lambda move: move[0])
        self._unreachable = set(unreachable)
        #: the agents' phones tried in vain
        self.refused: list[str] = []

    async def transfer(self, transfer, target_uri=None) -> bool:
        if target_uri in self._unreachable:
            self.refused.append(target_uri)
            return False
        return await super().transfer(transfer, target_uri)

    async def receive(self):
        async for item in super().receive():
            while self._at and self._at[0][0] <= self._clock.now_s():
                await self._at.pop(0)[1]()
            yield item


@pytest.fixture
def clock() -> VirtualClock:
    """The replayed call's clock, which the store keeps time by too."""
    return VirtualClock()


@pytest.fixture
async def store(tmp_path, clock):
    async with SqliteCallStore(tmp_path / "queue.sqlite3", now=lambda: EPOCH + timedelta(seconds=clock.now_s()),
                               poll_interval_s=0.05) as store:
        yield store


async def run_queued_call(store, clock, policy, audio: np.ndarray, script: list[str], *, caller_id: str = "replay",
                          at: list[tuple[float, Callable[[], Awaitable]]] = (), unreachable: Collection[str] = ()):
    loop = asyncio.get_running_loop()
    services = SessionServices(
        engine=ScriptedEngine(script), prompts=SilentPrompts(), policy=policy, recorder=MemoryRecorder(),
        run_blocking=lambda fn, *a: loop.run_in_executor(None, fn, *a),
        queue=StoreQueue(store),
    )
    transport = ScriptedReplay(audio, clock, list(at), caller_id=caller_id, unreachable=unreachable)
    report = await CallSession(services, transport, clock, name="queued", call_id="queued-1").run()
    return report, transport


def bot_says(report) -> list[str]:
    return [t.text for t in report.turns if t.speaker == "bot"]


async def our_entry(store):
    [entry] = await store.list_queue(states=["waiting", "connecting", "connected", "abandoned", "callback", "done"],
                                     queue="general")
    return entry


async def test_announcements_follow_the_line_as_the_caller_ahead_is_served(store, clock, policy, speech):
    await store.save_agent("alice", "sip:alice@agents.example.org", ["general"])
    await store.save_agent("bob", "sip:bob@agents.example.org", ["general"])
    await store.set_agent_state("alice", "available")
    await store.set_agent_state("bob", "available")
    ahead = await store.enqueue("earlier-call", "general", reason="caller_request")
    taken = []

    async def alice_takes_the_caller_ahead():
        taken.append(await store.take_next("alice", ["general"]))

    async def bob_takes_ours():
        taken.append(await store.take_next("bob", ["general"]))

    report, transport = await run_queued_call(
        store, clock, policy, call_audio(silence(3), speech, silence(130)), ["agent"],
        at=[(50.0, alice_takes_the_caller_ahead), (80.0, bob_takes_ours)])

    assert [e.call_id for e in taken] == [ahead.call_id, "queued-1"]
    hold = policy.scenario.hold
    says = bot_says(report)
    announcements = [t for t in says if "queue" in t or "waiting time" in t]
    # two agents share the line: 180 s default handling x position / 2
    assert announcements == [
        "You are number 2 in the queue.", "The estimated waiting time is about 3 minutes.",
        "You are number 2 in the queue.", "The estimated waiting time is about 3 minutes.",
        "You are next in the queue.", "The estimated waiting time is about 2 minutes.",
    ]
    assert says.index(hold.prompt("callback_offer")) == says.index("You are next in the queue.") + 2
    assert says[-1] == hold.prompt("agent_connecting")
    assert report.outcome == "transferred" and report.transfer.reason == "caller_request"
    assert transport.ended_by == "agent:sip:bob@agents.example.org"
    entry = await store.get_queue_entry(taken[1].entry_id)
    assert entry.state == "connected" and entry.agent == "bob"


async def test_hold_audio_plays_between_announcements(store, clock, policy, speech):
    report, transport = await run_queued_call(store, clock, policy, call_audio(silence(3), speech, silence(30)),
                                              ["agent"])
    bot = transport.stereo()[:, 1].astype(np.float64)
    last_prompt = max(t.end_s for t in report.turns if t.speaker == "bot")
    between = bot[int((last_prompt + 1) * RATE):int((last_prompt + 9) * RATE)]
    assert np.sqrt(np.mean(between ** 2)) > 100  # SilentPrompts are silent: this is the hold loop


async def test_a_callback_request_is_stored_with_the_confirmed_caller_id(store, clock, policy, speech):
    audio = call_audio(silence(3), speech, silence(70), tone(KEY_1_HZ), silence(12), speech, silence(12))
    report, transport = await run_queued_call(store, clock, policy, audio, ["agent", "yes"],
                                              caller_id="+358401234567")

    [callback] = await store.list_callbacks()
    assert (callback.number, callback.call_id, callback.queue, callback.state) == (
        "+358401234567", "queued-1", "general", "open")
    entry = await our_entry(store)
    assert entry.state == "callback"
    says = bot_says(report)
    hold = policy.scenario.hold
    assert hold.prompt("callback_confirm", number="plus, 3 5 8, 4 0 1, 2 3 4, 5 6 7") in says
    assert says[-1] == hold.prompt("callback_thanks")
    assert report.outcome == "transferred" and transport.ended_by == "bot"


async def test_a_caller_who_hangs_up_while_waiting_is_recorded_abandoned_with_the_wait(store, clock, policy, speech):
    report, _ = await run_queued_call(store, clock, policy, call_audio(silence(3), speech, silence(40)), ["agent"])

    entry = await our_entry(store)
    assert entry.state == "abandoned"
    joined_s = (entry.enqueued_at - EPOCH).total_seconds()
    hangup_s = report.duration_s
    assert entry.wait_s == pytest.approx(hangup_s - joined_s, abs=0.05)
    assert 30 < entry.wait_s < 40
    assert report.outcome == "abandoned" and report.transfer.reason == "caller_request"


async def test_a_caller_whose_agent_cannot_be_reached_waits_again_at_their_place_for_the_next_agent(
        store, clock, policy, speech):
    for name in ("alice", "bob"):
        await store.save_agent(name, f"sip:{name}@agents.example.org", ["general"])
        await store.set_agent_state(name, "available")
    taken = []

    async def alice_takes_ours():
        taken.append(await store.take_next("alice", ["general"]))

    async def a_later_caller_joins():
        await store.enqueue("later-call", "general", reason="caller_request")

    async def bob_takes_the_first_in_line():
        taken.append(await store.take_next("bob", ["general"]))

    report, transport = await run_queued_call(
        store, clock, policy, call_audio(silence(3), speech, silence(100)), ["agent"],
        at=[(20.0, alice_takes_ours), (40.0, a_later_caller_joins), (70.0, bob_takes_the_first_in_line)],
        unreachable=["sip:alice@agents.example.org"])

    assert transport.refused == ["sip:alice@agents.example.org"]
    assert transport.ended_by == "agent:sip:bob@agents.example.org"
    assert [e.call_id for e in taken] == ["queued-1", "queued-1"]  # bob got ours, ahead of the later caller
    entry = await store.get_queue_entry(taken[0].entry_id)
    assert (entry.state, entry.agent, entry.enqueued_at) == ("connected", "bob", taken[0].enqueued_at)
    assert (await store.get_agent("alice")).state == "away"
    hold = policy.scenario.hold
    says = bot_says(report)
    first, second = [i for i, text in enumerate(says) if text == hold.prompt("agent_connecting")]
    assert hold.prompt("agent_unreachable") in says[first:second]
    assert report.outcome == "transferred"
