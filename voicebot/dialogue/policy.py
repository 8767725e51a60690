"""The dialogue as a pure state machine: ``step(state, event) -> (state, actions)``.

No I/O and no clock: everything the policy knows arrives as an event, and
everything it wants done leaves as an action, so it is tested as data.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from typing import Literal, Sequence

from voicebot.dialogue import fields as formfields
from voicebot.dialogue.nlu import IntentMatch, IntentMatcher
from voicebot.dialogue.scenario import Form, FormField, Intent, Scenario
from voicebot.events import (
    Action, CallerEvent, CallerHungUp, CallStarted, DtmfKey, DtmfTimeout, EndCall, IntakeForm,
    IntakeSubmitted, Listen, NoInput, RecognizedIntent, SaveIntake, Say, ServiceClosing, SubmitIntake, Transfer,
    TransferReason, Utterance,
)

Node = Literal["start", "menu", "field", "confirm", "which_field", "submitting", "closing", "transferred", "ended"]

#: an intent found below the top of the n-best list must be at least this clear
_NBEST_INTENT_CONFIDENCE = 0.8

#: intents that may interrupt a form question
_FORM_COMMANDS = ("agent", "repeat", "goodbye", "complex_case")


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

    @property
    def fields(self) -> dict[str, object]:
        return dict(self.filled)


@dataclass(slots=True)
class _Turn:
    """Accumulates one step's actions."""

    state: DialogueState
    actions: list[Action] = field(default_factory=list)


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

    def initial_state(self) -> DialogueState:
        return DialogueState()

    # ------------------------------------------------------------------ entry point

    def step(self, state: DialogueState, event: CallerEvent) -> tuple[DialogueState, list[Action]]:
        turn = _Turn(state)
        if state.node in ("ended", "transferred"):
            return state, []
        match event:
            case CallStarted():
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
                if state.node != "closing":
                    self._close(turn, self.scenario.prompt("service_closing"), interruptible=False)
            case _:
                pass
        return turn.state, turn.actions

    # ------------------------------------------------------------------ events

    def _on_utterance(self, turn: _Turn, utt: Utterance) -> None:
        s = turn.state
        if s.node == "menu":
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
        if s.node not in ("menu", "field", "confirm", "which_field"):
            return
        count = s.no_input + 1
        turn.state = replace(s, no_input=count)
        if count >= self.scenario.max_no_input:
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
        self._save_incomplete(turn)
        turn.state = replace(turn.state, node="ended")

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
        first_problem: formfields.Invalid | None = None
        for alt in utt.alternatives:
            result = formfields.parse_field(fld.kind, alt.text, self._today)
            if isinstance(result, formfields.Parsed):
                turn.actions.append(RecognizedIntent(None, alt.confidence))
                self._field_result(turn, fld, result)
                return
            if isinstance(result, formfields.Invalid) and first_problem is None:
                first_problem = result
        if first_problem is None and self._form_command(turn, utt):
            return
        turn.actions.append(RecognizedIntent(None, utt.confidence))
        self._field_result(turn, fld, first_problem)

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
        for alt in utt.alternatives:
            answer = formfields.parse_yes_no(alt.text)
            if answer is not None:
                turn.actions.append(RecognizedIntent(None, alt.confidence))
                self._confirmed(turn, answer)
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
        for alt in utt.alternatives:
            name = formfields.parse_field_choice(alt.text)
            if name is not None:
                turn.actions.append(RecognizedIntent(None, alt.confidence))
                turn.state = replace(turn.state, correcting=True, attempts=0)
                self._ask_field(turn, form.field(name))
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
            if m.intent is not None and m.confidence >= _NBEST_INTENT_CONFIDENCE:
                return m
        return top

    def _menu_listen(self) -> Listen:
        return Listen("menu", no_input_s=self.scenario.no_input_s)

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
