"""Endpointing: where a caller's utterance starts and where it ends.

webrtcvad alone calls steady background noise (fans, traffic, line hiss: pink
noise) "speech" most of the time once it is louder than about -30 dBFS, and its
built-in hangover keeps deciding "speech" for a while after a click. So a frame
counts as voiced only when webrtcvad says speech *and* the frame's power above
150 Hz is clearly above the recent noise floor (an adaptive energy gate: the
quietest frame of the last two seconds; rumble below 150 Hz is left out because
it swings too much to gate on). Steady noise never rises far above its own
floor; speech does. The gate also makes utterance ends precise, since it cuts
webrtcvad's hangover frames.

Feed one 20 ms frame at a time. Typical use in the listener, per frame::

    tones = dtmf.process(pcm, start_s)
    endpointer.suspend(dtmf.tone_active)   # a key tone is not speech
    for event in endpointer.process(pcm, start_s): ...
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from voicebot.events import BYTES_PER_SAMPLE, FRAME_MS

_FULL_SCALE_POWER = 32768.0**2


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """An utterance began at ``at_s``; ``pcm`` is the audio from the pre-roll up to now."""

    at_s: float
    pcm: bytes


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    """One more frame of the utterance in progress (voiced or the pauses inside it)."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    """The utterance is over: ``at_s`` ends its last voiced frame, ``endpoint_s`` is when that was decided."""

    at_s: float
    endpoint_s: float


EndpointEvent = SpeechStart | SpeechAudio | SpeechEnd


@dataclass(frozen=True, slots=True)
class EndpointerConfig:
    """Tuning of the endpointer; the defaults suit 16 kHz or 8 kHz telephone speech."""

    aggressiveness: int = 2
    end_silence_ms: int = 500
    min_speech_ms: int = 120
    pre_roll_ms: int = 300
    # an utterance may pause this long between voiced frames and still be one onset
    onset_gap_ms: int = 40
    # the gate ignores power below this, so rumble and hum do not open it
    gate_low_cut_hz: float = 150.0
    # a voiced frame is at least this far above the noise floor ...
    gate_margin_db: float = 9.0
    # ... and louder than this in absolute terms (dBFS)
    gate_min_dbfs: float = -55.0
    # the noise floor is the quietest frame within about this window
    noise_window_ms: int = 2000
    # a turn that never pauses (music on the line) is cut here; None: never
    max_speech_ms: int | None = 30000


class Endpointer:
    """Turns 20 ms frames into SpeechStart / SpeechAudio / SpeechEnd events.

    Pass the common settings as arguments, or a whole ``config`` (which then wins).
    """

    def __init__(
        self,
        sample_rate_hz: int = 16000,
        aggressiveness: int = 2,
        end_silence_ms: int = 500,
        min_speech_ms: int = 120,
        pre_roll_ms: int = 300,
        *,
        config: EndpointerConfig | None = None,
    ) -> None:
        if config is None:
            config = EndpointerConfig(
                aggressiveness=aggressiveness,
                end_silence_ms=end_silence_ms,
                min_speech_ms=min_speech_ms,
                pre_roll_ms=pre_roll_ms,
            )
        if sample_rate_hz not in (8000, 16000, 32000, 48000):
            raise ValueError(f"webrtcvad needs 8000, 16000, 32000 or 48000 Hz, got {sample_rate_hz}")
        self.config = config
        self.sample_rate_hz = sample_rate_hz
        self._frame_bytes = sample_rate_hz * FRAME_MS // 1000 * BYTES_PER_SAMPLE
        self._frame_s = FRAME_MS / 1000
        self._frame_samples = self._frame_bytes // BYTES_PER_SAMPLE
        self._low_basis = _low_band_basis(self._frame_samples, sample_rate_hz, config.gate_low_cut_hz)
        self._vad = webrtcvad.Vad(config.aggressiveness)
        self._floor = _NoiseFloor(config.noise_window_ms // FRAME_MS)
        # frames kept for the pre-roll: the pre-roll itself plus the longest possible onset run
        onset_frames = -(-config.min_speech_ms // FRAME_MS) * (1 + config.onset_gap_ms // FRAME_MS)
        self._recent: deque[tuple[float, bytes]] = deque(maxlen=config.pre_roll_ms // FRAME_MS + onset_frames + 2)
        self._suspended = False
        self._reset()

    def _reset(self) -> None:
        self._in_speech = False
        self._run_start_s: float | None = None  # first voiced frame of a candidate onset
        self._run_voiced_ms = 0
        self._run_gap_ms = 0
        self._speech_start_s = 0.0
        self._last_voiced_end_s = 0.0

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def onset_pending(self) -> bool:
        """Voiced frames that may yet start an utterance, once they last ``min_speech_ms``."""
        return self._run_start_s is not None

    @property
    def last_voiced_end_s(self) -> float:
        """End of the latest voiced frame of the utterance in progress."""
        return self._last_voiced_end_s

    def suspend(self, on: bool) -> None:
        """While on, frames count as unvoiced (the DTMF detector hears a key tone)."""
        self._suspended = on

    def process(self, pcm: bytes, start_s: float) -> list[EndpointEvent]:
        if len(pcm) != self._frame_bytes:
            raise ValueError(f"expected a {FRAME_MS} ms frame of {self._frame_bytes} bytes, got {len(pcm)}")
        voiced = self._is_voiced(pcm)
        end_s = start_s + self._frame_s
        if self._in_speech:
            return self._continue_speech(pcm, end_s, voiced)
        self._recent.append((start_s, pcm))
        return self._look_for_onset(start_s, end_s, voiced)

    def force_end(self, at_s: float) -> list[EndpointEvent]:
        """The dialogue has the whole answer: end the utterance in progress now."""
        return self.flush(at_s)

    def flush(self, at_s: float) -> list[EndpointEvent]:
        """End any utterance in progress (hangup, end of file); a new one needs a fresh onset."""
        was_in_speech = self._in_speech
        last_voiced_end_s = self._last_voiced_end_s
        self._reset()
        self._recent.clear()
        if not was_in_speech:
            return []
        return [SpeechEnd(at_s=min(last_voiced_end_s, at_s), endpoint_s=at_s)]

    # ------------------------------------------------------------------ internals

    def _level_db(self, pcm: bytes) -> float:
        """Frame power above the low cut, dBFS: all power minus that of the lowest DFT bins (Parseval)."""
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        low = samples @ self._low_basis
        energy = float(samples @ samples) - float(low @ low)
        return 10.0 * math.log10(max(energy, 0.0) / self._frame_samples / _FULL_SCALE_POWER + 1e-12)

    def _is_voiced(self, pcm: bytes) -> bool:
        level_db = self._level_db(pcm)
        floor_db = self._floor.update(level_db)
        if self._suspended:
            return False
        if level_db < self.config.gate_min_dbfs or level_db < floor_db + self.config.gate_margin_db:
            return False
        return self._vad.is_speech(pcm, self.sample_rate_hz)

    def _look_for_onset(self, start_s: float, end_s: float, voiced: bool) -> list[EndpointEvent]:
        cfg = self.config
        if not voiced:
            if self._run_start_s is not None:
                self._run_gap_ms += FRAME_MS
                if self._run_gap_ms > cfg.onset_gap_ms:
                    self._run_start_s = None
            return []
        if self._run_start_s is None:
            self._run_start_s = start_s
            self._run_voiced_ms = 0
        self._run_voiced_ms += FRAME_MS
        self._run_gap_ms = 0
        if self._run_voiced_ms < cfg.min_speech_ms:
            return []
        self._in_speech = True
        self._speech_start_s = self._run_start_s
        self._last_voiced_end_s = end_s
        first_s = self._run_start_s - cfg.pre_roll_ms / 1000 - 1e-6
        pcm = b"".join(frame for frame_start_s, frame in self._recent if frame_start_s >= first_s)
        self._recent.clear()
        self._run_start_s = None
        return [SpeechStart(at_s=self._speech_start_s, pcm=pcm)]

    def _continue_speech(self, pcm: bytes, end_s: float, voiced: bool) -> list[EndpointEvent]:
        cfg = self.config
        if voiced:
            self._last_voiced_end_s = end_s
        events: list[EndpointEvent] = [SpeechAudio(pcm)]
        silence_ms = (end_s - self._last_voiced_end_s) * 1000
        too_long = cfg.max_speech_ms is not None and (end_s - self._speech_start_s) * 1000 >= cfg.max_speech_ms
        if silence_ms >= cfg.end_silence_ms - 1e-6 or too_long:
            events.append(SpeechEnd(at_s=self._last_voiced_end_s, endpoint_s=end_s))
            self._reset()
        return events


class _NoiseFloor:
    """The minimum frame level over roughly the last ``window_frames`` frames.

    Kept as minima of ten-frame blocks, so each update costs a handful of comparisons.
    """

    _BLOCK = 10

    def __init__(self, window_frames: int) -> None:
        self._blocks: deque[float] = deque(maxlen=max(1, window_frames // self._BLOCK))
        self._current = math.inf
        self._count = 0

    def update(self, level_db: float) -> float:
        """Add a frame's level; returns the floor including it."""
        self._current = min(self._current, level_db)
        self._count += 1
        floor = min(self._current, min(self._blocks, default=math.inf))
        if self._count == self._BLOCK:
            self._blocks.append(self._current)
            self._current, self._count = math.inf, 0
        return floor


def _low_band_basis(frame_samples: int, sample_rate_hz: int, low_cut_hz: float) -> np.ndarray:
    """Columns whose projections hold the frame energy of the DFT bins below ``low_cut_hz``.

    With a frame x of N samples, ``|x @ basis|**2`` equals the energy of those bins,
    so subtracting it from ``x @ x`` leaves the energy above the cut.
    """
    n = np.arange(frame_samples)
    bin_hz = sample_rate_hz / frame_samples
    columns = [np.full(frame_samples, 1.0 / math.sqrt(frame_samples))]  # DC
    for k in range(1, frame_samples // 2):
        if k * bin_hz >= low_cut_hz:
            break
        phase = 2.0 * np.pi * k * n / frame_samples
        columns += [np.cos(phase) * math.sqrt(2.0 / frame_samples), np.sin(phase) * math.sqrt(2.0 / frame_samples)]
    return np.stack(columns, axis=1).astype(np.float32)
