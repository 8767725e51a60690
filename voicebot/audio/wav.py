"""Reading and writing WAV files in the project's internal format (int16 mono).

Decoding is libsndfile's job (through ``soundfile``), resampling is libsoxr's
(through ``resample``). The small RIFF walker here exists only because
libsndfile reads a truncated file without complaint and gives vague messages
for codecs it does not know; a tester deserves to hear "truncated" or
"unsupported format: G.729" instead.
"""

from __future__ import annotations

from voicebot.errors import VoicebotError

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile

from voicebot.audio.resample import resample
from voicebot.events import FRAME_MS

INTERNAL_RATE_HZ = 16000

# Formats libsndfile decodes inside a WAV container (``soundfile.available_subtypes("WAV")``).
SUPPORTED_FORMATS = (
    "PCM 8/16/24/32-bit, 32/64-bit float, G.711 mu-law and A-law, IMA and MS ADPCM, GSM 6.10, G.721, MP3-in-WAV"
)

# WAVE format tags, for naming a codec in an error message.
_FORMAT_TAG_NAMES = {
    0x0001: "PCM",
    0x0002: "MS ADPCM",
    0x0003: "IEEE float",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0014: "G.723 ADPCM",
    0x0022: "DSP Group TrueSpeech",
    0x0031: "GSM 6.10",
    0x0040: "G.721 ADPCM",
    0x0042: "G.723.1",
    0x0045: "G.726 ADPCM",
    0x0050: "MPEG",
    0x0055: "MP3",
    0x0064: "G.726 ADPCM",
    0x0065: "G.722 ADPCM",
    0x0083: "G.729",
    0x00FF: "AAC",
    0x0161: "WMA",
    0x1610: "AAC",
    0x6750: "Vorbis",
    0xA109: "Speex",
    0xA10A: "Opus",
}
_EXTENSIBLE = 0xFFFE
_UNKNOWN_SIZES = (0xFFFFFFFF, 0x7FFFFFFF)  # written by streaming recorders that never finish


class AudioFileError(VoicebotError):
    """A user's audio file cannot be used; the message is one line naming file and reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class LoadedAudio:
    """One channel of a file, as int16 samples at ``sample_rate_hz``."""

    path: str
    samples: np.ndarray
    sample_rate_hz: int
    source_rate_hz: int
    source_channels: int
    source_format: str
    duration_s: float


@dataclass(frozen=True)
class _RiffInfo:
    format_tag: int
    channels: int
    rate_hz: int
    byte_rate: int
    block_align: int
    data_declared_bytes: int | None  # None: the header does not know (streamed file)
    data_available_bytes: int


def load_wav(path: str | os.PathLike[str], *, channel: int = 0, sample_rate_hz: int = INTERNAL_RATE_HZ) -> LoadedAudio:
    """Decode one channel of a WAV file to int16 mono at ``sample_rate_hz``.

    Raises AudioFileError for anything that is not a complete, decodable WAV.
    """
    name = str(path)
    if sample_rate_hz <= 0:
        raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
    riff = _read_riff(name)
    _check_riff(name, riff)
    try:
        with soundfile.SoundFile(name) as sound:
            return _decode(name, sound, channel, sample_rate_hz)
    except soundfile.LibsndfileError as err:
        raise AudioFileError(name, _libsndfile_reason(riff, err)) from None


def _decode(name: str, sound: soundfile.SoundFile, channel: int, sample_rate_hz: int) -> LoadedAudio:
    if sound.frames == 0:
        raise AudioFileError(name, "empty (no audio frames)")
    if not 0 <= channel < sound.channels:
        span = "0" if sound.channels == 1 else f"0-{sound.channels - 1}"
        plural = "channel" if sound.channels == 1 else "channels"
        raise AudioFileError(name, f"channel {channel} requested but the file has {sound.channels} {plural} ({span})")
    # int16 stays int16 (bit-exact when no resampling is needed); anything else goes through float
    dtype = "int16" if sound.subtype == "PCM_16" else "float32"
    # frames given explicitly: libsndfile opens some codecs (GSM 6.10) as not seekable
    picked = np.ascontiguousarray(sound.read(sound.frames, dtype=dtype, always_2d=True)[:, channel])
    if len(picked) == 0:
        raise AudioFileError(name, "empty (no audio frames)")
    samples = resample(picked, sound.samplerate, sample_rate_hz)
    return LoadedAudio(
        path=name,
        samples=samples,
        sample_rate_hz=sample_rate_hz,
        source_rate_hz=sound.samplerate,
        source_channels=sound.channels,
        source_format=sound.subtype,
        duration_s=len(samples) / sample_rate_hz,
    )


def _read_riff(name: str) -> _RiffInfo:
    try:
        with open(name, "rb") as handle:
            return _parse_riff(name, handle, os.fstat(handle.fileno()).st_size)
    except FileNotFoundError:
        raise AudioFileError(name, "no such file") from None
    except IsADirectoryError:
        raise AudioFileError(name, "is a directory, not a WAV file") from None
    except PermissionError:
        raise AudioFileError(name, "permission denied") from None
    except OSError as err:
        raise AudioFileError(name, f"cannot read ({err.strerror or err})") from None


def _parse_riff(name: str, handle: BinaryIO, file_size: int) -> _RiffInfo:
    """Walk the chunks up to 'data', reading only their headers and the small 'fmt '/'ds64' bodies."""
    if file_size == 0:
        raise AudioFileError(name, "empty file (0 bytes)")
    head = handle.read(12)
    magic = head[:4]
    if magic not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
        raise AudioFileError(name, f"not a WAV file (starts with {_show_magic(head[:4])})")
    endian = ">" if magic == b"RIFX" else "<"
    fmt: tuple[int, int, int, int, int] | None = None
    ds64_data_bytes: int | None = None
    data: tuple[int, int] | None = None  # (declared size, offset of payload)
    pos = 12
    while data is None:
        handle.seek(pos)
        header = handle.read(8)
        if len(header) < 8:
            break
        chunk_id = header[:4]
        (chunk_size,) = struct.unpack(endian + "I", header[4:])
        if chunk_id == b"data":
            data = (chunk_size, pos + 8)
        elif chunk_id in (b"fmt ", b"ds64"):
            body = handle.read(min(chunk_size, 64))
            if chunk_id == b"fmt " and len(body) >= 14:
                tag, channels, rate, byte_rate, block_align = struct.unpack(endian + "HHIIH", body[:14])
                if tag == _EXTENSIBLE and len(body) >= 26:
                    (tag,) = struct.unpack(endian + "H", body[24:26])
                fmt = (tag, channels, rate, byte_rate, block_align)
            elif chunk_id == b"ds64" and len(body) >= 16:
                (ds64_data_bytes,) = struct.unpack("<Q", body[8:16])
        pos += 8 + chunk_size + (chunk_size & 1)
    if fmt is None:
        raise AudioFileError(name, "malformed WAV (no 'fmt ' chunk before the audio data)")
    if data is None:
        raise AudioFileError(name, "empty (no 'data' chunk, no audio frames)")
    declared, offset = data
    if magic == b"RF64":
        declared = ds64_data_bytes if ds64_data_bytes is not None else 0xFFFFFFFF
    tag, channels, rate, byte_rate, block_align = fmt
    return _RiffInfo(
        format_tag=tag,
        channels=channels,
        rate_hz=rate,
        byte_rate=byte_rate,
        block_align=block_align,
        data_declared_bytes=None if declared in _UNKNOWN_SIZES else declared,
        data_available_bytes=max(0, file_size - offset),
    )


def _check_riff(name: str, riff: _RiffInfo) -> None:
    if riff.channels == 0 or riff.rate_hz == 0:
        raise AudioFileError(name, f"malformed WAV header ({riff.channels} channels at {riff.rate_hz} Hz)")
    declared, available = riff.data_declared_bytes, riff.data_available_bytes
    if declared == 0:
        if available >= max(riff.block_align, 1) * 16:
            raise AudioFileError(
                name, f"'data' chunk declares 0 bytes but {available} bytes follow (unfinished recording?)"
            )
        raise AudioFileError(name, "empty (no audio frames)")
    if declared is None and available == 0:
        raise AudioFileError(name, "empty (no audio frames)")
    if declared is not None and declared - available > max(riff.block_align, 1):
        if riff.byte_rate > 0:
            raise AudioFileError(
                name,
                f"truncated (header declares {declared / riff.byte_rate:.1f} s, "
                f"file holds {available / riff.byte_rate:.1f} s)",
            )
        raise AudioFileError(name, f"truncated (header declares {declared} bytes of audio, file holds {available})")


def _libsndfile_reason(riff: _RiffInfo, err: soundfile.LibsndfileError) -> str:
    codec = _FORMAT_TAG_NAMES.get(riff.format_tag)
    known_subtype = riff.format_tag in (0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031, 0x0040, 0x0055)
    if not known_subtype:
        label = codec or "unknown codec"
        return f"unsupported format: {label} (format tag 0x{riff.format_tag:04X}); supported: {SUPPORTED_FORMATS}"
    detail = str(err.error_string).strip().rstrip(".") if getattr(err, "error_string", "") else str(err)
    return f"unreadable {codec} WAV ({' '.join(detail.split())})"


def _show_magic(first: bytes) -> str:
    """The file's signature as a person would recognise it: 'ID3', 'fLaC', or hex bytes."""
    printable = b""
    for byte in first:
        if not 32 <= byte < 127:
            break
        printable += bytes([byte])
    if len(printable) >= 3:
        return repr(printable.decode("ascii"))
    return "bytes " + first.hex(" ")


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate_hz: int) -> None:
    """Write int16 PCM: a 1-D array (mono) or shape (N, channels), e.g. caller-left/bot-right."""
    data = np.asarray(samples)
    if data.dtype != np.int16:
        raise TypeError(f"write_wav wants int16 samples, got {data.dtype}")
    if data.ndim not in (1, 2):
        raise ValueError(f"write_wav wants shape (N,) or (N, channels), got {data.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), data, sample_rate_hz, subtype="PCM_16", format="WAV")


def iter_frames(samples: np.ndarray, sample_rate_hz: int, frame_ms: int = FRAME_MS) -> Iterator[tuple[float, bytes]]:
    """Cut int16 mono samples into (start_s, little-endian pcm) frames; the last is zero-padded."""
    frame_len = sample_rate_hz * frame_ms // 1000
    if frame_len <= 0:
        raise ValueError(f"frame of {frame_ms} ms at {sample_rate_hz} Hz holds no sample")
    data = np.asarray(samples, dtype="<i2")
    for start in range(0, len(data), frame_len):
        frame = data[start : start + frame_len]
        if len(frame) < frame_len:
            frame = np.concatenate([frame, np.zeros(frame_len - len(frame), dtype="<i2")])
        yield start / sample_rate_hz, frame.tobytes()


__all__ = [
    "AudioFileError",
    "LoadedAudio",
    "SUPPORTED_FORMATS",
    "iter_frames",
    "load_wav",
    "write_wav",
]
