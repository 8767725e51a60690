"""The hold loop: soft chimes a waiting caller hears between queue announcements.

Generated, not downloaded: no licence to track, any sample rate, and it is
plainly not a voice (slow sine-bell arpeggios over four chords, well inside
the telephone band and quiet), so nobody waits for it to say something. The
loop is seamless: note tails that run past the end are folded back to the start.
"""

from __future__ import annotations

import threading

import numpy as np

#: the loop's length; four two-second chords
HOLD_LOOP_S = 8.0
#: RMS level of the loop, well below the prompts' level
HOLD_LEVEL_DBFS = -30.0
#: each chord's notes (Hz), arpeggiated upwards: Cmaj7, Am7, Fmaj7, G6 around middle C
_CHORDS_HZ = (
    (261.63, 329.63, 392.00, 493.88),
    (220.00, 261.63, 329.63, 392.00),
    (174.61, 220.00, 261.63, 329.63),
    (196.00, 246.94, 293.66, 329.63),
)
_NOTE_DECAY_S = 0.9
_NOTE_ATTACK_S = 0.02


def hold_loop(sample_rate_hz: int, *, level_dbfs: float = HOLD_LEVEL_DBFS) -> bytes:
    """One seamless loop of hold audio, int16 mono PCM at ``sample_rate_hz``."""
    n = int(round(HOLD_LOOP_S * sample_rate_hz))
    out = np.zeros(n, dtype=np.float64)
    chord_s = HOLD_LOOP_S / len(_CHORDS_HZ)
    step_s = chord_s / len(_CHORDS_HZ[0])
    note_n = int(4 * _NOTE_DECAY_S * sample_rate_hz)
    t = np.arange(note_n) / sample_rate_hz
    envelope = np.minimum(t / _NOTE_ATTACK_S, 1.0) * np.exp(-t / _NOTE_DECAY_S)
    for c, chord in enumerate(_CHORDS_HZ):
        for k, freq_hz in enumerate(chord):
            # an octave up, so the notes sit in the phone band; a soft second partial makes a bell
            f = 2 * freq_hz
            note = envelope * (np.sin(2 * np.pi * f * t) + 0.25 * np.sin(2 * np.pi * 2 * f * t))
            start = int(round((c * chord_s + k * step_s) * sample_rate_hz))
            head = min(note_n, n - start)
            out[start:start + head] += note[:head]
            out[:note_n - head] += note[head:]  # the tail wraps round to the loop's start
    rms = float(np.sqrt(np.mean(out ** 2)))
    out *= 32767 * 10 ** (level_dbfs / 20) / rms
    return np.clip(np.round(out), -32768, 32767).astype("<i2").tobytes()


class HoldAudio:
    """The hold loop per sample rate, made once per process (a tenth of a second of numpy) and shared."""

    def __init__(self) -> None:
        self._loops: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def render(self, sample_rate_hz: int) -> bytes:
        """Blocking the first time for a rate: run in an executor."""
        with self._lock:
            if sample_rate_hz not in self._loops:
                self._loops[sample_rate_hz] = hold_loop(sample_rate_hz)
            return self._loops[sample_rate_hz]
