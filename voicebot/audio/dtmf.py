"""In-band DTMF detection for callers whose key presses arrive as audio.

SIP phones usually send keys out of band (RFC 4733), but a call through an
analogue line, a recording or a sound card carries them only as tones. The
detector measures the eight DTMF frequencies (a Goertzel/DFT at exactly those
frequencies) on 20 ms windows every 10 ms, and accepts a window only when both a
row and a column tone are clearly present: each strong enough, each the clear
peak of its group, within the twist limits, and together holding most of the
window's power (speech spreads its power over many harmonics, so it fails the
last test). A key is reported once, when it has
lasted about 40 ms; it must pause 30-40 ms before the same key counts again
(shorter breaks are bridged).
"""

from __future__ import annotations

import numpy as np

from voicebot.events import BYTES_PER_SAMPLE, DtmfTone

ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COL_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*0#D")

WINDOW_MS = 20
HOP_MS = 10
# consecutive valid windows (10 ms apart) before a key counts: ~40 ms of tone
ON_WINDOWS = 3
# consecutive windows without the key before it is over: a pause of 30-40 ms
OFF_WINDOWS = 3

MIN_TONE_DBFS = -38.0  # RMS level of each tone (about -35 dBm0)
NORMAL_TWIST_DB = 8.0  # row (low) tone louder than the column tone by at most this
REVERSE_TWIST_DB = 6.0  # column (high) tone louder than the row tone by at most this
RELATIVE_PEAK_DB = 6.0  # the chosen tone beats the other tones of its group by this
# the two tones hold at least this share of the window's power; this is also what
# rejects tones detuned by 2% or more (Q.24: accept within 1.5%, reject beyond 3.5%)
MIN_TONE_SHARE = 0.60

_FULL_SCALE_POWER = 32768.0**2


class DtmfDetector:
    """Streaming detector: feed consecutive pcm chunks, get each key press once.

    The audio is cut into 10 ms halves; each half is projected once (one matrix
    product) onto the eight frequencies' cosines and sines, both as a window's
    first and as its second half, and a 20 ms window's projections are the sum
    of its two halves'. So every sample is touched once per frame.
    """

    def __init__(self, sample_rate_hz: int = 16000) -> None:
        if sample_rate_hz < 4000 or sample_rate_hz * HOP_MS % 1000:
            raise ValueError(f"DTMF needs a rate of at least 4000 Hz in whole samples per 10 ms, got {sample_rate_hz}")
        self.sample_rate_hz = sample_rate_hz
        self._half = sample_rate_hz * HOP_MS // 1000
        self._window = 2 * self._half
        n = np.arange(self._window)
        phase = 2.0 * np.pi * np.outer(n, np.array(ROW_HZ + COL_HZ)) / sample_rate_hz
        full_basis = np.concatenate([np.cos(phase), np.sin(phase)], axis=1)  # (window, 16)
        # a half's projections as the first and as the second half of a window: (half, 32)
        self._basis = np.concatenate([full_basis[: self._half], full_basis[self._half :]], axis=1)
        # |DFT|**2 of a window to the mean power of that sinusoid: 2 / N**2
        self._power_scale = 2.0 / self._window**2
        self._min_tone_power = 10.0 ** (MIN_TONE_DBFS / 10.0) * _FULL_SCALE_POWER
        self._normal_twist = 10.0 ** (NORMAL_TWIST_DB / 10.0)
        self._reverse_twist = 10.0 ** (REVERSE_TWIST_DB / 10.0)
        self._relative_peak = 10.0 ** (RELATIVE_PEAK_DB / 10.0)
        # the last whole half already analysed, then samples short of a whole half
        self._tail = np.zeros(self._half, dtype=np.float64)
        self._candidate: str | None = None
        self._candidate_windows = 0
        self._candidate_start_s = 0.0
        self._active: str | None = None
        self._off_windows = 0
        self._last_window_valid = False

    @property
    def tone_active(self) -> bool:
        """A key tone is sounding now (or has only just stopped): the audio is not speech."""
        return self._active is not None or self._last_window_valid

    def process(self, pcm: bytes, start_s: float) -> list[DtmfTone]:
        """Feed int16 LE mono pcm that starts at ``start_s``; returns keys that began in it."""
        if len(pcm) % BYTES_PER_SAMPLE:
            raise ValueError(f"pcm holds {len(pcm)} bytes, not a whole number of int16 samples")
        fresh = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        samples = np.concatenate([self._tail, fresh])
        first_start_s = start_s - len(self._tail) / self.sample_rate_hz
        halves_count = len(samples) // self._half
        self._tail = samples[(halves_count - 1) * self._half :].copy()
        if halves_count < 2:
            return []
        halves = samples[: halves_count * self._half].reshape(halves_count, self._half)
        energies = np.einsum("ij,ij->i", halves, halves)
        total_powers = ((energies[:-1] + energies[1:]) / self._window).tolist()
        if max(total_powers) < self._min_tone_power:
            # too quiet for two tones each at the minimum level (most of a call: the caller listening)
            for _ in total_powers:
                self._step(None, first_start_s)
            return []
        projections = halves @ self._basis
        # window i = half i followed by half i + 1: cos and sin sums of the 8 frequencies
        windows = projections[:-1, :16] + projections[1:, 16:]
        squares = windows * windows
        tone_powers = ((squares[:, :8] + squares[:, 8:]) * self._power_scale).tolist()
        tones: list[DtmfTone] = []
        for index, (powers, total) in enumerate(zip(tone_powers, total_powers, strict=True)):
            window_start_s = first_start_s + index * self._half / self.sample_rate_hz
            tone = self._step(self._classify(powers, total), window_start_s)
            if tone is not None:
                tones.append(tone)
        return tones

    def _classify(self, powers: list[float], total_power: float) -> str | None:
        """The key a window holds, or None; ``powers`` are the 4 row then 4 column tone powers."""
        rows, cols = powers[:4], powers[4:]
        *_, row_second, row_power = sorted(rows)
        *_, col_second, col_power = sorted(cols)
        if row_power < self._min_tone_power or col_power < self._min_tone_power:
            return None
        if row_power > col_power * self._normal_twist or col_power > row_power * self._reverse_twist:
            return None
        if row_power + col_power < MIN_TONE_SHARE * total_power:
            return None
        if row_second * self._relative_peak > row_power or col_second * self._relative_peak > col_power:
            return None
        row, col = rows.index(row_power), cols.index(col_power)
        return KEYS[row][col]

    def _step(self, digit: str | None, window_start_s: float) -> DtmfTone | None:
        """Debounce one window's result; returns a key when a press is confirmed."""
        self._last_window_valid = digit is not None
        if digit is None:
            self._candidate, self._candidate_windows = None, 0
        elif digit == self._candidate:
            self._candidate_windows += 1
        else:
            self._candidate, self._candidate_windows, self._candidate_start_s = digit, 1, window_start_s
        if self._active is not None:
            if digit == self._active:
                self._off_windows = 0
                return None
            self._off_windows += 1
            if self._off_windows < OFF_WINDOWS:
                return None
            self._active = None
        if self._candidate is not None and self._candidate_windows >= ON_WINDOWS:
            self._active, self._off_windows = self._candidate, 0
            return DtmfTone(digit=self._candidate, start_s=self._candidate_start_s)
        return None
