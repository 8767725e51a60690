"""The one typed vocabulary that flows between stages of a call.

transport -> listener: AudioFrame, DtmfTone, TransportHangup, TransportClosing
listener/session -> policy: CallerEvent subclasses
policy -> session: Action subclasses

Audio is always signed 16-bit little-endian mono PCM; times are seconds on the
session clock (``*_s``), durations carry their unit in the name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

BYTES_PER_SAMPLE = 2
FRAME_MS = 20


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """20 ms of caller or bot audio, int16 LE mono."""

    pcm: bytes
    sample_rate_hz: int
    start_s: float

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / BYTES_PER_SAMPLE / self.sample_rate_hz

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True, slots=True)
class DtmfTone:
    """A key press from the transport: RFC 4733 / SIP INFO, or detected in-band."""

    digit: str
    start_s: float


@dataclass(frozen=True, slots=True)
class TransportHangup:
    """The far end went away (BYE, end of WAV, media timeout)."""

    at_s: float
    cause: str = "caller"


@dataclass(frozen=True, slots=True)
class TransportClosing:
    """The service is shutting down: the bot should end the call politely now."""

    at_s: float


TransportItem = Union[AudioFrame, DtmfTone, TransportHangup, TransportClosing]


# --------------------------------------------------------------------------- recognition


@dataclass(frozen=True, slots=True)
class Alternative:
    """One entry of an n-best list; confidence in [0, 1]."""

    text: str
    confidence: float


# --------------------------------------------------------------------------- caller events


@dataclass(frozen=True, slots=True)
class CallStarted:
    at_s: float
    caller_id: str = ""


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """VAD onset: drives barge-in."""

    at_s: float


@dataclass(frozen=True, slots=True)
class Utterance:
    """A finished caller turn with its n-best list, best first (may be empty).

    ``continues``: the caller went on right after a turn that was ended at a pause as complete
    (``Listen.complete_in_pause``); this one holds that turn's audio too and replaces it.
    """

    alternatives: tuple[Alternative, ...]
    start_s: float
    end_s: float
    continues: bool = False

    @property
    def text(self) -> str:
        return self.alternatives[0].text if self.alternatives else ""

    @property
    def confidence(self) -> float:
        return self.alternatives[0].confidence if self.alternatives else 0.0


@dataclass(frozen=True, slots=True)
class DtmfKey:
    digit: str
    at_s: float


@dataclass(frozen=True, slots=True)
class DtmfTimeout:
    """No further key within the inter-digit timeout of a digit entry."""

    at_s: float


@dataclass(frozen=True, slots=True)
class NoInput:
    """The caller stayed silent for the no-input timeout after a prompt ended."""

    at_s: float


@dataclass(frozen=True, slots=True)
class PromptPlayed:
    """The bot finished playing every queued prompt (or they were cut by barge-in)."""

    at_s: float


@dataclass(frozen=True, slots=True)
class IntakeSubmitted:
    """The store accepted a submitted form and gave it a reference."""

    reference: str
    at_s: float


@dataclass(frozen=True, slots=True)
class CallerHungUp:
    at_s: float


@dataclass(frozen=True, slots=True)
class ServiceClosing:
    """The service must end calls in progress (graceful shutdown ran out of time)."""

    at_s: float


@dataclass(frozen=True, slots=True)
class QueueUpdate:
    """Where a caller waiting for a person stands, asked of the queue when the policy's QueueTimer ran out.

    ``position`` 1 is next; ``estimated_wait_s`` is None when no agent serves the queue;
    ``waited_s`` counts from joining the queue, on the session clock.
    """

    position: int
    estimated_wait_s: float | None
    waited_s: float
    at_s: float


@dataclass(frozen=True, slots=True)
class AgentReady:
    """An agent took the waiting caller: connect the call to ``sip_uri``."""

    agent: str
    sip_uri: str
    at_s: float


@dataclass(frozen=True, slots=True)
class AgentUnreachable:
    """The call could not be connected to the agent who took it (their phone rejected it, did not answer,
    or the REFER or bridge failed); the caller is still on the line with the bot."""

    agent: str
    sip_uri: str
    at_s: float


CallerEvent = Union[
    CallStarted, SpeechStarted, Utterance, DtmfKey, DtmfTimeout, NoInput, PromptPlayed, IntakeSubmitted, CallerHungUp,
    ServiceClosing, QueueUpdate, AgentReady, AgentUnreachable,
]


# --------------------------------------------------------------------------- actions

TransferReason = Literal["caller_request", "complex_case", "not_understood"]
Outcome = Literal["completed", "transferred", "abandoned"]
IntakeStatus = Literal["submitted", "incomplete"]


@dataclass(frozen=True, slots=True)
class Say:
    """Speak a prompt. ``interruptible=False`` keeps it playing through caller speech."""

    text: str
    interruptible: bool = True


@dataclass(frozen=True, slots=True)
class Listen:
    """What the caller is expected to say next.

    ``grammar`` names a file in grammars/ (or ``"menu"`` for open speech);
    ``complete`` names a completeness test the listener may use to end the turn
    early: on the recognizer's partial results while the caller speaks or, with
    ``complete_in_pause``, on the turn decoded at a pause (open speech, whose
    partial results would cost a decode that is thrown away; a caller who goes
    on after such an end continues the same turn, see ``Utterance.continues``);
    ``no_input_s`` arms the no-input timer once prompts finish; ``interdigit_s``
    (when set) ends a key entry that stops without '#'.
    """

    grammar: str
    complete: str | None = None
    complete_in_pause: bool = False
    no_input_s: float = 6.0
    interdigit_s: float | None = None


@dataclass(frozen=True, slots=True)
class RecognizedIntent:
    """Bookkeeping for the report: what the caller's last turn meant.

    ``counted`` is False for dialogue acts (goodbye) that are not a request.
    """

    intent: str | None
    confidence: float
    counted: bool = True


@dataclass(frozen=True, slots=True)
class IntakeForm:
    form: str
    status: IntakeStatus
    fields: dict[str, object] = field(default_factory=dict)
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class SaveIntake:
    """Persist the form as it stands (sent after every filled field)."""

    intake: IntakeForm


@dataclass(frozen=True, slots=True)
class SubmitIntake:
    """Ask the store for a reference; answered with IntakeSubmitted."""

    intake: IntakeForm


@dataclass(frozen=True, slots=True)
class Transfer:
    reason: TransferReason
    queue: str


@dataclass(frozen=True, slots=True)
class EndCall:
    """Hang up once the queued prompts have played."""

    outcome: Outcome


@dataclass(frozen=True, slots=True)
class EnterQueue:
    """Put the transferred call in line for a person (follows its Transfer).

    A session without a queue hands the call over at the Transfer and ignores this;
    one with a queue answers with a first QueueUpdate (or AgentReady). Higher
    ``priority`` is served first.
    """

    queue: str
    reason: TransferReason
    priority: int = 0


@dataclass(frozen=True, slots=True)
class QueueTimer:
    """Ask the queue where the caller stands ``after_s`` from now (replaces a pending ask)."""

    after_s: float


@dataclass(frozen=True, slots=True)
class PlayHold:
    """Play the hold loop whenever no prompt is playing, until caller speech or a key cuts it."""


@dataclass(frozen=True, slots=True)
class LeaveQueue:
    """The caller left the line before reaching a person (hung up, or said goodbye)."""

    waited_s: float


@dataclass(frozen=True, slots=True)
class RequestCallback:
    """Store a callback to ``number`` (digits, optional leading '+') and take the caller out of the queue."""

    number: str


@dataclass(frozen=True, slots=True)
class ConnectAgent:
    """Hand the caller to the agent at ``sip_uri`` once the queued prompts have played."""

    agent: str
    sip_uri: str


@dataclass(frozen=True, slots=True)
class ReturnToQueue:
    """Put the caller back in line at their old place: ``agent`` took the call but could not be reached, and is
    set away, so the next caller is not sent to the same phone."""

    agent: str


Action = Union[
    Say, Listen, RecognizedIntent, SaveIntake, SubmitIntake, Transfer, EndCall, EnterQueue, QueueTimer, PlayHold,
    LeaveQueue, RequestCallback, ConnectAgent, ReturnToQueue,
]
