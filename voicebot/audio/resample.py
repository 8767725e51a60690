"""Sample-rate conversion with libsoxr, whole signals or a stream of frames.

Samples are int16 (or float with full scale +-1.0 on input); the output is always
int16, clipped rather than wrapped.
"""

from __future__ import annotations

import numpy as np
import soxr

from voicebot.events import BYTES_PER_SAMPLE

# libsoxr quality recipes: "HQ" is transparent for speech; "QQ" (cubic) has no
# internal buffering but weak anti-aliasing. See StreamResampler for the trade-off.
DEFAULT_QUALITY = "HQ"


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float full scale +-1.0 to int16: louder samples are clipped, NaN becomes silence."""
    if samples.dtype == np.int16:
        return samples
    if np.issubdtype(samples.dtype, np.integer):
        return np.clip(samples, -32768, 32767).astype(np.int16)
    scaled = np.nan_to_num(samples.astype(np.float64), nan=0.0, posinf=1.0, neginf=-1.0) * 32768.0
    return np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)


def resample(samples: np.ndarray, from_hz: int, to_hz: int, quality: str = DEFAULT_QUALITY) -> np.ndarray:
    """Convert a whole mono signal from ``from_hz`` to ``to_hz``; returns int16."""
    if from_hz <= 0 or to_hz <= 0:
        raise ValueError(f"sample rates must be positive, got {from_hz} -> {to_hz}")
    data = np.asarray(samples)
    if data.ndim != 1:
        raise ValueError(f"resample wants a 1-D signal, got shape {data.shape}")
    if from_hz == to_hz or len(data) == 0:
        return to_int16(data)
    if data.dtype == np.int16:
        return soxr.resample(data, from_hz, to_hz, quality=quality)
    return to_int16(soxr.resample(data.astype(np.float32), from_hz, to_hz, quality=quality))


class StreamResampler:
    """Resample a call's audio frame by frame (SIP 8 kHz <-> 16 kHz, sound card 48 kHz -> 16 kHz).

    libsoxr works in blocks: with "HQ" it returns nothing for a few frames and then
    about 100 ms at once, so a consumer that must emit one frame per tick keeps a
    small buffer (or picks quality "QQ", which returns every frame at once at the
    cost of some aliasing). ``process`` returns whatever is ready; ``flush`` drains
    the rest at the end of the call. Over a whole stream the output length is
    ``len(input) * to_hz / from_hz``, with the filter delay compensated.
    """

    def __init__(self, from_hz: int, to_hz: int, quality: str = DEFAULT_QUALITY) -> None:
        if from_hz <= 0 or to_hz <= 0:
            raise ValueError(f"sample rates must be positive, got {from_hz} -> {to_hz}")
        self.from_hz = from_hz
        self.to_hz = to_hz
        self._stream = (
            None if from_hz == to_hz else soxr.ResampleStream(from_hz, to_hz, 1, dtype="int16", quality=quality)
        )

    def process(self, pcm: bytes) -> bytes:
        """Feed int16 LE mono pcm at ``from_hz``; get the int16 LE pcm at ``to_hz`` ready so far."""
        if len(pcm) % BYTES_PER_SAMPLE:
            raise ValueError(f"pcm holds {len(pcm)} bytes, not a whole number of int16 samples")
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        return self._stream.resample_chunk(samples).astype("<i2", copy=False).tobytes()

    def flush(self) -> bytes:
        """The rest of the output, once no more input will come."""
        if self._stream is None:
            return b""
        return self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True).astype("<i2", copy=False).tobytes()
