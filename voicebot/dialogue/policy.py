"""The dialogue as a pure state machine: ``step(state, event) -> (state, actions)``.

No I/O and no clock: everything the policy knows arrives as an event, and
everything it wants done leaves as an action, so it is tested as data.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from typing import Callable, Literal, Sequence, TypeVar

from voicebot.dialogue import fields as formfields
from voicebot.dialogue.nlu import IntentMatch, IntentMatcher
from voicebot.dialogue.scenario import Form, FormField, Intent, QueueScript, Scenario
from voicebot.dialogue.spoken import parse_callback_request, parse_phone_number, speak_phone_number
from voicebot.dialogue.validators import (
    Invalid, Parsed, digits_from_dtmf, phone_number_of_caller_id, validate_phone_number,
)
from voicebot.events import (
    Action, AgentReady, AgentUnreachable, CallerEvent, CallerHungUp, CallStarted, ConnectAgent, DtmfKey, DtmfTimeout,
    EndCall, EnterQueue, IntakeForm, IntakeSubmitted, LeaveQueue, Listen, NoInput, PlayHold, PromptPlayed, QueueTimer,
    QueueUpdate, RecognizedIntent, RequestCallback, ReturnToQueue, SaveIntake, Say, ServiceClosing, SpeechStarted,
    SubmitIntake, Transfer, TransferReason, Utterance,
)

Node = Literal[
    "start", "menu", "field", "confirm", "which_field", "submitting", "closing", "transferred",
    # waiting for a person: on hold, confirming the number to call back, asking for it, being connected
    "holding", "callback_confirm", "callback_number", "connecting",
    "ended",
]
#: the caller is in a queue and talks to the bot about waiting
_QUEUE_NODES = ("holding", "callback_confirm", "callback_number")

#: an intent found below the top of the n-best list must be at least this clear
_NBEST_INTENT_CONFIDENCE = 0.8

#: intents that may interrupt a form question
_FORM_COMMANDS = ("agent", "repeat", "goodbye", "complex_case")
#: the completeness test of open speech in the menu (see Policy.is_complete)
QUESTION_COMPLETE = "question"
#: a queue timer that comes due this much early still counts (clocks tick in 20 ms frames)
_TIMER_SLACK_S = 0.05
#: the shortest queue timer the policy asks for
_MIN_QUEUE_TIMER_S = 1.0


@dataclass(frozen=True, slots=True)
class DialogueState:
    node: Node = "start"
    #: the menu question was "anything else?" (a bare "no" then means goodbye)
    after_answer: bool = False
    no_match: int = 0
    no_input: int = 0
    #: failed answers in a row to the current form question
    attempts: int = 0
    form: str | None = None
    field: str | None = None
    filled: tuple[tuple[str, object], ...] = ()
    #: re-asking one field after a "no" at the read-back
    correcting: bool = False
    dtmf: str = ""
    reference: str | None = None
    #: what the bot said last and what it listens for, for "repeat" and reprompts
    last_says: tuple[Say, ...] = ()
    last_listen: Listen | None = None
    #: the caller's number as the network gave it (may be a name, or empty)
    caller_id: str = ""
    #: in a queue (from the first QueueUpdate until the caller leaves it or reaches an agent)
    in_queue: bool = False
    #: session time the caller joined the queue, and of the last position announcement
    joined_at_s: float | None = None
    announced_at_s: float | None = None
    callback_offered: bool = False
    #: the number being confirmed for a callback
    callback_number: str | None = None

    @property
    def fields(self) -> dict[str, object]:
        return dict(self.filled)


@dataclass(slots=True)
class _Turn:
    """Accumulates one step's actions; ``now_s`` is the event's session time."""

    state: DialogueState
    now_s: float = 0.0
    actions: list[Action] = field(default_factory=list)


def _event_time(event: CallerEvent) -> float:
    return event.end_s if isinstance(event, Utterance) else event.at_s


T = TypeVar("T")


def _look_down(turn: _Turn, utt: Utterance, parse: Callable[[str], Parsed[T] | Invalid | None],
               likely: Callable[[T], bool] | None = None) -> Parsed[T] | Invalid | None:
    """The first n-best alternative that parses (noted as the turn's reading), else the first problem found.

    Lower alternatives often hold the right digits or the clear "yes" the top one garbled. With
    ``likely``, a lower reading the domain finds far more probable wins over an unlikely first one
    (an identity code with a dash over one with a rarely issued century letter heard in its place).
    """
    first_problem: Invalid | None = None
    first: tuple[float, Parsed[T]] | None = None
    for alt in utt.alternatives:
        result = parse(alt.text)
        if isinstance(result, Parsed):
            if likely is None or likely(result.value):
                first = (alt.confidence, result)
                break
            first = first or (alt.confidence, result)
        elif isinstance(result, Invalid) and first_problem is None:
            first_problem = result
    if first is not None:
        turn.actions.append(RecognizedIntent(None, first[0]))
        return first[1]
    return first_problem


def _parsed(value: T | None) -> Parsed[T] | None:
    return None if value is None else Parsed(value)


def _yes_no(text: str) -> Parsed[bool] | None:
    return _parsed(formfields.parse_yes_no(text))


class Policy:
    def __init__(self, scenario: Scenario, matcher: IntentMatcher | None = None, today: date | None = None) -> None:
        self.scenario = scenario
        self.matcher = matcher or IntentMatcher(
            scenario.intents, scenario.intent_threshold, scenario.concepts, scenario.off_topic)
        commands = [i for i in scenario.intents if i.id in _FORM_COMMANDS]
        others = [e for i in scenario.intents if i.id not in _FORM_COMMANDS for e in i.examples]
        self._command_matcher = IntentMatcher(
            commands, scenario.intent_threshold, scenario.concepts, [*scenario.off_topic, *others])
        self._today = today or date.today()

    def is_complete(self, kind: str, text: str) -> bool:
        """The listener's completeness test (``Listen.complete``): a form answer that parses, or a
        question in the menu that is sure enough to answer at a pause. Only questions whose answer
        is speech alone count, since a caller who goes on takes the answer back (the session
        undoes the turn: see ``Utterance.continues``); a transfer or a goodbye waits for the
        whole end-of-turn silence."""
        if kind != QUESTION_COMPLETE:
            return formfields.is_complete(kind, text)
        threshold = self.scenario.complete_confidence
        m = self.matcher.match(text)
        return (threshold is not None and m.intent is not None and m.confidence >= threshold
                and self.scenario.intent(m.intent).kind in ("answer", "repeat"))

    def initial_state(self) -> DialogueState:
        return DialogueState()

    # ------------------------------------------------------------------ entry point

    def step(self, state: DialogueState, event: CallerEvent) -> tuple[DialogueState, list[Action]]:
        turn = _Turn(state, _event_time(event))
        if state.node == "ended":
            return state, []
        if state.node in ("transferred", "connecting") and not (self.scenario.hold is not None and isinstance(
                event, (QueueUpdate, AgentReady, AgentUnreachable, CallerHungUp))):
            return state, []
        match event:
            case CallStarted():
                turn.state = replace(turn.state, caller_id=event.caller_id)
                self._say_and_listen(turn, [Say(self.scenario.prompt("welcome"))], self._menu_listen(), node="menu")
            case Utterance():
                self._on_utterance(turn, event)
            case DtmfKey():
                self._on_dtmf(turn, event.digit)
            case DtmfTimeout():
                self._on_dtmf_timeout(turn)
            case NoInput():
                self._on_no_input(turn)
            case IntakeSubmitted():
                self._on_submitted(turn, event.reference)
            case CallerHungUp():
                self._on_hangup(turn)
            case ServiceClosing():
                if state.in_queue:
                    self._leave_queue(turn, self.scenario.prompt("service_closing"))
                elif state.node != "closing":
                    self._close(turn, self.scenario.prompt("service_closing"), interruptible=False)
            case QueueUpdate():
                self._on_queue_update(turn, event)
            case AgentReady():
                self._on_agent_ready(turn, event)
            case AgentUnreachable():
                self._on_agent_unreachable(turn, event)
            case SpeechStarted() | PromptPlayed():
                pass
        return turn.state, turn.actions

    # ------------------------------------------------------------------ events

    def _on_utterance(self, turn: _Turn, utt: Utterance) -> None:
        s = turn.state
        if s.node == "holding":
            self._holding_answer(turn, utt)
        elif s.node == "callback_confirm":
            self._callback_confirm_answer(turn, utt)
        elif s.node == "callback_number":
            self._callback_number_answer(turn, utt)
        elif s.node == "menu":
            self._menu_answer(turn, utt)
        elif s.node == "field":
            self._field_answer(turn, utt)
        elif s.node == "confirm":
            self._confirm_answer(turn, utt)
        elif s.node == "which_field":
            self._which_field_answer(turn, utt)
        else:
            turn.actions.append(RecognizedIntent(None, utt.confidence))

    def _menu_answer(self, turn: _Turn, utt: Utterance) -> None:
        m = self._best_intent(self.matcher, utt)
        if m.intent is None and turn.state.after_answer:
            yes_no = formfields.parse_yes_no(utt.text)
            if yes_no is False:
                m = IntentMatch("goodbye", max(m.confidence, utt.confidence))
            elif yes_no is True:
                turn.actions.append(RecognizedIntent(None, utt.confidence))
                turn.state = replace(turn.state, no_match=0, no_input=0)
                self._say_and_listen(turn, [Say(self.scenario.prompt("what_else"))], self._menu_listen())
                turn.state = replace(turn.state, after_answer=False)
                return
        if m.intent is None:
            turn.actions.append(RecognizedIntent(None, m.confidence))
            self._no_match(turn)
            return
        intent = self.scenario.intent(m.intent)
        turn.actions.append(RecognizedIntent(intent.id, m.confidence, counted=intent.kind != "goodbye"))
        turn.state = replace(turn.state, no_match=0, no_input=0)
        self._run_intent(turn, intent)

    def _run_intent(self, turn: _Turn, intent: Intent) -> None:
        if intent.kind == "answer":
            self._say_and_listen(
                turn, [Say(intent.answer), Say(self.scenario.prompt("anything_else"))], self._menu_listen(),
                node="menu",
            )
            turn.state = replace(turn.state, after_answer=True)
        elif intent.kind == "form":
            self._start_form(turn, self.scenario.forms[intent.form])
        elif intent.kind == "transfer":
            self._transfer(turn, intent.reason, intent.queue)  # type: ignore[arg-type]
        elif intent.kind == "goodbye":
            self._close(turn, self.scenario.prompt("goodbye"))
        elif intent.kind == "repeat":
            self._repeat(turn)

    def _on_dtmf(self, turn: _Turn, digit: str) -> None:
        s = turn.state
        if s.node in _QUEUE_NODES:
            self._queue_dtmf(turn, digit)
            return
        if s.node == "field":
            # Keys in a form question are one entry, ended by '#' or a pause: a caller
            # typing "15110" must not reach a person at the '0'.
            if digit == "#":
                self._dtmf_entry_done(turn)
            elif digit == "*":
                turn.state = replace(s, dtmf="")
            else:
                turn.state = replace(s, dtmf=s.dtmf + digit)
            return
        if digit == self.scenario.agent_key:
            turn.actions.append(RecognizedIntent("agent", 1.0))
            self._transfer(turn, "caller_request", self.scenario.intent("agent").queue)
        elif s.node == "confirm" and digit in "12":
            self._confirmed(turn, digit == "1")

    def _on_dtmf_timeout(self, turn: _Turn) -> None:
        if turn.state.node == "field" and turn.state.dtmf:
            self._dtmf_entry_done(turn)
        elif turn.state.node == "callback_number" and turn.state.dtmf:
            self._keyed_number_done(turn)

    def _dtmf_entry_done(self, turn: _Turn) -> None:
        s = turn.state
        fld = self._current_field(s)
        assert fld is not None
        keys, turn.state = s.dtmf, replace(s, dtmf="")
        if keys == self.scenario.agent_key:
            turn.actions.append(RecognizedIntent("agent", 1.0))
            self._transfer(turn, "caller_request", self.scenario.intent("agent").queue)
            return
        turn.actions.append(RecognizedIntent(None, 1.0))
        result = formfields.parse_dtmf(fld.kind, keys) if fld.dtmf else None
        self._field_result(turn, fld, result)

    def _on_no_input(self, turn: _Turn) -> None:
        s = turn.state
        if s.node not in ("menu", "field", "confirm", "which_field", "callback_confirm", "callback_number"):
            return
        count = s.no_input + 1
        turn.state = replace(s, no_input=count)
        if count >= self.scenario.max_no_input:
            if s.in_queue:
                self._callback_gave_up(turn)
            else:
                self._close(turn, self.scenario.prompt("no_input_goodbye"))
            return
        # Say the question again, without the answer that preceded it.
        question = [say for say in s.last_says if say.interruptible][-1:] or list(s.last_says[-1:])
        says = [Say(self.scenario.prompt("no_input"))] + question
        self._say_and_listen(turn, says, s.last_listen or self._menu_listen(), remember=False)

    def _on_submitted(self, turn: _Turn, reference: str) -> None:
        form = self._form(turn.state)
        spoken = formfields.speak_reference(reference)
        turn.state = replace(turn.state, reference=reference, form=None, field=None, filled=(), attempts=0)
        says = [Say(form.submitted.format(reference=spoken), interruptible=False),
                Say(self.scenario.prompt("anything_else"))]
        self._say_and_listen(turn, says, self._menu_listen(), node="menu")
        turn.state = replace(turn.state, after_answer=True)

    def _on_hangup(self, turn: _Turn) -> None:
        if turn.state.node not in ("transferred", "connecting"):
            self._save_incomplete(turn)
        if turn.state.in_queue:
            turn.actions.append(LeaveQueue(self._waited_s(turn)))
        turn.state = replace(turn.state, node="ended", in_queue=False)

    # ------------------------------------------------------------------ the form

    def _start_form(self, turn: _Turn, form: Form) -> None:
        first = form.fields[0]
        turn.state = replace(turn.state, form=form.name, filled=(), attempts=0, correcting=False)
        self._ask_field(turn, first, intro=form.intro)

    def _ask_field(self, turn: _Turn, fld: FormField, intro: str = "") -> None:
        says = ([Say(intro)] if intro else []) + [Say(fld.prompt)]
        listen = Listen(fld.grammar, complete=fld.complete, no_input_s=self.scenario.no_input_s,
                        interdigit_s=self.scenario.interdigit_timeout_s)
        turn.state = replace(turn.state, field=fld.name, dtmf="")
        self._say_and_listen(turn, says, listen, node="field")

    def _field_answer(self, turn: _Turn, utt: Utterance) -> None:
        fld = self._current_field(turn.state)
        assert fld is not None
        result = _look_down(turn, utt, lambda text: formfields.parse_field(fld.kind, text, self._today),
                            likely=lambda value: formfields.is_likely(fld.kind, value))
        if isinstance(result, Parsed):
            self._field_result(turn, fld, result)
            return
        if result is None and self._form_command(turn, utt):
            return
        turn.actions.append(RecognizedIntent(None, utt.confidence))
        self._field_result(turn, fld, result)

    def _field_result(self, turn: _Turn, fld: FormField, result: formfields.Parsed | formfields.Invalid | None) -> None:
        s = turn.state
        form = self._form(s)
        if isinstance(result, formfields.Parsed):
            filled = dict(s.filled)
            filled[fld.name] = result.value
            ordered = tuple((f.name, filled[f.name]) for f in form.fields if f.name in filled)
            turn.state = replace(s, filled=ordered, attempts=0, no_input=0, no_match=0)
            turn.actions.append(SaveIntake(self._intake(turn.state, "incomplete")))
            nxt = next((f for f in form.fields if f.name not in filled), None)
            if s.correcting or nxt is None:
                self._read_back(turn)
            else:
                self._ask_field(turn, nxt)
            return
        attempts = s.attempts + 1
        turn.state = replace(s, attempts=attempts, no_input=0)
        if attempts >= self.scenario.max_field_attempts:
            self._transfer(turn, "not_understood", form.queue)
            return
        problem = result.detail if isinstance(result, formfields.Invalid) else form.retry_prefix
        self._say_and_listen(turn, [Say(problem), Say(fld.prompt)], turn.state.last_listen or self._menu_listen())

    def _form_command(self, turn: _Turn, utt: Utterance) -> bool:
        """A caller in the middle of a form may still ask for a person, a repeat, or leave."""
        m = self._best_intent(self._command_matcher, utt)
        if m.intent is None:
            return False
        intent = self.scenario.intent(m.intent)
        turn.actions.append(RecognizedIntent(intent.id, m.confidence, counted=intent.kind != "goodbye"))
        self._run_intent(turn, intent)
        return True

    def _read_back(self, turn: _Turn) -> None:
        s = turn.state
        form = self._form(s)
        values = s.fields
        parts = [f"{f.label}: {formfields.speak_value(f.kind, values[f.name])}." for f in form.fields]
        says = [Say(f"{form.readback_intro} " + " ".join(parts), interruptible=False), Say(form.confirm)]
        turn.state = replace(s, field=None, correcting=False, attempts=0)
        self._say_and_listen(turn, says, Listen("yes_no", complete="yes_no", no_input_s=self.scenario.no_input_s),
                             node="confirm")

    def _confirm_answer(self, turn: _Turn, utt: Utterance) -> None:
        answer = _look_down(turn, utt, _yes_no)
        if isinstance(answer, Parsed):
            self._confirmed(turn, answer.value)
            return
        if self._form_command(turn, utt):
            return
        turn.actions.append(RecognizedIntent(None, utt.confidence))
        self._retry(turn, [Say(self._form(turn.state).confirm)])

    def _confirmed(self, turn: _Turn, yes: bool) -> None:
        s = turn.state
        form = self._form(s)
        turn.state = replace(s, attempts=0, no_input=0)
        if yes:
            turn.state = replace(turn.state, node="submitting")
            turn.actions.append(SubmitIntake(self._intake(turn.state, "submitted")))
        else:
            self._say_and_listen(turn, [Say(form.which_field)],
                                 Listen("field_choice", no_input_s=self.scenario.no_input_s), node="which_field")

    def _which_field_answer(self, turn: _Turn, utt: Utterance) -> None:
        form = self._form(turn.state)
        name = _look_down(turn, utt, lambda text: _parsed(formfields.parse_field_choice(text)))
        if isinstance(name, Parsed):
            turn.state = replace(turn.state, correcting=True, attempts=0)
            self._ask_field(turn, form.field(name.value))
            return
        if self._form_command(turn, utt):
            return
        turn.actions.append(RecognizedIntent(None, utt.confidence))
        self._retry(turn, [Say(form.which_field_retry)])

    def _retry(self, turn: _Turn, says: Sequence[Say]) -> None:
        attempts = turn.state.attempts + 1
        turn.state = replace(turn.state, attempts=attempts)
        if attempts >= self.scenario.max_field_attempts:
            self._transfer(turn, "not_understood", self._form(turn.state).queue)
        else:
            self._say_and_listen(turn, list(says), turn.state.last_listen or self._menu_listen())

    # ------------------------------------------------------------------ waiting for a person

    @property
    def _hold_script(self) -> QueueScript:
        assert self.scenario.hold is not None
        return self.scenario.hold

    def _on_queue_update(self, turn: _Turn, ev: QueueUpdate) -> None:
        s = turn.state
        if s.node == "transferred":
            turn.state = s = replace(s, node="holding", in_queue=True, joined_at_s=ev.at_s - ev.waited_s,
                                     attempts=0, no_input=0, no_match=0, dtmf="")
        elif s.node != "holding":
            return  # busy with the callback number: announcements wait until the caller is back on hold
        hold = self._hold_script
        announce = s.announced_at_s is None or ev.at_s - s.announced_at_s >= hold.announce_interval_s - _TIMER_SLACK_S
        offer = not s.callback_offered and ev.waited_s >= hold.callback_after_s - _TIMER_SLACK_S
        says = self._announcement(ev) if announce else []
        if offer:
            says.append(Say(hold.prompt("callback_offer")))
        elif announce and s.callback_offered:
            says.append(Say(hold.prompt("callback_reminder")))
        turn.state = replace(s, announced_at_s=ev.at_s if announce else s.announced_at_s,
                             callback_offered=s.callback_offered or offer)
        self._hold(turn, says, remember=announce or offer)

    def _announcement(self, ev: QueueUpdate) -> list[Say]:
        """ "You are number 3 in the queue." and the estimated wait, in whole minutes."""
        hold = self._hold_script
        position = (hold.prompt("position_next") if ev.position <= 1
                    else hold.prompt("position", position=ev.position))
        if ev.estimated_wait_s is None:
            wait = hold.prompt("wait_unknown")
        elif ev.estimated_wait_s < 60:
            wait = hold.prompt("wait_short")
        else:
            minutes = round(ev.estimated_wait_s / 60)
            wait = hold.prompt("wait_one_minute") if minutes == 1 else hold.prompt("wait_minutes", minutes=minutes)
        return [Say(position), Say(wait)]

    def _hold(self, turn: _Turn, says: list[Say], *, remember: bool = True) -> None:
        """Back on hold: say ``says``, then hold audio until the next announcement or callback offer."""
        hold = self._hold_script
        turn.state = replace(turn.state, attempts=0, no_input=0, dtmf="", callback_number=None)
        self._say_and_listen(turn, says, Listen("callback", no_input_s=hold.announce_interval_s), node="holding",
                             remember=remember)
        turn.actions += [PlayHold(), QueueTimer(self._until_next_update_s(turn))]

    def _until_next_update_s(self, turn: _Turn) -> float:
        s, hold = turn.state, self._hold_script
        assert s.joined_at_s is not None
        due_s = (s.announced_at_s if s.announced_at_s is not None else turn.now_s) + hold.announce_interval_s
        if not s.callback_offered:
            due_s = min(due_s, s.joined_at_s + hold.callback_after_s)
        return max(due_s - turn.now_s, _MIN_QUEUE_TIMER_S)

    def _waited_s(self, turn: _Turn) -> float:
        joined = turn.state.joined_at_s
        return 0.0 if joined is None else max(0.0, turn.now_s - joined)

    def _on_agent_ready(self, turn: _Turn, ev: AgentReady) -> None:
        if turn.state.node not in ("transferred", *_QUEUE_NODES):
            return
        turn.actions += [Say(self._hold_script.prompt("agent_connecting"), interruptible=False),
                         ConnectAgent(ev.agent, ev.sip_uri)]
        joined_at_s = turn.now_s if turn.state.joined_at_s is None else turn.state.joined_at_s
        turn.state = replace(turn.state, node="connecting", in_queue=True, joined_at_s=joined_at_s)

    def _on_agent_unreachable(self, turn: _Turn, ev: AgentUnreachable) -> None:
        """The agent's phone did not take the call: a contact centre keeps the caller, at their place in line."""
        if turn.state.node != "connecting":
            return
        turn.actions.append(ReturnToQueue(ev.agent))
        self._hold(turn, [Say(self._hold_script.prompt("agent_unreachable"), interruptible=False)], remember=False)

    def _holding_answer(self, turn: _Turn, utt: Utterance) -> None:
        s = turn.state
        for alt in utt.alternatives:
            accepted = parse_callback_request(alt.text) or (
                s.callback_offered and formfields.parse_yes_no(alt.text) is True)
            if accepted:
                turn.actions.append(RecognizedIntent("callback", alt.confidence, counted=False))
                self._start_callback(turn)
                return
        m = self._best_intent(self._command_matcher, utt)
        if m.intent == "goodbye":
            turn.actions.append(RecognizedIntent("goodbye", m.confidence, counted=False))
            self._leave_queue(turn, self._hold_script.prompt("leave_goodbye"))
            return
        turn.actions.append(RecognizedIntent(m.intent if m.intent == "repeat" else None, m.confidence))
        # Speech cut the hold audio: resume it, with the last announcement again if asked for.
        self._hold(turn, list(s.last_says) if m.intent == "repeat" else [], remember=False)

    def _queue_dtmf(self, turn: _Turn, digit: str) -> None:
        s = turn.state
        if s.node == "callback_number":
            if digit == "#":
                self._keyed_number_done(turn)
            elif digit == "*":
                turn.state = replace(s, dtmf="")
            else:
                turn.state = replace(s, dtmf=s.dtmf + digit)
        elif s.node == "callback_confirm" and digit in "12":
            turn.actions.append(RecognizedIntent(None, 1.0))
            self._number_confirmed(turn, digit == "1")
        elif s.node == "holding" and digit == self._hold_script.callback_key:
            turn.actions.append(RecognizedIntent("callback", 1.0, counted=False))
            self._start_callback(turn)
        elif s.node == "holding":
            self._hold(turn, [], remember=False)  # the key cut the hold audio

    def _start_callback(self, turn: _Turn) -> None:
        turn.state = replace(turn.state, attempts=0, no_input=0, dtmf="")
        number = phone_number_of_caller_id(turn.state.caller_id)
        if number is not None:
            self._confirm_number(turn, number)
        else:
            self._ask_number(turn)

    def _confirm_number(self, turn: _Turn, number: str, before: Sequence[Say] = ()) -> None:
        say = Say(self._hold_script.prompt("callback_confirm", number=speak_phone_number(number)))
        turn.state = replace(turn.state, callback_number=number)
        self._say_and_listen(turn, [*before, say],
                             Listen("yes_no", complete="yes_no", no_input_s=self.scenario.no_input_s),
                             node="callback_confirm")

    def _ask_number(self, turn: _Turn, before: Sequence[Say] = ()) -> None:
        listen = Listen("phone_number", no_input_s=self.scenario.no_input_s,
                        interdigit_s=self.scenario.interdigit_timeout_s)
        turn.state = replace(turn.state, callback_number=None, dtmf="")
        self._say_and_listen(turn, [*before, Say(self._hold_script.prompt("callback_ask_number"))], listen,
                             node="callback_number")

    def _callback_confirm_answer(self, turn: _Turn, utt: Utterance) -> None:
        answer = _look_down(turn, utt, _yes_no)
        if isinstance(answer, Parsed):
            self._number_confirmed(turn, answer.value)
            return
        if self._queue_command(turn, utt):
            return
        turn.actions.append(RecognizedIntent(None, utt.confidence))
        number = turn.state.callback_number
        assert number is not None
        if self._count_attempt(turn):
            self._confirm_number(turn, number, [Say(self._hold_script.prompt("callback_not_understood"))])

    def _number_confirmed(self, turn: _Turn, yes: bool) -> None:
        s = turn.state
        number = s.callback_number
        assert number is not None
        if yes:
            turn.actions += [RequestCallback(number),
                             Say(self._hold_script.prompt("callback_thanks"), interruptible=False),
                             EndCall("transferred")]
            turn.state = replace(s, node="closing", in_queue=False)
        else:
            turn.state = replace(s, no_input=0)
            self._ask_number(turn)

    def _callback_number_answer(self, turn: _Turn, utt: Utterance) -> None:
        result = _look_down(turn, utt, parse_phone_number)
        if isinstance(result, Parsed):
            self._number_given(turn, result)
            return
        if result is None and self._queue_command(turn, utt):
            return
        turn.actions.append(RecognizedIntent(None, utt.confidence))
        self._number_given(turn, result)

    def _keyed_number_done(self, turn: _Turn) -> None:
        keys, turn.state = turn.state.dtmf, replace(turn.state, dtmf="")
        turn.actions.append(RecognizedIntent(None, 1.0))
        self._number_given(turn, validate_phone_number(digits_from_dtmf(keys)))

    def _number_given(self, turn: _Turn, result: Parsed[str] | Invalid | None) -> None:
        if isinstance(result, Parsed):
            turn.state = replace(turn.state, attempts=0, no_input=0)
            self._confirm_number(turn, result.value)
            return
        hold = self._hold_script
        problem = hold.prompt("callback_invalid_number") if isinstance(result, Invalid) \
            else hold.prompt("callback_not_understood")
        if self._count_attempt(turn):
            self._ask_number(turn, [Say(problem)])

    def _count_attempt(self, turn: _Turn) -> bool:
        """One more failed answer about the callback; False (and back on hold) when that was the last."""
        attempts = turn.state.attempts + 1
        turn.state = replace(turn.state, attempts=attempts, no_input=0)
        if attempts >= self.scenario.max_field_attempts:
            self._callback_gave_up(turn)
            return False
        return True

    def _callback_gave_up(self, turn: _Turn) -> None:
        self._hold(turn, [Say(self._hold_script.prompt("callback_gave_up"))], remember=False)

    def _queue_command(self, turn: _Turn, utt: Utterance) -> bool:
        """Repeat the question, or leave the line, in the middle of the callback questions."""
        m = self._best_intent(self._command_matcher, utt)
        if m.intent == "repeat":
            turn.actions.append(RecognizedIntent("repeat", m.confidence))
            self._repeat(turn)
            return True
        if m.intent == "goodbye":
            turn.actions.append(RecognizedIntent("goodbye", m.confidence, counted=False))
            self._leave_queue(turn, self._hold_script.prompt("leave_goodbye"))
            return True
        return False

    def _leave_queue(self, turn: _Turn, text: str) -> None:
        """The caller gives up waiting (or the service closes): out of the queue, a last word, hang up."""
        turn.actions += [LeaveQueue(self._waited_s(turn)), Say(text, interruptible=False), EndCall("abandoned")]
        turn.state = replace(turn.state, node="closing", in_queue=False)

    # ------------------------------------------------------------------ shared moves

    def _no_match(self, turn: _Turn) -> None:
        count = turn.state.no_match + 1
        turn.state = replace(turn.state, no_match=count, no_input=0)
        if count >= self.scenario.max_no_match:
            self._transfer(turn, "not_understood", self.scenario.queue)
        else:
            self._say_and_listen(turn, [Say(self.scenario.prompt("no_match"))], self._menu_listen(), node="menu")
            turn.state = replace(turn.state, after_answer=False)

    def _repeat(self, turn: _Turn) -> None:
        s = turn.state
        says = list(s.last_says) or [Say(self.scenario.prompt("welcome"))]
        self._say_and_listen(turn, says, s.last_listen or self._menu_listen())

    def _transfer(self, turn: _Turn, reason: TransferReason, queue: str) -> None:
        self._save_incomplete(turn)
        turn.actions += [Say(self.scenario.prompt(f"transfer_{reason}")), Transfer(reason, queue)]
        if self.scenario.hold is not None:
            turn.actions.append(EnterQueue(queue, reason, self.scenario.hold.priority_of(reason)))
        turn.state = replace(turn.state, node="transferred")

    def _close(self, turn: _Turn, text: str, *, interruptible: bool = True) -> None:
        self._save_incomplete(turn)
        turn.actions += [Say(text, interruptible=interruptible), EndCall("completed")]
        turn.state = replace(turn.state, node="closing")

    def _save_incomplete(self, turn: _Turn) -> None:
        s = turn.state
        if s.form is not None and s.node != "submitting":
            turn.actions.append(SaveIntake(self._intake(s, "incomplete")))

    def _say_and_listen(self, turn: _Turn, says: list[Say], listen: Listen, node: Node | None = None,
                        remember: bool = True) -> None:
        turn.actions += says
        turn.actions.append(listen)
        turn.state = replace(
            turn.state, node=node or turn.state.node, last_listen=listen,
            last_says=tuple(says) if remember else turn.state.last_says,
        )

    # ------------------------------------------------------------------ helpers

    def _best_intent(self, matcher: IntentMatcher, utt: Utterance) -> IntentMatch:
        """The top hypothesis's intent; a lower one only when the top means nothing and it is clear.

        Open speech n-best lists differ in small words; a lower entry that suddenly
        means something is more often noise than rescue, hence the higher bar.
        """
        top = matcher.match(utt.text)
        if top.intent is not None:
            return top
        for alt in utt.alternatives[1:3]:
            m = matcher.match(alt.text)
            # as sure of the words as of their meaning: a one-word change the recognizer thought
            # half as likely as the top ("to the coast" -> "to the close") is not enough
            heard = alt.confidence / utt.confidence if utt.confidence > 0 else 0.0
            if m.intent is not None and m.confidence * heard >= _NBEST_INTENT_CONFIDENCE:
                return m
        return top

    def _menu_listen(self) -> Listen:
        complete = None if self.scenario.complete_confidence is None else QUESTION_COMPLETE
        return Listen("menu", complete=complete, complete_in_pause=True, no_input_s=self.scenario.no_input_s)

    def _form(self, s: DialogueState) -> Form:
        assert s.form is not None
        return self.scenario.forms[s.form]

    def _current_field(self, s: DialogueState) -> FormField | None:
        if s.form is None or s.field is None:
            return None
        return self.scenario.forms[s.form].field(s.field)

    def _intake(self, s: DialogueState, status: Literal["submitted", "incomplete"]) -> IntakeForm:
        assert s.form is not None
        return IntakeForm(form=s.form, status=status, fields=dict(s.filled), reference=s.reference)
