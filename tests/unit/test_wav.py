from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile

from voicebot.audio.wav import AudioFileError, iter_frames, load_wav, write_wav

SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"]
RATES_HZ = [8000, 22050, 44100, 48000]
# different content per channel, so the test proves which channel was picked
CHANNEL_TONES_HZ = (440.0, 1000.0, 1700.0)
AMPLITUDE = 0.5  # of full scale


def sine(freq_hz: float, rate_hz: int, seconds: float, amplitude: float = AMPLITUDE) -> np.ndarray:
    t = np.arange(int(round(seconds * rate_hz))) / rate_hz
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


def dominant_hz(samples: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate_hz)[np.argmax(spectrum)])


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def assert_one_line_naming(error: AudioFileError, path: Path, *words: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert message.startswith(str(path) + ": ")
    for word in words:
        assert word in message


@pytest.mark.parametrize("subtype", SUBTYPES)
@pytest.mark.parametrize("rate_hz", RATES_HZ)
@pytest.mark.parametrize("channels", [1, 2])
def test_every_format_rate_and_channel_decodes_to_the_same_tone(
    tmp_path: Path, subtype: str, rate_hz: int, channels: int
) -> None:
    seconds = 0.5
    path = tmp_path / f"tone_{subtype}_{rate_hz}_{channels}.wav"
    data = np.stack([sine(CHANNEL_TONES_HZ[c], rate_hz, seconds) for c in range(channels)], axis=1)
    soundfile.write(path, data, rate_hz, subtype=subtype, format="WAV")

    for channel in range(channels):
        audio = load_wav(path, channel=channel)
        assert audio.samples.dtype == np.int16 and audio.samples.ndim == 1
        assert audio.sample_rate_hz == 16000
        assert (audio.source_rate_hz, audio.source_channels, audio.source_format) == (rate_hz, channels, subtype)
        assert audio.duration_s == pytest.approx(seconds, abs=0.002)
        assert len(audio.samples) == pytest.approx(seconds * 16000, abs=2)
        body = audio.samples[800:-800]  # away from the resampler's edges
        assert dominant_hz(body, 16000) == pytest.approx(CHANNEL_TONES_HZ[channel], abs=3)
        assert rms(body) == pytest.approx(AMPLITUDE * 32768 / np.sqrt(2), rel=0.03)


def test_pcm16_at_16k_is_returned_bit_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    samples = rng.integers(-32768, 32767, 16000, dtype=np.int16)
    path = tmp_path / "exact.wav"
    soundfile.write(path, samples, 16000, subtype="PCM_16")
    assert np.array_equal(load_wav(path).samples, samples)


def test_other_target_rates_are_honoured(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    soundfile.write(path, sine(1000, 44100, 1.0), 44100, subtype="PCM_16")
    audio = load_wav(path, sample_rate_hz=8000)
    assert audio.sample_rate_hz == 8000 and len(audio.samples) == 8000
    assert dominant_hz(audio.samples, 8000) == pytest.approx(1000, abs=3)


def test_float_beyond_full_scale_is_clipped_not_wrapped(tmp_path: Path) -> None:
    path = tmp_path / "loud.wav"
    values = np.array([1.5, -2.0, 0.25, np.nan, 1.0, -1.0] * 400, dtype=np.float32)
    soundfile.write(path, values, 16000, subtype="FLOAT")
    samples = load_wav(path).samples
    assert samples[:6].tolist() == [32767, -32768, 8192, 0, 32767, -32768]


def test_compressed_wav_codecs_that_libsndfile_knows_are_decoded(tmp_path: Path) -> None:
    for subtype in ["IMA_ADPCM", "MS_ADPCM", "GSM610"]:
        path = tmp_path / f"{subtype}.wav"
        soundfile.write(path, sine(440, 8000, 1.0), 8000, subtype=subtype)
        audio = load_wav(path)
        assert audio.source_format == subtype
        assert dominant_hz(audio.samples[1600:-1600], 16000) == pytest.approx(440, abs=3)


@pytest.mark.parametrize("container", ["RF64", "WAVEX"])
def test_rf64_and_extensible_wav_are_read(tmp_path: Path, container: str) -> None:
    path = tmp_path / f"tone_{container}.wav"
    soundfile.write(path, sine(440, 48000, 0.5), 48000, subtype="PCM_24", format=container)
    audio = load_wav(path)
    assert audio.duration_s == pytest.approx(0.5, abs=0.002)
    assert dominant_hz(audio.samples[800:-800], 16000) == pytest.approx(440, abs=3)


# ----------------------------------------------------------------------------- bad files


def _wav_with_format_tag(tag: int, payload: bytes = b"\x01" * 2000) -> bytes:
    fmt = struct.pack("<HHIIHHH", tag, 1, 8000, 1000, 10, 0, 0)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("noise.wav", bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), ["not a WAV file"]),
        ("notes.wav", b"This is a text file, not audio.\n" * 20, ["not a WAV file", "'This'"]),
        (
            "song.wav",
            b"ID3\x04\x00\x00\x00\x00\x00\x21" + b"\xff\xfb\x90\x64" + b"\x00" * 2000,
            ["not a WAV file", "'ID3'"],
        ),
        ("empty.wav", b"", ["empty"]),
        ("g729.wav", _wav_with_format_tag(0x0083), ["unsupported format: G.729", "0x0083"]),
        ("truespeech.wav", _wav_with_format_tag(0x0022), ["unsupported format", "TrueSpeech"]),
    ],
)
def test_bad_files_give_one_line_naming_file_and_reason(
    tmp_path: Path, name: str, content: bytes, words: list[str]
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioFileError) as caught:
        load_wav(path)
    assert_one_line_naming(caught.value, path, *words)


def test_wav_without_frames_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "zero_frames.wav"
    soundfile.write(path, np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")
    with pytest.raises(AudioFileError) as caught:
        load_wav(path)
    assert_one_line_naming(caught.value, path, "empty (no audio frames)")


def test_cut_wav_is_reported_truncated_with_both_durations(tmp_path: Path) -> None:
    whole = tmp_path / "whole.wav"
    soundfile.write(whole, sine(440, 16000, 2.0), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioFileError) as caught:
        load_wav(cut)
    assert_one_line_naming(caught.value, cut, "truncated (header declares 2.0 s, file holds 1.0 s)")


def test_unfinished_recording_with_zero_data_size_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "unfinished.wav"
    soundfile.write(path, sine(440, 16000, 1.0), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[40:44] = struct.pack("<I", 0)  # the 'data' size a crashed recorder leaves behind
    path.write_bytes(bytes(data))
    with pytest.raises(AudioFileError) as caught:
        load_wav(path)
    assert_one_line_naming(caught.value, path, "declares 0 bytes", "32000 bytes follow")


def test_streamed_wav_with_unknown_data_size_is_read(tmp_path: Path) -> None:
    path = tmp_path / "streamed.wav"
    soundfile.write(path, sine(440, 16000, 1.0), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[40:44] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    assert load_wav(path).duration_s == pytest.approx(1.0)


@pytest.mark.parametrize("channel", [2, -1])
def test_channel_out_of_range(tmp_path: Path, channel: int) -> None:
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.zeros((1600, 2)), 16000, subtype="PCM_16")
    with pytest.raises(AudioFileError) as caught:
        load_wav(path, channel=channel)
    assert_one_line_naming(caught.value, path, f"channel {channel} requested but the file has 2 channels (0-1)")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError) as caught:
        load_wav(tmp_path / "nope.wav")
    assert_one_line_naming(caught.value, tmp_path / "nope.wav", "no such file")
    with pytest.raises(AudioFileError) as caught:
        load_wav(tmp_path)
    assert_one_line_naming(caught.value, tmp_path, "directory")


# ----------------------------------------------------------------------------- writing and framing


def test_write_wav_keeps_caller_left_and_bot_right(tmp_path: Path) -> None:
    caller = (sine(440, 16000, 0.5) * 32767).astype(np.int16)
    bot = (sine(1000, 16000, 0.5) * 32767).astype(np.int16)
    path = tmp_path / "sub" / "call.wav"
    write_wav(path, np.stack([caller, bot], axis=1), 16000)
    assert np.array_equal(load_wav(path, channel=0).samples, caller)
    assert np.array_equal(load_wav(path, channel=1).samples, bot)
    info = soundfile.info(path)
    assert (info.channels, info.samplerate, info.subtype) == (2, 16000, "PCM_16")


def test_write_wav_mono_round_trip_and_rejects_float(tmp_path: Path) -> None:
    samples = np.arange(-1000, 1000, dtype=np.int16)
    write_wav(tmp_path / "mono.wav", samples, 8000)
    audio = load_wav(tmp_path / "mono.wav", sample_rate_hz=8000)
    assert np.array_equal(audio.samples, samples)
    with pytest.raises(TypeError):
        write_wav(tmp_path / "float.wav", samples.astype(np.float32), 8000)


def test_iter_frames_cuts_20ms_frames_and_pads_the_last() -> None:
    samples = np.arange(1000, dtype=np.int16)
    frames = list(iter_frames(samples, 16000))
    assert [start_s for start_s, _ in frames] == pytest.approx([0.0, 0.02, 0.04, 0.06])
    assert all(len(pcm) == 640 for _, pcm in frames)
    joined = np.frombuffer(b"".join(pcm for _, pcm in frames), dtype="<i2")
    assert np.array_equal(joined[:1000], samples)
    assert not joined[1000:].any()
    assert [len(pcm) for _, pcm in iter_frames(np.zeros(160, np.int16), 8000)] == [320]
