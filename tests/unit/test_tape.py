"""The stereo recording of a live call keeps caller and bot aligned by their clock times."""

from __future__ import annotations

import numpy as np

from voicebot.calls.tape import CallTape

RATE_HZ = 16000
FRAME = RATE_HZ // 50


def tone(value: int) -> bytes:
    return np.full(FRAME, value, np.int16).tobytes()


def test_chunks_land_at_their_own_times_even_after_a_late_tick():
    tape = CallTape(RATE_HZ)
    tape.caller(tone(100), 0.0)
    tape.caller(tone(200), 0.02)
    tape.bot(tone(7), 0.0)
    tape.bot(tone(9), 0.10)  # the media clock came late: a gap, not a shift
    out = tape.stereo()
    assert out.shape == (int(0.12 * RATE_HZ), 2)
    assert out[0, 0] == 100 and out[FRAME, 0] == 200 and out[2 * FRAME, 0] == 0
    assert out[0, 1] == 7 and out[FRAME, 1] == 0 and out[5 * FRAME, 1] == 9


def test_an_empty_call_is_an_empty_recording():
    assert CallTape(RATE_HZ).stereo().shape == (0, 2)
