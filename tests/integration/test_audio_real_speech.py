"""The audio front end on real synthesized speech: espeak-ng voices, pink noise, the phone channel.

Speech comes from espeak-ng (a Debian package the project needs anyway) and goes
through the real loader (espeak writes 22.05 kHz WAV files), so these tests also
prove the WAV -> 16 kHz path. Ground truth is where each spoken clip was placed.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from voicebot.audio.dtmf import DtmfDetector
from voicebot.audio.vad import Endpointer, SpeechEnd, SpeechStart
from voicebot.audio.wav import iter_frames, load_wav, write_wav

RATE_HZ = 16000
TOLERANCE_S = 0.15

CALLER_TURNS = [
    ("en-us", 160, "What are your opening hours?"),
    ("en-us+f3", 150, "I would like to apply for housing allowance."),
    ("en-gb", 160, "two nine zero two eight eight, dash, one three six, D"),
    ("en-us+m2", 150, "Yes."),
    ("en-gb-scotland", 150, "No thank you, goodbye."),
    ("en-us+f4", 170, "Can I get remote service by video?"),
    ("en-us+m4", 160, "zero zero one eight zero"),
]

# a couple of minutes of varied English for the DTMF false-alarm test
MONOLOGUE = [
    "Good morning. I am calling about my housing allowance application, which I sent three weeks ago.",
    "My personal identity code is two nine zero two eight eight, dash, one three six, D.",
    "Could you please tell me when the office on Main Street is open on Saturdays?",
    "I moved to a new apartment last month and the rent is seven hundred and ten euros.",
    "Yes. No. Maybe. I don't know. Please repeat that. Operator! Representative!",
    "The quick brown fox jumps over the lazy dog while the children sing songs at the fair.",
    "One, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, thirteen, hundred.",
    "Hmm, well, let me think about it for a moment. Actually, I would rather talk to a person.",
    "Ooh, aah, eee, mmm, la la la, do re mi fa so la ti do, beep, boop, ring ring.",
    "My postal code is zero zero one eight zero and my household has three people, two adults.",
]
MONOLOGUE_VOICES = [
    "en-us",
    "en-us+f3",
    "en-gb",
    "en-us+m2",
    "en-gb-scotland",
    "en-us+f4",
    "en-us+m4",
    "en-us+f2",
    "en-gb-x-rp",
    "en-029",
]


def espeak(text: str, voice: str, words_per_minute: int, path: Path) -> np.ndarray:
    """One clip at 16 kHz, trimmed to where the voice is audible."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text], check=True)
    samples = load_wav(path).samples
    audible = np.flatnonzero(np.abs(samples.astype(np.int32)) > 200)
    return samples[audible[0] : audible[-1] + 1]


@dataclass(frozen=True)
class Call:
    samples: np.ndarray  # int16 at 16 kHz
    turns_s: list[tuple[float, float]]  # where each clip starts and ends


@pytest.fixture(scope="session")
def call(tmp_path_factory: pytest.TempPathFactory) -> Call:
    folder = tmp_path_factory.mktemp("speech")
    rng = np.random.default_rng(11)
    parts, turns, cursor = [np.zeros(RATE_HZ, np.int16)], [], RATE_HZ
    for index, (voice, wpm, text) in enumerate(CALLER_TURNS):
        clip = espeak(text, voice, wpm, folder / f"turn{index}.wav")
        turns.append((cursor / RATE_HZ, (cursor + len(clip)) / RATE_HZ))
        pause = np.zeros(int(rng.uniform(1.0, 2.5) * RATE_HZ), np.int16)
        parts += [clip, pause]
        cursor += len(clip) + len(pause)
    return Call(np.concatenate(parts), turns)


@pytest.fixture(scope="session")
def monologue(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    folder = tmp_path_factory.mktemp("monologue")
    parts = []
    for speed in (140, 185):
        for index, (text, voice) in enumerate(zip(MONOLOGUE, MONOLOGUE_VOICES, strict=True)):
            parts += [espeak(text, voice, speed, folder / f"{speed}_{index}.wav"), np.zeros(RATE_HZ // 4, np.int16)]
    speech = np.concatenate(parts)
    assert len(speech) > 100 * RATE_HZ  # a couple of minutes
    return speech


def sox_pink_noise(seconds: float, path: Path) -> np.ndarray:
    """The noisy channel of shared/calls/callgen.py (sox -R: repeatable)."""
    subprocess.run(
        [
            "sox",
            "-R",
            "-n",
            "-r",
            str(RATE_HZ),
            "-c",
            "1",
            "-b",
            "16",
            str(path),
            "synth",
            f"{seconds + 0.1:.3f}",
            "pinknoise",
            "vol",
            "0.04",
        ],
        check=True,
    )
    return load_wav(path).samples


def phone_channel(samples: np.ndarray, folder: Path, name: str) -> Path:
    """The phone channel of callgen.py: 8 kHz G.711 mu-law, band-limited to 300-3400 Hz."""
    wide, narrow = folder / f"{name}_wide.wav", folder / f"{name}_phone.wav"
    write_wav(wide, samples, RATE_HZ)
    subprocess.run(
        ["sox", str(wide), "-r", "8000", "-e", "u-law", str(narrow), "highpass", "300", "lowpass", "3400"], check=True
    )
    return narrow


def segment(samples: np.ndarray, rate_hz: int = RATE_HZ, **settings: int) -> list[tuple[float, float]]:
    endpointer, found, start = Endpointer(sample_rate_hz=rate_hz, **settings), [], None
    last_s = 0.0
    for start_s, pcm in iter_frames(samples, rate_hz):
        last_s = start_s + 0.02
        for event in endpointer.process(pcm, start_s):
            if isinstance(event, SpeechStart):
                start = event.at_s
            elif isinstance(event, SpeechEnd):
                found.append((start, event.at_s))
    for event in endpointer.flush(last_s):
        found.append((start, event.at_s))
    return found


def assert_matches_turns(found: list[tuple[float, float]], turns: list[tuple[float, float]]) -> None:
    assert len(found) == len(turns), f"found {found}, expected {turns}"
    for (start_s, end_s), (true_start_s, true_end_s) in zip(found, turns, strict=True):
        assert start_s == pytest.approx(true_start_s, abs=TOLERANCE_S)
        assert end_s == pytest.approx(true_end_s, abs=TOLERANCE_S)


def with_noise(samples: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return np.clip(samples.astype(np.int32) + noise[: len(samples)], -32768, 32767).astype(np.int16)


# ----------------------------------------------------------------------------- endpointing


def test_clean_speech_gives_one_utterance_per_turn(call: Call) -> None:
    assert_matches_turns(segment(call.samples), call.turns_s)


def test_speech_in_pink_noise_gives_one_utterance_per_turn(call: Call, tmp_path: Path) -> None:
    noise = sox_pink_noise(len(call.samples) / RATE_HZ, tmp_path / "pink.wav")
    assert_matches_turns(segment(with_noise(call.samples, noise)), call.turns_s)


def test_pink_noise_alone_gives_no_utterance(tmp_path: Path) -> None:
    noise = sox_pink_noise(60.0, tmp_path / "pink.wav")
    assert segment(noise) == []
    assert segment((noise.astype(np.int32) * 4).clip(-32768, 32767).astype(np.int16)) == []  # 12 dB louder


def test_phone_channel_speech_upsampled_to_16k(call: Call, tmp_path: Path) -> None:
    phone = phone_channel(call.samples, tmp_path, "clean")
    audio = load_wav(phone)
    assert (audio.source_rate_hz, audio.source_format) == (8000, "ULAW")
    assert_matches_turns(segment(audio.samples), call.turns_s)


def test_phone_channel_speech_at_8k(call: Call, tmp_path: Path) -> None:
    phone = phone_channel(call.samples, tmp_path, "clean")
    assert_matches_turns(segment(load_wav(phone, sample_rate_hz=8000).samples, rate_hz=8000), call.turns_s)


def test_noisy_phone_channel(call: Call, tmp_path: Path) -> None:
    noise = sox_pink_noise(len(call.samples) / RATE_HZ, tmp_path / "pink.wav")
    phone = phone_channel(with_noise(call.samples, noise), tmp_path, "noisy")
    assert_matches_turns(segment(load_wav(phone).samples), call.turns_s)


def test_end_silence_decides_whether_comma_pauses_split_a_turn(tmp_path: Path) -> None:
    # espeak pauses about 150-200 ms at each comma of this answer
    clip = espeak("two nine zero two eight eight, dash, one three six, D", "en-us+f4", 150, tmp_path / "id.wav")
    samples = np.concatenate([np.zeros(RATE_HZ, np.int16), clip, np.zeros(2 * RATE_HZ, np.int16)])
    turn = [(1.0, 1.0 + len(clip) / RATE_HZ)]
    assert_matches_turns(segment(samples, end_silence_ms=500), turn)
    pieces = segment(samples, end_silence_ms=100)
    assert len(pieces) >= 3
    assert pieces[0][0] == pytest.approx(1.0, abs=TOLERANCE_S)
    assert pieces[-1][1] == pytest.approx(turn[0][1], abs=TOLERANCE_S)


# ----------------------------------------------------------------------------- DTMF


def detect_keys(samples: np.ndarray, rate_hz: int) -> str:
    detector = DtmfDetector(rate_hz)
    return "".join(
        tone.digit for start_s, pcm in iter_frames(samples, rate_hz) for tone in detector.process(pcm, start_s)
    )


def test_no_key_is_heard_in_minutes_of_speech(monologue: np.ndarray, tmp_path: Path) -> None:
    assert detect_keys(monologue, RATE_HZ) == ""
    louder = (monologue.astype(np.int32) * 2).clip(-32768, 32767).astype(np.int16)
    assert detect_keys(louder, RATE_HZ) == ""
    phone = load_wav(phone_channel(monologue, tmp_path, "monologue"), sample_rate_hz=8000)
    assert detect_keys(phone.samples, 8000) == ""


def callgen_keys(keys: str) -> np.ndarray:
    """Key presses as shared/calls/callgen.py writes them: 160 ms of tone, 100 ms of silence."""
    low = {
        "1": 697,
        "2": 697,
        "3": 697,
        "4": 770,
        "5": 770,
        "6": 770,
        "7": 852,
        "8": 852,
        "9": 852,
        "*": 941,
        "0": 941,
        "#": 941,
    }
    high = {
        "1": 1209,
        "2": 1336,
        "3": 1477,
        "4": 1209,
        "5": 1336,
        "6": 1477,
        "7": 1209,
        "8": 1336,
        "9": 1477,
        "*": 1209,
        "0": 1336,
        "#": 1477,
    }
    t = np.arange(int(0.16 * RATE_HZ)) / RATE_HZ
    parts = []
    for key in keys:
        tone = 9000 * (np.sin(2 * np.pi * low[key] * t) + np.sin(2 * np.pi * high[key] * t))
        parts += [tone.astype(np.int16), np.zeros(int(0.1 * RATE_HZ), np.int16)]
    return np.concatenate(parts)


def test_listener_loop_hears_keys_as_keys_and_speech_as_speech(call: Call, tmp_path: Path) -> None:
    """DTMF first, then the endpointer suspended while a tone sounds, as the listener does it."""
    first_turn = call.samples[: int((call.turns_s[0][1] + 1.0) * RATE_HZ)]
    keys = callgen_keys("0123#")
    samples = np.concatenate([first_turn, keys, np.zeros(RATE_HZ, np.int16), first_turn[RATE_HZ // 2 :]])
    noise = sox_pink_noise(len(samples) / RATE_HZ, tmp_path / "pink.wav")
    keys_start_s = len(first_turn) / RATE_HZ
    second_turn_start_s = (len(first_turn) + len(keys) + RATE_HZ / 2) / RATE_HZ + call.turns_s[0][0]
    for signal in (samples, with_noise(samples, noise)):
        detector, endpointer = DtmfDetector(RATE_HZ), Endpointer()
        heard, starts = [], []
        for start_s, pcm in iter_frames(signal, RATE_HZ):
            heard += detector.process(pcm, start_s)
            endpointer.suspend(detector.tone_active)
            starts += [e.at_s for e in endpointer.process(pcm, start_s) if isinstance(e, SpeechStart)]
        assert "".join(t.digit for t in heard) == "0123#"
        assert [t.start_s for t in heard] == pytest.approx([keys_start_s + 0.26 * i for i in range(5)], abs=0.015)
        assert starts == pytest.approx([call.turns_s[0][0], second_turn_start_s], abs=TOLERANCE_S)
