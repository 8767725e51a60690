"""The listener ends a turn early once the answer is complete, and never loses the last words."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import numpy as np
import pytest

from voicebot.asr.base import Recognition
from voicebot.audio.wav import iter_frames, load_wav
from voicebot.calls.listener import Completeness, Listener, ListenerConfig
from voicebot.dialogue.spoken import is_complete
from voicebot.events import Alternative, AudioFrame, Listen, SpeechStarted, Utterance

RATE = 16000
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make test installs it)")


class PartialStream:
    """Says the answer is "zero zero one eight zero" as soon as any speech was fed."""

    def __init__(self) -> None:
        self.fed = 0
        self.fed_total = 0
        self.finished = 0

    def set_grammar(self, grammar, *, partials=True):
        pass

    def accept(self, pcm: bytes) -> None:
        self.fed += len(pcm)
        self.fed_total += len(pcm)

    def partial(self) -> str:
        return "zero zero one eight zero" if self.fed else ""

    def finish(self) -> Recognition:
        self.finished += 1
        self.fed = 0
        return Recognition((Alternative("zero zero one eight zero", 0.8),))

    def close(self):
        pass


class TooSoonStream(PartialStream):
    """The partial looks like a whole postal code, but the first decode of a turn has one digit less."""

    def __init__(self) -> None:
        super().__init__()
        self.fed_at_finish: list[int] = []

    def finish(self) -> Recognition:
        self.fed_at_finish.append(self.fed)
        text = "zero zero one eight" if self.finished == 0 else "zero zero one eight zero"
        super().finish()
        return Recognition((Alternative(text, 0.8),))


def espeak(tmp_path_factory, text: str) -> np.ndarray:
    path = tmp_path_factory.mktemp("u") / "u.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True)
    audio = load_wav(path, sample_rate_hz=RATE).samples
    loud = np.flatnonzero(np.abs(audio) > 500)
    return audio[loud[0]: loud[-1]]


@pytest.fixture(scope="module")
def utterance(tmp_path_factory) -> np.ndarray:
    path = tmp_path_factory.mktemp("u") / "u.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), "zero zero one eight zero"], check=True)
    audio = load_wav(path, sample_rate_hz=RATE).samples
    return np.concatenate([np.zeros(RATE, np.int16), audio, np.zeros(2 * RATE, np.int16)])


async def listen(audio: np.ndarray, expect: Listen, *, hang_up_at_s: float | None = None,
                 stream: PartialStream | None = None, completeness: Completeness = is_complete):
    loop = asyncio.get_running_loop()
    stream = stream or PartialStream()
    listener = Listener(stream, RATE, lambda fn, *a: loop.run_in_executor(None, fn, *a), completeness,
                        ListenerConfig())
    listener.expect(expect)
    events, decided_at = [], None
    for start_s, pcm in iter_frames(audio, RATE):
        if hang_up_at_s is not None and start_s >= hang_up_at_s:
            events += await listener.flush(start_s)
            decided_at = decided_at or start_s
            break
        new = await listener.on_frame(AudioFrame(pcm, RATE, start_s))
        if any(isinstance(e, Utterance) for e in new):
            decided_at = start_s + 0.02
        events += new
    return events, decided_at, stream


async def test_open_speech_waits_for_the_end_of_turn_silence(utterance):
    events, decided_at, _ = await listen(utterance, Listen("menu"))
    utt = next(e for e in events if isinstance(e, Utterance))
    assert decided_at - utt.end_s == pytest.approx(0.5, abs=0.05)


async def test_a_complete_postal_code_ends_the_turn_without_waiting(utterance):
    events, decided_at, _ = await listen(utterance, Listen("postal_code", complete="postal_code"))
    utt = next(e for e in events if isinstance(e, Utterance))
    assert utt.text == "zero zero one eight zero"
    assert decided_at - utt.end_s < 0.3


async def test_speech_in_progress_at_hangup_is_still_recognised(utterance):
    events, _, stream = await listen(utterance, Listen("menu"), hang_up_at_s=1.6)
    assert [type(e) for e in events] == [SpeechStarted, Utterance]
    assert stream.finished == 1


async def test_the_recognizer_hears_pauses_inside_a_turn_but_only_the_start_of_the_silence_that_ends_it(utterance):
    loud = np.flatnonzero(np.abs(utterance) > 500)
    voiced = utterance[loud[0]: loud[-1]]
    config = ListenerConfig()
    # shorter than the pause the turn is decoded at (see the decode-ahead tests below)
    pause = np.zeros(int((config.ahead_silence_ms - 50) / 1000 * RATE), np.int16)
    audio = np.concatenate([np.zeros(RATE, np.int16), voiced, pause, voiced, np.zeros(2 * RATE, np.int16)])
    events, _, stream = await listen(audio, Listen("menu"))
    utt = next(e for e in events if isinstance(e, Utterance))
    assert utt.end_s - utt.start_s > 2 * len(voiced) / RATE, "one utterance over the pause"
    heard_s = stream.fed_total / 2 / RATE
    expected_s = (config.endpointer.pre_roll_ms + config.trailing_silence_ms) / 1000 + utt.end_s - utt.start_s
    assert heard_s == pytest.approx(expected_s, abs=0.045)


@pytest.mark.parametrize("pause_s", [0.2, 0.4])
async def test_a_caller_who_goes_on_after_an_answer_that_only_looked_complete_is_heard_as_one_turn(
        tmp_path_factory, pause_s):
    first, last = espeak(tmp_path_factory, "zero zero one eight"), espeak(tmp_path_factory, "zero")
    audio = np.concatenate([np.zeros(RATE, np.int16), first, np.zeros(int(pause_s * RATE), np.int16), last,
                            np.zeros(2 * RATE, np.int16)])
    stream = TooSoonStream()
    events, _, _ = await listen(audio, Listen("postal_code", complete="postal_code"), stream=stream)
    [utt] = [e for e in events if isinstance(e, Utterance)]
    assert utt.text == "zero zero one eight zero"
    assert utt.start_s == pytest.approx(1.0, abs=0.05)
    assert utt.end_s > 1.0 + (len(first) + len(last)) / RATE + pause_s - 0.05
    # the second decode heard the whole turn, pause included, once
    whole = (len(first) + len(last)) * 2 + int(pause_s * RATE) * 2
    assert whole <= stream.fed_at_finish[1] <= whole + RATE * 2 * 0.7


async def test_an_answer_that_only_looked_complete_is_the_callers_turn_when_they_say_no_more(tmp_path_factory):
    first = espeak(tmp_path_factory, "zero zero one eight")
    audio = np.concatenate([np.zeros(RATE, np.int16), first, np.zeros(2 * RATE, np.int16)])
    events, decided_at, stream = await listen(audio, Listen("postal_code", complete="postal_code"),
                                              stream=TooSoonStream())
    [utt] = [e for e in events if isinstance(e, Utterance)]
    assert utt.text == "zero zero one eight"
    assert stream.finished == 1
    assert decided_at - utt.end_s == pytest.approx(0.5, abs=0.05)


async def test_a_turn_is_decoded_once_the_recognizer_has_its_silence_while_the_endpointer_still_waits(
        tmp_path_factory):
    words = espeak(tmp_path_factory, "opening hours please")
    audio = np.concatenate([np.zeros(RATE, np.int16), words, np.zeros(2 * RATE, np.int16)])
    loop = asyncio.get_running_loop()
    stream = PartialStream()
    listener = Listener(stream, RATE, lambda fn, *a: loop.run_in_executor(None, fn, *a), is_complete)
    decoded_at_s = None
    utterances = []
    for start_s, pcm in iter_frames(audio, RATE):
        utterances += [e for e in await listener.on_frame(AudioFrame(pcm, RATE, start_s)) if isinstance(e, Utterance)]
        if stream.finished and decoded_at_s is None:
            decoded_at_s = start_s + 0.02
    [utt] = utterances
    config = ListenerConfig()
    assert decoded_at_s - utt.end_s == pytest.approx(config.ahead_silence_ms / 1000, abs=0.03)
    assert stream.finished == 1


@pytest.mark.parametrize("pause_s", [0.35, 0.45])
async def test_a_caller_who_goes_on_after_the_turn_was_decoded_ahead_is_heard_as_one_turn(tmp_path_factory, pause_s):
    first, last = espeak(tmp_path_factory, "where is the nearest"), espeak(tmp_path_factory, "service point")
    pause = np.zeros(int(pause_s * RATE), np.int16)
    audio = np.concatenate([np.zeros(RATE, np.int16), first, pause, last, np.zeros(2 * RATE, np.int16)])
    stream = TooSoonStream()
    events, _, _ = await listen(audio, Listen("menu"), stream=stream)
    [utt] = [e for e in events if isinstance(e, Utterance)]
    assert utt.end_s - utt.start_s > (len(first) + len(last)) / RATE + pause_s - 0.05
    # decoded ahead at the pause, then the whole turn again: from its start, pause included, once
    assert stream.finished == 2
    config = ListenerConfig()
    heard_again_s = stream.fed_at_finish[1] / 2 / RATE
    assert heard_again_s == pytest.approx(
        (config.endpointer.pre_roll_ms + config.trailing_silence_ms) / 1000 + utt.end_s - utt.start_s, abs=0.045)


#: the menu, where a question sure enough at a pause is answered there
QUESTION = Listen("menu", complete="question", complete_in_pause=True)


def sure(kind: str, text: str) -> bool:
    return kind == "question" and bool(text)


def unsure(kind: str, text: str) -> bool:
    return False


@pytest.mark.parametrize(("completeness", "waited_s"), [
    (sure, ListenerConfig().ahead_silence_ms / 1000),
    (unsure, ListenerConfig().endpointer.end_silence_ms / 1000),
])
async def test_a_question_sure_at_a_pause_is_answered_there_and_any_other_waits_out_the_silence(
        utterance, completeness, waited_s):
    events, decided_at, stream = await listen(utterance, QUESTION, completeness=completeness)
    [utt] = [e for e in events if isinstance(e, Utterance)]
    assert decided_at - utt.end_s == pytest.approx(waited_s, abs=0.03)
    assert not utt.continues
    assert stream.finished == 1


async def test_a_caller_who_goes_on_after_a_question_answered_at_a_pause_continues_that_turn(tmp_path_factory):
    first, last = espeak(tmp_path_factory, "where is the nearest"), espeak(tmp_path_factory, "service point")
    pause = np.zeros(int(0.35 * RATE), np.int16)
    audio = np.concatenate([np.zeros(RATE, np.int16), first, pause, last, np.zeros(2 * RATE, np.int16)])
    stream = TooSoonStream()
    events, _, _ = await listen(audio, QUESTION, stream=stream, completeness=sure)
    answered, whole = [e for e in events if isinstance(e, Utterance)]
    assert not answered.continues and answered.end_s < 1.0 + len(first) / RATE + 0.05
    assert whole.continues
    assert whole.start_s == answered.start_s
    assert whole.end_s > 1.0 + (len(first) + len(last)) / RATE + 0.35 - 0.05
    # the whole turn decoded again from its start, pause included
    config = ListenerConfig()
    heard_again_s = stream.fed_at_finish[1] / 2 / RATE
    assert heard_again_s == pytest.approx(
        (config.endpointer.pre_roll_ms + config.trailing_silence_ms) / 1000 + whole.end_s - whole.start_s, abs=0.045)


async def test_words_after_the_silence_would_have_ended_the_turn_are_a_new_turn(tmp_path_factory):
    first, last = espeak(tmp_path_factory, "where is the nearest"), espeak(tmp_path_factory, "service point")
    pause_s = ListenerConfig().endpointer.end_silence_ms / 1000 + 0.1
    audio = np.concatenate([np.zeros(RATE, np.int16), first, np.zeros(int(pause_s * RATE), np.int16), last,
                            np.zeros(2 * RATE, np.int16)])
    events, _, _ = await listen(audio, QUESTION, stream=TooSoonStream(), completeness=sure)
    answered, new = [e for e in events if isinstance(e, Utterance)]
    assert not new.continues
    assert new.start_s > answered.end_s + pause_s - 0.05
