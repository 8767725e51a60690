"""Loading a scenario file (TOML) into typed, immutable settings for the policy."""

from __future__ import annotations

from voicebot.errors import VoicebotError

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

IntentKind = Literal["answer", "form", "transfer", "goodbye", "repeat"]
TRANSFER_REASONS = ("caller_request", "complex_case", "not_understood")
FIELD_KINDS = ("personal_id", "postal_code", "monthly_rent", "household_size")


class ScenarioError(VoicebotError):
    """The scenario file is unreadable or inconsistent (one line)."""


@dataclass(frozen=True, slots=True)
class Intent:
    id: str
    kind: IntentKind
    examples: tuple[str, ...]
    answer: str = ""
    form: str = ""
    reason: str = ""
    queue: str = ""


@dataclass(frozen=True, slots=True)
class FormField:
    name: str
    kind: str
    label: str
    prompt: str
    grammar: str
    complete: str | None = None
    dtmf: bool = False


@dataclass(frozen=True, slots=True)
class Form:
    name: str
    intro: str
    fields: tuple[FormField, ...]
    readback_intro: str
    confirm: str
    which_field: str
    which_field_retry: str
    submitted: str
    retry_prefix: str
    queue: str

    def field(self, name: str) -> FormField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class QueueScript:
    """How a transferred caller waits for a person: timing, priorities and what the bot says.

    Prompts may hold ``{position}``, ``{minutes}`` or ``{number}`` placeholders (see
    ``QUEUE_PROMPTS``); the policy fills them in.
    """

    #: seconds between position announcements
    announce_interval_s: float
    #: seconds of waiting before the bot offers a callback
    callback_after_s: float
    #: the key that asks for a callback while waiting
    callback_key: str
    #: transfer reason -> priority in the queue (higher is served first; unlisted reasons get 0)
    priority: dict[str, int]
    prompts: dict[str, str]

    def prompt(self, key: str, **values: object) -> str:
        return self.prompts[key].format(**values)

    def priority_of(self, reason: str) -> int:
        return self.priority.get(reason, 0)

    def static_prompts(self) -> list[str]:
        """The prompts without placeholders, worth synthesizing at start-up."""
        return [text for text in self.prompts.values() if "{" not in text]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    queue: str
    no_input_s: float
    max_no_input: int
    max_no_match: int
    max_field_attempts: int
    intent_threshold: float
    agent_key: str
    interdigit_timeout_s: float
    prompts: dict[str, str]
    intents: tuple[Intent, ...]
    forms: dict[str, Form]
    #: concept name -> words that express it
    concepts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: sentences this line does not handle, so the matcher learns what a no-match sounds like
    off_topic: tuple[str, ...] = ()
    #: waiting for a person in a queue; None: a transfer hands the call over at once
    hold: QueueScript | None = None
    #: a question recognised at least this sure at a pause in the caller's speech is answered
    #: there, without waiting out the rest of the end-of-turn silence; None: always wait
    complete_confidence: float | None = None

    def intent(self, intent_id: str) -> Intent:
        for i in self.intents:
            if i.id == intent_id:
                return i
        raise KeyError(intent_id)

    def prompt(self, key: str) -> str:
        return self.prompts[key]

    def open_speech_sentences(self) -> list[str]:
        """Example phrasings the open-speech language model is built from."""
        return [e for i in self.intents for e in i.examples] + list(self.off_topic)

    def static_prompts(self) -> list[str]:
        """Texts worth synthesizing once at start-up (and adapting the recognizer with).

        The queue's prompts are not among them (see ``QueueScript.static_prompts``): the
        adapted model is built from this list, and it must not change with the hold dialogue.
        """
        texts = list(self.prompts.values())
        texts += [i.answer for i in self.intents if i.answer]
        for form in self.forms.values():
            texts += [form.intro, form.confirm, form.readback_intro, form.which_field, form.which_field_retry]
            texts += [f.prompt for f in form.fields]
        return texts


_REQUIRED_PROMPTS = (
    "welcome", "anything_else", "what_else", "no_match", "no_input", "no_input_goodbye", "goodbye",
    "transfer_caller_request", "transfer_complex_case", "transfer_not_understood", "service_closing",
)
#: the queue's prompts and the placeholders each may use
QUEUE_PROMPTS: dict[str, tuple[str, ...]] = {
    "position": ("position",), "position_next": (), "wait_minutes": ("minutes",), "wait_one_minute": (),
    "wait_short": (), "wait_unknown": (), "callback_offer": (), "callback_reminder": (),
    "callback_confirm": ("number",), "callback_ask_number": (), "callback_invalid_number": (),
    "callback_not_understood": (), "callback_gave_up": (), "callback_thanks": (), "agent_connecting": (),
    "agent_unreachable": (), "leave_goodbye": (),
}
DEFAULT_QUEUE = "general"


def load_scenario(path: Path) -> Scenario:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{path}: scenario file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML: {e}") from None
    try:
        return _build(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise ScenarioError(f"{path}: {e}") from None


def _build(raw: dict) -> Scenario:
    head = raw["scenario"]
    prompts = {str(k): str(v) for k, v in raw["prompts"].items()}
    missing = [p for p in _REQUIRED_PROMPTS if p not in prompts]
    if missing:
        raise ValueError(f"missing prompts: {', '.join(missing)}")
    forms = {name: _form(name, spec) for name, spec in raw.get("forms", {}).items()}
    intents = []
    for intent_id, spec in raw["intents"].items():
        kind = spec["kind"]
        if kind not in ("answer", "form", "transfer", "goodbye", "repeat"):
            raise ValueError(f"intent {intent_id}: unknown kind {kind!r}")
        if kind == "form" and spec["form"] not in forms:
            raise ValueError(f"intent {intent_id}: unknown form {spec['form']!r}")
        if kind == "transfer" and spec["reason"] not in TRANSFER_REASONS:
            raise ValueError(f"intent {intent_id}: transfer reason must be one of {TRANSFER_REASONS}")
        if kind == "answer" and not spec.get("answer"):
            raise ValueError(f"intent {intent_id}: an answer intent needs an answer")
        examples = tuple(str(e) for e in spec.get("examples", ()))
        if not examples:
            raise ValueError(f"intent {intent_id}: no examples")
        intents.append(Intent(
            id=intent_id, kind=kind, examples=examples, answer=spec.get("answer", ""),
            form=spec.get("form", ""), reason=spec.get("reason", ""),
            queue=spec.get("queue", head.get("queue", DEFAULT_QUEUE)),
        ))
    return Scenario(
        name=head["name"], queue=head.get("queue", DEFAULT_QUEUE), no_input_s=float(head["no_input_s"]),
        max_no_input=int(head["max_no_input"]), max_no_match=int(head["max_no_match"]),
        max_field_attempts=int(head["max_field_attempts"]), intent_threshold=float(head["intent_threshold"]),
        agent_key=str(head["agent_key"]), interdigit_timeout_s=float(head["interdigit_timeout_s"]),
        prompts=prompts, intents=tuple(intents), forms=forms,
        concepts={str(k): tuple(str(w).lower() for w in v) for k, v in raw.get("concepts", {}).items()},
        off_topic=tuple(str(e) for e in raw.get("off_topic", {}).get("examples", ())),
        hold=_queue(raw["queue"]) if "queue" in raw else None,
        complete_confidence=float(head["complete_confidence"]) if "complete_confidence" in head else None,
    )


def _queue(spec: dict) -> QueueScript:
    prompts = {str(k): str(v) for k, v in spec["prompts"].items()}
    missing = [p for p in QUEUE_PROMPTS if p not in prompts]
    if missing:
        raise ValueError(f"queue: missing prompts: {', '.join(missing)}")
    for key, allowed in QUEUE_PROMPTS.items():
        try:
            prompts[key].format(**{name: "" for name in allowed})
        except (KeyError, IndexError, ValueError) as e:
            names = ", ".join("{" + name + "}" for name in allowed) or "no placeholder"
            raise ValueError(f"queue prompt {key}: may use {names}, not {e}") from None
    priority = {str(k): int(v) for k, v in spec.get("priority", {}).items()}
    unknown = [r for r in priority if r not in TRANSFER_REASONS]
    if unknown:
        raise ValueError(f"queue priority: unknown transfer reason(s) {', '.join(unknown)}")
    interval_s, after_s = float(spec["announce_interval_s"]), float(spec["callback_after_s"])
    if interval_s <= 0 or after_s < 0:
        raise ValueError("queue: announce_interval_s must be positive and callback_after_s not negative")
    return QueueScript(announce_interval_s=interval_s, callback_after_s=after_s,
                       callback_key=str(spec.get("callback_key", "1")), priority=priority, prompts=prompts)


def _form(name: str, spec: dict) -> Form:
    fields = []
    for f in spec["fields"]:
        if f["kind"] not in FIELD_KINDS:
            raise ValueError(f"form {name}: field {f['name']}: unknown kind {f['kind']!r}")
        fields.append(FormField(
            name=f["name"], kind=f["kind"], label=f["label"], prompt=f["prompt"], grammar=f["grammar"],
            complete=f.get("complete"), dtmf=bool(f.get("dtmf", False)),
        ))
    return Form(
        name=name, intro=spec["intro"], fields=tuple(fields), readback_intro=spec["readback_intro"],
        confirm=spec["confirm"], which_field=spec["which_field"], which_field_retry=spec["which_field_retry"],
        submitted=spec["submitted"], retry_prefix=spec["retry_prefix"], queue=spec.get("transfer_queue", "general"),
    )
