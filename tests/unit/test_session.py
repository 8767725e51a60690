"""The call session with a scripted recognizer and a silent synthesizer.

Caller audio is real espeak-ng speech so the endpointer sees real utterances;
what the recognizer "hears" in each one is scripted.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
from collections.abc import Callable
from datetime import date

import numpy as np
import pytest

from voicebot.asr.base import Recognition
from voicebot.audio.wav import load_wav
from voicebot.calls.memory import MemoryRecorder
from voicebot.calls.session import CallSession, SessionServices
from voicebot.clock import VirtualClock
from voicebot.config import PROJECT_ROOT
from voicebot.dialogue.policy import Policy
from voicebot.dialogue.scenario import load_scenario
from voicebot.events import Alternative
from voicebot.transports.replay import ReplayTransport

RATE = 16000
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make test installs it)")


class ScriptedStream:
    def __init__(self, script: list[str], log: list[str], on_finish: Callable[[str], None] | None = None) -> None:
        self._script = script
        self._log = log
        self._on_finish = on_finish

    def set_grammar(self, grammar: str | None, *, partials: bool = True) -> None:
        self._log.append(f"grammar:{grammar}" + ("" if partials else " without partials"))

    def accept(self, pcm: bytes) -> None:
        pass

    def partial(self) -> str:
        return ""

    def finish(self) -> Recognition:
        text = self._script.pop(0) if self._script else ""
        if self._on_finish is not None:
            self._on_finish(text)
        return Recognition((Alternative(text, 0.9),) if text else ())

    def close(self) -> None:
        pass


class ScriptedEngine:
    name = "scripted"
    model_name = "script"
    sample_rate_hz = RATE

    def __init__(self, script: list[str], on_finish: Callable[[str], None] | None = None) -> None:
        self.script = list(script)
        self.log: list[str] = []
        self.on_finish = on_finish

    def open_stream(self) -> ScriptedStream:
        return ScriptedStream(self.script, self.log, self.on_finish)


class SilentPrompts:
    """0.06 s of silence per character: long prompts take long, as with a real voice."""

    sample_rate_hz = RATE

    def render(self, text: str) -> bytes:
        return bytes(int(len(text) * 0.06 * RATE) * 2)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """A short real utterance (about 1 s)."""
    path = tmp_path_factory.mktemp("speech") / "u.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "170", "-w", str(path), "hello there"], check=True)
    return load_wav(path, sample_rate_hz=RATE).samples


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


def tone(digit_hz: tuple[int, int], seconds: float = 0.15) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (6000 * (np.sin(2 * math.pi * digit_hz[0] * t) + np.sin(2 * math.pi * digit_hz[1] * t))).astype(np.int16)


def call_audio(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def policy() -> Policy:
    """Built once, outside the loop: training the intent matcher takes a moment."""
    return Policy(load_scenario(PROJECT_ROOT / "scenarios" / "benefits.toml"), today=date(2026, 11, 28))


async def run_call(policy: Policy, audio: np.ndarray, script: list[str],
                   on_finish: Callable[[CallSession, str], None] | None = None):
    """``on_finish(session, text)`` runs on the recognizer's thread as each utterance is decoded."""
    session: CallSession | None = None

    def finished(text: str) -> None:
        if on_finish is not None and session is not None:
            on_finish(session, text)

    engine = ScriptedEngine(script, finished)
    loop = asyncio.get_running_loop()
    services = SessionServices(
        engine=engine, prompts=SilentPrompts(), policy=policy,
        recorder=MemoryRecorder(), run_blocking=lambda fn, *a: loop.run_in_executor(None, fn, *a),
    )
    clock = VirtualClock()
    transport = ReplayTransport(audio, RATE, clock)
    session = CallSession(services, transport, clock, name="test")
    report = await session.run()
    return report, transport, engine


async def test_question_answer_and_goodbye_complete_the_call(policy, speech):
    report, transport, _ = await run_call(policy, 
        call_audio(silence(9), speech, silence(12), speech, silence(6)),
        ["what are your opening hours", "no thanks goodbye"],
    )
    assert report.outcome == "completed"
    assert report.intents == ["opening_hours"]
    caller = [t for t in report.turns if t.speaker == "caller"]
    assert [t.intent for t in caller] == ["opening_hours", "goodbye"]
    assert caller[0].start_s == pytest.approx(9.0, abs=0.35)
    question, goodbye = report.latency_ms
    assert question < 400, "a question the matcher is sure of is answered at the first pause"
    assert 500 <= goodbye <= 1500, "a goodbye waits out the end-of-turn silence"
    assert transport.ended_by == "bot"


async def test_a_caller_who_goes_on_after_an_answer_at_a_pause_has_the_whole_turn_answered_instead(policy, speech):
    loud = np.flatnonzero(np.abs(speech) > 500)
    voiced = speech[loud[0]: loud[-1]]
    report, _, _ = await run_call(policy, call_audio(silence(9), voiced, silence(0.35), voiced, silence(12)),
                                  ["where is the service point", "where is the service point i want to appeal a decision"])
    caller = [t for t in report.turns if t.speaker == "caller"]
    assert [(t.text, t.intent) for t in caller] == [
        ("where is the service point i want to appeal a decision", "complex_case")]
    assert caller[0].start_s == pytest.approx(9.0, abs=0.35)
    taken_back = report.turns[2]
    assert taken_back.speaker == "bot" and taken_back.text.startswith("Several service points") and taken_back.interrupted
    assert report.intents == ["complex_case"]
    assert report.outcome == "transferred" and report.transfer.reason == "complex_case"
    assert len(report.latency_ms) == 1


async def test_caller_speech_cuts_an_interruptible_prompt(policy, speech):
    report, _, _ = await run_call(policy, call_audio(silence(1.0), speech, silence(8)), ["agent"])
    welcome = report.turns[0]
    assert welcome.speaker == "bot" and welcome.interrupted
    assert welcome.end_s == pytest.approx(1.0, abs=0.35)
    assert report.outcome == "transferred" and report.transfer.reason == "caller_request"


async def test_three_silences_end_the_call_politely(policy):
    report, _, _ = await run_call(policy, silence(60), [])
    bot = [t.text for t in report.turns if t.speaker == "bot"]
    assert report.outcome == "completed"
    assert bot[-1].startswith("I still cannot hear you")
    assert sum(t.startswith("Sorry, I did not hear") for t in bot) == 2


#: a whole intake up to the read-back, then "yes" and "goodbye"
INTAKE_SCRIPT = ["housing allowance please", "two nine zero two eight eight dash one three six d",
                 "zero zero one eight zero", "seven hundred and ten", "three", "yes", "goodbye"]


def intake_audio(speech: np.ndarray, *after_household_size: np.ndarray) -> np.ndarray:
    """The caller's side of INTAKE_SCRIPT: four answers, then "three" and what follows it."""
    audio = [silence(9)]
    for _ in range(4):
        audio += [speech, silence(12)]
    return call_audio(*audio, speech, *after_household_size)


async def test_speech_during_the_read_back_is_answered_after_it(policy, speech):
    # "three", then "yes" 4 s into the read-back, then "goodbye" long after
    audio = intake_audio(speech, silence(4), speech, silence(30), speech, silence(8))
    report, _, _ = await run_call(policy, audio, INTAKE_SCRIPT)
    readback = next(t for t in report.turns if t.speaker == "bot" and t.text.startswith("Let me read"))
    yes_turn = next(t for t in report.turns if t.speaker == "caller" and t.text == "yes")
    assert not readback.interrupted
    assert yes_turn.start_s < readback.end_s
    assert report.intake.status == "submitted"
    assert report.intake.fields == {"personal_id": "290288-136D", "postal_code": "00180",
                                    "monthly_rent": 710, "household_size": 3}


async def test_words_said_during_the_read_back_are_answered_before_words_said_after_it(policy, speech):
    """On a live line the read-back can end (PJSIP's clock plays it out) while the recognizer decodes the
    next utterance: the "yes" heard during it still comes first, and submits the form."""
    audio = intake_audio(speech, silence(4), speech, silence(1.5), speech, silence(8))

    def read_back_ends_while_goodbye_is_decoded(session: CallSession, text: str) -> None:
        if text == "goodbye":
            assert session.speaker.holding_floor
            session.speaker.pull(60 * RATE, 0.0)

    report, _, _ = await run_call(policy, audio, INTAKE_SCRIPT, read_back_ends_while_goodbye_is_decoded)
    caller = [t.text for t in report.turns if t.speaker == "caller"]
    assert caller[-2:] == ["yes", "goodbye"]
    assert report.intake.status == "submitted"


async def test_words_still_being_spoken_at_hangup_are_not_lost(policy, speech):
    report, _, _ = await run_call(policy, 
        call_audio(silence(9), speech, silence(12), speech[: len(speech) * 9 // 10]),
        ["housing allowance please", "two nine zero two eight eight dash one three six d"],
    )
    assert report.outcome == "abandoned"
    assert report.intake.status == "incomplete"
    assert report.intake.fields == {"personal_id": "290288-136D"}


async def test_in_band_zero_key_transfers_to_a_person(policy):
    report, _, _ = await run_call(policy, call_audio(silence(3), tone((941, 1336)), silence(6)), [])
    assert report.outcome == "transferred"
    assert report.transfer.reason == "caller_request"
    assert any(t.text == "[DTMF 0]" for t in report.turns)


async def test_each_state_sets_its_grammar_and_asks_for_partials_only_where_an_answer_can_be_complete(policy, speech):
    _, _, engine = await run_call(policy, 
        call_audio(silence(9), speech, silence(12), speech, silence(12), speech, silence(3)),
        ["housing allowance please", "two nine zero two eight eight dash one three six d", "zero zero one eight zero"],
    )
    assert engine.log == ["grammar:None without partials", "grammar:personal_id", "grammar:postal_code"]


async def test_bot_channel_lines_up_with_the_caller_channel(policy, speech):
    _, transport, _ = await run_call(policy, call_audio(silence(12), speech, silence(3)), ["goodbye"])
    stereo = transport.stereo()
    assert stereo.shape[1] == 2
    assert stereo.shape[0] >= len(silence(12)) + len(speech)
