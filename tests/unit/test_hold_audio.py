"""The hold loop and how the speaker plays it under prompts."""

from __future__ import annotations

import numpy as np

from voicebot.calls.hold import HOLD_LEVEL_DBFS, HOLD_LOOP_S, HoldAudio, hold_loop
from voicebot.calls.speaker import PlayoutIdle, PromptEnded, Speaker
from voicebot.events import Say

RATE = 8000
FRAME = RATE // 50


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def test_the_hold_loop_is_quiet_and_in_the_telephone_band():
    x = samples(hold_loop(RATE))
    assert len(x) == HOLD_LOOP_S * RATE
    level_dbfs = 20 * np.log10(np.sqrt(np.mean(x ** 2)) / 32767)
    assert abs(level_dbfs - HOLD_LEVEL_DBFS) < 0.5
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs_hz = np.fft.rfftfreq(len(x), 1 / RATE)
    in_band = spectrum[(freqs_hz >= 300) & (freqs_hz <= 3400)].sum()
    assert in_band / spectrum.sum() > 0.95


def test_the_hold_loop_joins_its_end_to_its_start_without_a_click():
    x = samples(hold_loop(RATE))
    steps = np.abs(np.diff(x))
    assert abs(x[0] - x[-1]) <= 3 * steps.max() / 4 + 1  # no larger than the loop's own steepest step


def test_hold_audio_is_made_once_per_rate():
    audio = HoldAudio()
    assert audio.render(RATE) is audio.render(RATE)
    assert len(audio.render(16000)) == 2 * len(audio.render(RATE))


def test_hold_plays_when_no_prompt_is_queued_and_the_speaker_is_not_busy():
    speaker = Speaker(RATE, lambda ev: None)
    loop = hold_loop(RATE)
    speaker.hold(loop)
    assert not speaker.busy and speaker.holding
    assert speaker.pull(FRAME, 0.0) == loop[:2 * FRAME]


def test_a_prompt_pre_empts_hold_audio_which_resumes_where_it_was():
    events = []
    speaker = Speaker(RATE, events.append)
    loop = hold_loop(RATE)
    speaker.hold(loop)
    speaker.pull(FRAME, 0.0)
    prompt = bytes([1, 0]) * FRAME
    speaker.queue(Say("You are number 2 in the queue."), prompt)
    assert speaker.pull(FRAME, 0.02) == prompt
    assert any(isinstance(ev, PlayoutIdle) for ev in events)
    assert speaker.pull(FRAME, 0.04) == loop[2 * FRAME:4 * FRAME]


def test_caller_speech_stops_the_hold_audio_like_a_prompt():
    events = []
    speaker = Speaker(RATE, events.append)
    speaker.hold(hold_loop(RATE))
    speaker.queue(Say("You are next in the queue."), bytes(4 * FRAME))
    speaker.pull(FRAME, 0.0)
    speaker.barge_in(0.02)
    assert not speaker.holding
    assert speaker.pull(FRAME, 0.04) == bytes(2 * FRAME)
    assert any(isinstance(ev, PromptEnded) and ev.interrupted for ev in events)


def test_the_end_of_the_call_stops_the_hold_audio():
    speaker = Speaker(RATE, lambda ev: None)
    speaker.hold(hold_loop(RATE))
    speaker.stop(1.0)
    assert speaker.pull(FRAME, 1.0) == bytes(2 * FRAME)
