"""Waiting for a person, as pure data: queue events in, announcements, hold audio and callbacks out."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from voicebot.config import PROJECT_ROOT
from voicebot.dialogue.policy import DialogueState, Policy
from voicebot.dialogue.scenario import load_scenario
from voicebot.events import (
    AgentReady, AgentUnreachable, Alternative, CallerHungUp, CallStarted, ConnectAgent, DtmfKey, DtmfTimeout, EndCall,
    EnterQueue, LeaveQueue, Listen, NoInput, PlayHold, QueueTimer, QueueUpdate, RecognizedIntent, RequestCallback,
    ReturnToQueue, Say, ServiceClosing, Transfer, Utterance,
)
from tests.unit.test_policy import of, run

SCENARIO = PROJECT_ROOT / "scenarios" / "benefits.toml"
#: when the caller joins the queue in these tests (session seconds)
JOINED_S = 20.0


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy(load_scenario(SCENARIO), today=date(2026, 11, 28))


def texts(actions) -> list[str]:
    return [a.text for a in actions if isinstance(a, Say)]


def utt(*texts: str, at_s: float = 30.0) -> Utterance:
    return Utterance(tuple(Alternative(t, 0.9) for t in texts), at_s - 1.0, at_s)


def update(position: int, waited_s: float, estimated_wait_s: float | None = 240.0) -> QueueUpdate:
    return QueueUpdate(position, estimated_wait_s, waited_s, JOINED_S + waited_s)


def holding(policy: Policy, caller_id: str = "", position: int = 3) -> DialogueState:
    """A caller who asked for a person and heard the first announcement."""
    state, _ = run(policy, policy.initial_state(), CallStarted(0.0, caller_id), utt("agent", at_s=JOINED_S),
                   update(position, 0.0))
    assert state.node == "holding"
    return state


def offered(policy: Policy, caller_id: str = "") -> DialogueState:
    state, actions = run(policy, holding(policy, caller_id), update(3, 30.0), update(2, 60.0))
    assert policy.scenario.hold.prompt("callback_offer") in texts(actions)
    return state


# ---------------------------------------------------------------------- joining and announcements


def test_a_transfer_asks_to_enter_the_reasons_queue_with_the_reasons_priority(policy):
    _, actions = run(policy, policy.initial_state(), CallStarted(0.0), utt("agent"))
    assert of(actions, Transfer) == [Transfer("caller_request", "general")]
    assert of(actions, EnterQueue) == [EnterQueue("general", "caller_request", 0)]
    assert actions.index(of(actions, Transfer)[0]) < actions.index(of(actions, EnterQueue)[0])

    state, _ = run(policy, policy.initial_state(), CallStarted(0.0))
    _, actions = run(policy, state, utt("bananas are yellow and very tasty"), utt("my cat likes fish in the morning"))
    assert of(actions, EnterQueue) == [EnterQueue("general", "not_understood", 2)]


def test_a_scenario_without_a_queue_hands_the_call_over_at_the_transfer(policy):
    plain = Policy(replace(policy.scenario, hold=None), matcher=policy.matcher)
    state, actions = run(plain, plain.initial_state(), CallStarted(0.0), utt("agent"))
    assert of(actions, Transfer) == [Transfer("caller_request", "general")] and of(actions, EnterQueue) == []
    state, actions = run(plain, state, update(3, 0.0))
    assert actions == [] and state.node == "transferred"


def test_the_first_update_says_position_then_estimated_wait_then_plays_hold_audio(policy):
    state, actions = run(policy, policy.initial_state(), CallStarted(0.0), utt("agent", at_s=JOINED_S))
    state, actions = run(policy, state, update(3, 0.0, estimated_wait_s=250.0))
    assert texts(actions) == ["You are number 3 in the queue.", "The estimated waiting time is about 4 minutes."]
    assert isinstance(actions[-2], PlayHold) and actions[-1] == QueueTimer(30.0)
    assert of(actions, Listen) == [Listen("callback", no_input_s=30.0)]
    assert state.in_queue and state.joined_at_s == JOINED_S


def test_announcements_repeat_each_interval_in_order_with_the_new_positions(policy):
    state = holding(policy, position=3)
    heard = []
    for position, waited_s, wait_s in ((3, 30.0, 180.0), (2, 60.0, 100.0), (1, 90.0, 30.0)):
        state, actions = run(policy, state, update(position, waited_s, wait_s))
        heard += texts(actions)
        assert isinstance(actions[-2], PlayHold) and actions[-1] == QueueTimer(30.0)
    hold = policy.scenario.hold
    assert heard == [
        "You are number 3 in the queue.", "The estimated waiting time is about 3 minutes.",
        "You are number 2 in the queue.", "The estimated waiting time is about 2 minutes.",
        hold.prompt("callback_offer"),
        "You are next in the queue.", "The estimated waiting time is less than a minute.",
        hold.prompt("callback_reminder"),
    ]


def test_without_agents_the_wait_is_not_estimated(policy):
    _, actions = run(policy, holding(policy), update(4, 30.0, estimated_wait_s=None))
    assert texts(actions) == ["You are number 4 in the queue.", policy.scenario.hold.prompt("wait_unknown")]


def test_the_callback_offer_comes_at_its_own_time_between_announcements(policy):
    early = replace(policy.scenario, hold=replace(policy.scenario.hold, callback_after_s=45.0))
    p = Policy(early, matcher=policy.matcher)
    state = holding(p)
    state, actions = run(p, state, update(3, 30.0))
    assert actions[-1] == QueueTimer(15.0)
    state, actions = run(p, state, update(3, 45.0))
    assert texts(actions) == [early.hold.prompt("callback_offer")]
    assert actions[-1] == QueueTimer(15.0)  # the next announcement stays on its 30 s beat
    _, actions = run(p, state, update(2, 60.0))
    assert texts(actions)[0] == "You are number 2 in the queue."


def test_caller_noise_on_hold_resumes_the_hold_audio_without_a_word(policy):
    state, actions = run(policy, holding(policy), utt("hello is anybody there", at_s=JOINED_S + 12))
    assert texts(actions) == []
    assert isinstance(actions[-2], PlayHold) and actions[-1] == QueueTimer(18.0)
    assert state.node == "holding"


def test_a_key_other_than_the_callback_key_resumes_the_hold_audio(policy):
    state, actions = run(policy, holding(policy), DtmfKey("0", JOINED_S + 5))
    assert of(actions, Transfer) == [] and of(actions, PlayHold) == [PlayHold()]
    assert state.node == "holding"


# ---------------------------------------------------------------------- callbacks


def test_key_1_asks_for_a_callback_and_reads_the_caller_id_back_digit_by_digit(policy):
    state, actions = run(policy, offered(policy, caller_id="+358401234567"), DtmfKey("1", 90.0))
    assert texts(actions) == [policy.scenario.hold.prompt(
        "callback_confirm", number="plus, 3 5 8, 4 0 1, 2 3 4, 5 6 7")]
    assert of(actions, Listen) == [Listen("yes_no", complete="yes_no", no_input_s=6.0)]
    assert state.node == "callback_confirm"


def test_saying_call_me_back_works_too_even_below_the_top_of_the_n_best(policy):
    state, actions = run(policy, offered(policy, caller_id="0401234567"),
                         utt("all me buck", "call me back please"))
    assert of(actions, RecognizedIntent) == [RecognizedIntent("callback", 0.9, counted=False)]
    assert state.node == "callback_confirm" and state.callback_number == "0401234567"


def test_yes_to_the_offer_asks_for_a_callback_but_not_before_the_offer(policy):
    state, _ = run(policy, holding(policy, caller_id="0401234567"), utt("yes"))
    assert state.node == "holding"
    state, _ = run(policy, offered(policy, caller_id="0401234567"), utt("yes please"))
    assert state.node == "callback_confirm"


def test_confirmed_caller_id_stores_the_callback_thanks_and_ends_the_call(policy):
    state, _ = run(policy, offered(policy, caller_id="040 123 4567"), DtmfKey("1", 90.0))
    state, actions = run(policy, state, utt("yes that's right"))
    assert of(actions, RequestCallback) == [RequestCallback("0401234567")]
    assert texts(actions) == [policy.scenario.hold.prompt("callback_thanks")]
    assert not of(actions, Say)[0].interruptible
    assert actions[-1] == EndCall("transferred")
    assert of(actions, LeaveQueue) == [] and not state.in_queue and state.node == "closing"
    _, actions = run(policy, state, CallerHungUp(100.0))
    assert of(actions, LeaveQueue) == []


def test_no_to_the_caller_id_asks_for_the_number_and_a_keyed_number_ends_with_hash(policy):
    state, _ = run(policy, offered(policy, caller_id="0401234567"), DtmfKey("1", 90.0))
    state, actions = run(policy, state, DtmfKey("2", 92.0))
    assert texts(actions) == [policy.scenario.hold.prompt("callback_ask_number")]
    assert of(actions, Listen)[0].grammar == "phone_number" and of(actions, Listen)[0].interdigit_s == 4.0
    keys = [DtmfKey(d, 95.0 + i * 0.5) for i, d in enumerate("0509876543#")]
    state, actions = run(policy, state, *keys)
    assert texts(actions) == [policy.scenario.hold.prompt("callback_confirm", number="0 5 0, 9 8 7, 6 5 4 3")]
    state, actions = run(policy, state, DtmfKey("1", 110.0))
    assert of(actions, RequestCallback) == [RequestCallback("0509876543")]


def test_without_a_caller_id_the_bot_asks_for_the_number_at_once(policy):
    state, actions = run(policy, offered(policy, caller_id="anonymous"), utt("call me back"))
    assert texts(actions) == [policy.scenario.hold.prompt("callback_ask_number")]
    state, actions = run(policy, state, utt("oh four oh one two three four five six seven"))
    assert state.callback_number == "0401234567" and state.node == "callback_confirm"


def test_star_starts_a_keyed_number_over_and_a_pause_ends_it(policy):
    state, _ = run(policy, offered(policy), DtmfKey("1", 90.0))
    state, _ = run(policy, state, *[DtmfKey(d, 91.0) for d in "999*0401234567"])
    state, _ = run(policy, state, DtmfTimeout(99.0))
    assert state.callback_number == "0401234567"


def test_an_invalid_number_is_asked_again_after_looking_down_the_n_best(policy):
    hold = policy.scenario.hold
    state, _ = run(policy, offered(policy), utt("call me back"))
    state, actions = run(policy, state, utt("one two three"))
    assert texts(actions) == [hold.prompt("callback_invalid_number"), hold.prompt("callback_ask_number")]
    assert state.node == "callback_number"
    state, actions = run(policy, state, utt("one two three", "oh four oh one two three four five six seven"))
    assert state.node == "callback_confirm" and state.callback_number == "0401234567"
    _, actions = run(policy, state, DtmfKey("2", 100.0), *[DtmfKey(d, 101.0) for d in "12#"])
    assert texts(actions)[-2:] == [hold.prompt("callback_invalid_number"), hold.prompt("callback_ask_number")]


def test_a_caller_who_cannot_give_a_number_goes_back_on_hold_keeping_their_place(policy):
    state, _ = run(policy, offered(policy), utt("call me back"))
    state, actions = run(policy, state, utt("one two"), utt("three four"), utt("purple monkey dishwasher"))
    assert texts(actions)[-1] == policy.scenario.hold.prompt("callback_gave_up")
    assert state.node == "holding" and state.in_queue
    assert of(actions, PlayHold) and isinstance(actions[-1], QueueTimer)
    assert of(actions, RequestCallback) == [] and of(actions, LeaveQueue) == []


def test_announcements_wait_while_the_caller_gives_a_number(policy):
    state, _ = run(policy, offered(policy), utt("call me back"))
    state, actions = run(policy, state, update(1, 90.0))
    assert actions == [] and state.node == "callback_number"


def test_silence_at_the_number_question_asks_again_then_returns_to_hold(policy):
    state, _ = run(policy, offered(policy), utt("call me back"))
    state, actions = run(policy, state, NoInput(95.0))
    assert texts(actions)[-1] == policy.scenario.hold.prompt("callback_ask_number")
    state, actions = run(policy, state, NoInput(105.0), NoInput(115.0))
    assert state.node == "holding" and of(actions, EndCall) == []


# ---------------------------------------------------------------------- leaving the queue


def test_an_agent_taking_the_call_connects_the_caller_to_that_agents_uri(policy):
    state, actions = run(policy, holding(policy), AgentReady("alice", "sip:alice@pbx.example.org", 55.0))
    assert texts(actions) == [policy.scenario.hold.prompt("agent_connecting")]
    assert not of(actions, Say)[0].interruptible
    assert actions[-1] == ConnectAgent("alice", "sip:alice@pbx.example.org")
    assert state.node == "connecting"
    _, later = run(policy, state, update(1, 60.0), utt("call me back"), DtmfKey("1", 61.0))
    assert later == []


def test_an_agent_who_cannot_be_reached_puts_the_caller_back_in_line_with_a_word_and_hold_audio(policy):
    state, _ = run(policy, holding(policy), AgentReady("alice", "sip:alice@pbx.example.org", 55.0))
    state, actions = run(policy, state, AgentUnreachable("alice", "sip:alice@pbx.example.org", 80.0))
    assert actions[0] == ReturnToQueue("alice")
    assert texts(actions) == [policy.scenario.hold.prompt("agent_unreachable")]
    assert not of(actions, Say)[0].interruptible
    assert of(actions, PlayHold) == [PlayHold()] and len(of(actions, QueueTimer)) == 1
    assert of(actions, ConnectAgent) == [] and of(actions, EndCall) == [] and of(actions, LeaveQueue) == []
    assert state.node == "holding" and state.in_queue

    # waiting as before: announcements, then another agent takes the call
    state, actions = run(policy, state, update(1, 65.0))
    assert texts(actions)[0] == policy.scenario.hold.prompt("position_next")
    state, actions = run(policy, state, AgentReady("bob", "sip:bob@pbx.example.org", 90.0))
    assert actions[-1] == ConnectAgent("bob", "sip:bob@pbx.example.org") and state.node == "connecting"


def test_the_caller_back_in_line_who_hangs_up_is_abandoned_with_the_whole_wait(policy):
    state, _ = run(policy, holding(policy), AgentReady("alice", "sip:alice@pbx.example.org", 55.0),
                   AgentUnreachable("alice", "sip:alice@pbx.example.org", 80.0))
    state, actions = run(policy, state, CallerHungUp(JOINED_S + 70.0))
    assert of(actions, LeaveQueue) == [LeaveQueue(70.0)] and state.node == "ended"


def test_an_unreachable_agent_is_ignored_unless_the_caller_was_being_connected(policy):
    for state in (holding(policy), run(policy, offered(policy), utt("call me back"))[0]):
        assert run(policy, state, AgentUnreachable("alice", "sip:alice@pbx.example.org", 80.0)) == (state, [])


def test_an_agent_may_take_the_call_while_the_caller_gives_a_number(policy):
    state, _ = run(policy, offered(policy), utt("call me back"))
    _, actions = run(policy, state, AgentReady("bob", "sip:bob@10.0.0.5", 95.0))
    assert actions[-1] == ConnectAgent("bob", "sip:bob@10.0.0.5")


def test_hanging_up_while_waiting_leaves_the_queue_abandoned_with_the_wait(policy):
    state, actions = run(policy, holding(policy), update(2, 30.0), CallerHungUp(JOINED_S + 47.5))
    assert of(actions, LeaveQueue) == [LeaveQueue(47.5)]
    assert state.node == "ended" and not state.in_queue


def test_hanging_up_while_giving_the_number_also_abandons(policy):
    state, _ = run(policy, offered(policy), utt("call me back", at_s=JOINED_S + 70))
    _, actions = run(policy, state, CallerHungUp(JOINED_S + 75.0))
    assert of(actions, LeaveQueue) == [LeaveQueue(75.0)]


def test_goodbye_on_hold_leaves_the_queue_and_ends_the_call(policy):
    state, actions = run(policy, holding(policy), utt("no thanks goodbye", at_s=JOINED_S + 10))
    assert of(actions, LeaveQueue) == [LeaveQueue(10.0)]
    assert actions[-1] == EndCall("abandoned") and state.node == "closing"


def test_service_closing_on_hold_leaves_the_queue_politely(policy):
    _, actions = run(policy, holding(policy), ServiceClosing(JOINED_S + 5))
    assert of(actions, LeaveQueue) == [LeaveQueue(5.0)]
    assert texts(actions) == [policy.scenario.prompt("service_closing")]
