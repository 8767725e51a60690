"""The record of one call: the same JSON for replay, the store and the API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from voicebot.events import IntakeForm, Outcome, Transfer


@dataclass(slots=True)
class Turn:
    speaker: Literal["bot", "caller"]
    text: str
    start_s: float
    end_s: float
    intent: str | None = None
    confidence: float = 0.0
    interrupted: bool = False
    #: an intent that is a dialogue act (goodbye) is not listed among the call's intents
    counted: bool = True

    def to_json(self) -> dict:
        return {
            "speaker": self.speaker, "text": self.text, "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3), "intent": self.intent, "confidence": round(self.confidence, 3),
            "interrupted": self.interrupted,
        }


@dataclass(slots=True)
class CallReport:
    call: str
    call_id: str
    caller_id: str = ""
    engine: str = ""
    outcome: Outcome = "abandoned"
    transfer: Transfer | None = None
    intake: IntakeForm | None = None
    turns: list[Turn] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    started_at: str = ""
    ended_at: str = ""
    duration_s: float = 0.0

    @property
    def intents(self) -> list[str]:
        return [t.intent for t in self.turns if t.speaker == "caller" and t.intent and t.counted]

    def to_json(self) -> dict:
        return {
            "call": self.call,
            "call_id": self.call_id,
            "caller_id": self.caller_id,
            "engine": self.engine,
            "outcome": self.outcome,
            "transfer": asdict(self.transfer) if self.transfer else None,
            "intents": self.intents,
            "intake": asdict(self.intake) if self.intake else None,
            "turns": [t.to_json() for t in self.turns],
            "latency_ms": [round(x, 1) for x in self.latency_ms],
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": round(self.duration_s, 3),
        }
