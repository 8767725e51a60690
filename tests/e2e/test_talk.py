"""`voicebot talk` through a real PortAudio stream on ALSA devices the test defines.

The machine needs no sound card: an ALSA config (``ALSA_CONFIG_PATH``: the
system's alsa.conf, then ours) defines a microphone PCM whose capture reads the
caller's recording (the ``file`` plugin's ``infile``, raw PCM at the device's
rate) and a speaker PCM whose playback is piped into ``paced_sink.py``, both over
the ``null`` PCM. The ``null`` PCM has no clock of its own, so without the sink
the stream would run as fast as the CPU allows; the sink takes the bot's audio
at real-time pace, and the full-duplex stream (microphone included) follows it
as it would a sound card's clock. PortAudio lists config-defined PCMs as ALSA
devices, so ``--input``/``--output`` pick them by name, as a user picks a headset.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile

from voicebot.audio.resample import resample
from voicebot.audio.wav import load_wav
from voicebot.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

SYSTEM_ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
SINK = Path(__file__).with_name("paced_sink.py")
MIC, SPEAKER = "caller_mic", "bot_speaker"
#: the caller stays on the line, silent, after the recording: the bot ends the call well before
TRAILING_SILENCE_S = 40
CALL_TIMEOUT_S = 300
#: a 100 ms window this loud (int16 RMS) holds speech, not silence or dither
SPEECH_RMS = 300


@dataclass(frozen=True)
class AlsaRig:
    env: dict[str, str]
    caller_raw: Path
    bot_dir: Path


def voicebot(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voicebot", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def alsa(tmp_path: Path) -> AlsaRig:
    if not SYSTEM_ALSA_CONF.exists():
        pytest.skip(f"no ALSA configuration at {SYSTEM_ALSA_CONF} (alsa-lib's data files)")
    caller_raw = tmp_path / "caller.raw"
    caller_raw.write_bytes(b"")
    conf = tmp_path / "asoundrc"
    conf.write_text(f"""
pcm.{MIC} {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{caller_raw}"
    format "raw"
}}
pcm.{SPEAKER} {{
    type file
    slave.pcm "null"
    file "|{sys.executable} {SINK} {tmp_path}/bot-%r-%c.raw %r %c"
    format "raw"
}}
""")
    env = {**os.environ, "ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{conf}", "VOICEBOT_ENGINE": "pocketsphinx"}
    return AlsaRig(env, caller_raw, tmp_path)


def device_rate_hz(listing: str, name: str) -> int:
    m = re.search(rf"^\s+\[\d+\] {name} \(ALSA\), \d+ channels, (\d+) Hz", listing, re.MULTILINE)
    assert m, listing
    return int(m.group(1))


def speech_s(samples: np.ndarray, rate_hz: int) -> float:
    """How many seconds of ``samples`` are in 100 ms windows loud enough to be speech."""
    n = rate_hz // 10
    windows = samples[:len(samples) // n * n].astype(np.float64).reshape(-1, n)
    return float(np.sum(np.sqrt(np.mean(windows ** 2, axis=1)) > SPEECH_RMS)) / 10


def speak_into_the_microphone(alsa: AlsaRig, call: Path) -> int:
    """Make ``call`` (then a silent caller) what the microphone hears; returns the device's rate."""
    listing = voicebot("talk", "--list-devices", env=alsa.env)
    assert listing.returncode == 0, listing.stderr
    rate_hz = device_rate_hz(listing.stdout, MIC)
    caller = resample(load_wav(call, sample_rate_hz=16000).samples, 16000, rate_hz)
    caller = np.concatenate([caller, np.zeros(TRAILING_SILENCE_S * rate_hz, np.int16)])
    alsa.caller_raw.write_bytes(caller.astype("<i2").tobytes())
    return rate_hz


def opening_hours_answer() -> str:
    """The first sentence of the scenario's scripted answer."""
    scenario = tomllib.loads((PROJECT_ROOT / "scenarios" / "benefits.toml").read_text())
    return scenario["intents"]["opening_hours"]["answer"].split(". ")[0]


def s01(sample_calls: list[Path]) -> Path:
    return next(c for c in sample_calls if c.stem == "s01_hours")


def test_a_caller_on_the_microphone_hears_the_bot_answer_the_opening_hours(alsa: AlsaRig, sample_calls, tmp_path):
    rate_hz = speak_into_the_microphone(alsa, s01(sample_calls))
    recording = tmp_path / "call.wav"

    res = voicebot("talk", "--input", MIC, "--output", SPEAKER, "--record", str(recording),
                   env=alsa.env, timeout=CALL_TIMEOUT_S)

    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    turns = res.stdout.splitlines()
    assert any("CALLER" in t and "[opening_hours" in t for t in turns), res.stdout
    assert any("BOT" in t and opening_hours_answer() in t for t in turns), res.stdout
    assert re.search(r"^== talk\s+\(completed, [\d.]+ s\)\s+ended by bot$", res.stdout, re.MULTILINE), res.stdout
    assert "intents: opening_hours" in res.stdout
    # what came out of the speaker: the bot's voice, at the device's rate, mono
    played = np.fromfile(alsa.bot_dir / f"bot-{rate_hz}-1.raw", dtype="<i2")
    assert speech_s(played, rate_hz) >= 5.0, "the speaker stayed (nearly) silent"
    # and the recording: caller left, bot right
    stereo, rec_hz = soundfile.read(str(recording), dtype="int16")
    assert stereo.shape[1] == 2 and rec_hz == 16000
    assert speech_s(stereo[:, 0], rec_hz) >= 1.5
    assert speech_s(stereo[:, 1], rec_hz) >= 5.0


def test_ctrl_c_hangs_up_and_prints_the_outcome(alsa: AlsaRig, sample_calls):
    speak_into_the_microphone(alsa, s01(sample_calls))
    talk = subprocess.Popen([sys.executable, "-m", "voicebot", "talk", "--input", MIC, "--output", SPEAKER],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=alsa.env)
    seen = []
    for line in talk.stdout:  # hang up as soon as the bot has started answering
        seen.append(line)
        if "BOT" in line and opening_hours_answer() in line:
            talk.send_signal(signal.SIGINT)
            break
    out, err = talk.communicate(timeout=CALL_TIMEOUT_S)
    out = "".join(seen) + out

    assert talk.returncode == 0, out + err
    assert "Traceback" not in err
    assert re.search(r"^== talk\s+\(abandoned, [\d.]+ s\)\s+ended by caller$", out, re.MULTILINE), out
    assert "intents: opening_hours" in out


@pytest.mark.parametrize("args", [("--input", "no_such_mic"), ("--output", "99")])
def test_a_device_that_does_not_exist_is_one_line_and_exit_2(alsa: AlsaRig, args):
    res = voicebot("talk", *args, env=alsa.env)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("voicebot: "), res.stderr
    assert args[1] in res.stderr
    assert res.stdout == ""


def test_a_machine_without_audio_devices_is_one_line_and_exit_2(tmp_path):
    # the system's ALSA config alone, no ~/.asoundrc: only real cards would show
    env = {**os.environ, "HOME": str(tmp_path), "ALSA_CONFIG_PATH": str(SYSTEM_ALSA_CONF)}
    listing = voicebot("talk", "--list-devices", env=env)
    if listing.returncode == 0:
        pytest.skip("this machine has audio devices")
    for args in (("talk",), ("talk", "--list-devices")):
        res = voicebot(*args, env=env)
        assert res.returncode == 2
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("voicebot: no audio"), res.stderr
