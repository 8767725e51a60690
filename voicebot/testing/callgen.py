"""Caller-side recordings of test calls, built from a JSON call spec.

The spec format is the shared call generator's::

    {"calls": [{"id": "s01", "voice": "espeak:en-us+f3", "rate": 160, "channel": "phone",
                "gap": 5.0, "lead": 4.0,
                "steps": [{"say": "Housing allowance, please."},
                          {"dtmf": "0"},
                          {"pause": 2.0},
                          {"say": "yes", "gap": 1.0, "voice": "espeak:en-gb", "rate": 140}]}]}

After ``lead`` seconds of silence each step plays in turn; a spoken or keyed step
is followed by ``gap`` seconds of silence (the time the bot needs to answer).
Channels: "wide" (16 kHz PCM16), "phone" (8 kHz G.711 mu-law, band-limited to
300-3400 Hz) and "noisy" (16 kHz with pink noise). Other keys ("expect") are
left to the tools that read them.

Speech comes from the espeak-ng program, a fresh process per utterance, because
only that is bit-for-bit reproducible (in-process synthesis carries state from
one text to the next). The rest matches the reference's sox chain in timing and
level: the same DTMF tones, sox's two-pole filters, and sox's mix of two inputs
at half gain each; the noise is seeded, so a spec always gives the same files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from voicebot.audio.resample import resample
from voicebot.errors import VoicebotError
from voicebot.tts.base import SynthesisError
from voicebot.tts.espeak import EspeakSynthesizer

RATE_HZ = 16000
PHONE_RATE_HZ = 8000
PHONE_BAND_HZ = (300.0, 3400.0)
DEFAULT_VOICE = "espeak:en-us"
DEFAULT_RATE_WPM = 160
DEFAULT_GAP_S = 5.0
DEFAULT_LEAD_S = 4.0
CHANNELS = ("wide", "phone", "noisy")

DTMF_TONE_S = 0.16
DTMF_AFTER_S = 0.1
DTMF_AMPLITUDE = 9000  # per tone, int16 units
DTMF_FREQS_HZ = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}

# RMS of `sox -n synth DUR pinknoise vol 0.04` (full scale 1.0), measured: -41.6 dBFS.
PINK_NOISE_RMS = 0.00828
# `sox -m` scales each of its two inputs by 1/2 before summing.
MIX_GAIN = 0.5

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class CallSpecError(VoicebotError):
    """A call spec cannot be turned into audio: bad spec, unknown voice, missing espeak-ng."""


def build_spec(spec_path: Path, outdir: Path) -> list[Path]:
    """Build every call of a spec file into ``outdir/<id>.wav``; returns the paths in spec order."""
    spec_path = Path(spec_path)
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CallSpecError(f"cannot read call spec {spec_path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CallSpecError(f"{spec_path}: not valid JSON: {exc}") from None
    calls = spec.get("calls") if isinstance(spec, dict) else None
    if not isinstance(calls, list) or not calls:
        raise CallSpecError(f'{spec_path}: expected {{"calls": [...]}} with at least one call')
    ids = [c.get("id") if isinstance(c, dict) else None for c in calls]
    duplicates = sorted({str(i) for i in ids if i is not None and ids.count(i) > 1})
    if duplicates:
        raise CallSpecError(f"{spec_path}: call ids used more than once: {', '.join(duplicates)}")
    checked_voices: set[tuple[str, int]] = set()
    for call in calls:  # check the whole spec before spending time on audio
        _check_call(call, checked_voices)
    return [build_call(call, outdir, _checked_voices=checked_voices) for call in calls]


def build_call(call: dict[str, Any], outdir: Path, *, _checked_voices: set[tuple[str, int]] | None = None) -> Path:
    """Build one call into ``outdir/<id>.wav``; returns that path."""
    checked = set() if _checked_voices is None else _checked_voices
    _check_call(call, checked)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    call_rate = int(call.get("rate", DEFAULT_RATE_WPM))
    gap_s = float(call.get("gap", DEFAULT_GAP_S))

    parts = [_silence(float(call.get("lead", DEFAULT_LEAD_S)))]
    for step in call["steps"]:
        if "say" in step:
            voice = _voice_name(step.get("voice", call.get("voice", DEFAULT_VOICE)))
            rate = int(step.get("rate", call_rate))
            parts.append(_speak(step["say"], voice, rate))
            parts.append(_silence(float(step.get("gap", gap_s))))
        elif "dtmf" in step:
            parts.extend(part for digit in step["dtmf"] for part in (_dtmf_tone(digit), _silence(DTMF_AFTER_S)))
            parts.append(_silence(float(step.get("gap", gap_s))))
        else:
            parts.append(_silence(float(step["pause"])))
    clean = np.concatenate(parts).astype(np.float64)

    channel = call.get("channel", "wide")
    if channel == "phone":
        band_limited = _band_limit(clean / 32768.0, RATE_HZ, *PHONE_BAND_HZ)
        samples, rate_hz, subtype = resample(band_limited, RATE_HZ, PHONE_RATE_HZ), PHONE_RATE_HZ, "ULAW"
    elif channel == "noisy":
        seed = int(call.get("seed", zlib.crc32(call["id"].encode())))
        noise = _pink_noise(len(clean), PINK_NOISE_RMS * 32768.0, seed)
        samples = np.clip(np.rint(MIX_GAIN * clean + MIX_GAIN * noise), -32768, 32767).astype(np.int16)
        rate_hz, subtype = RATE_HZ, "PCM_16"
    else:
        samples, rate_hz, subtype = clean.astype(np.int16), RATE_HZ, "PCM_16"

    out = outdir / f"{call['id']}.wav"
    partial = out.with_name(f".{out.name}.partial")
    soundfile.write(partial, samples, rate_hz, subtype=subtype, format="WAV")
    os.replace(partial, out)
    return out


# --------------------------------------------------------------------------- checking


def _check_call(call: Any, checked_voices: set[tuple[str, int]]) -> None:
    if not isinstance(call, dict):
        raise CallSpecError(f"each call must be a JSON object, got {call!r:.60}")
    cid = call.get("id")
    if not isinstance(cid, str) or not _SAFE_ID.match(cid):
        raise CallSpecError(f"call id must be a file-name-safe string (letters, digits, _ . -), got {cid!r}")
    where = f"call {cid}"
    channel = call.get("channel", "wide")
    if channel not in CHANNELS:
        raise CallSpecError(f"{where}: unknown channel {channel!r} (use {', '.join(CHANNELS)})")
    for key in ("gap", "lead"):
        _seconds(call.get(key, 0.0), f"{where}: {key}")
    if "seed" in call and (not isinstance(call["seed"], int) or isinstance(call["seed"], bool) or call["seed"] < 0):
        raise CallSpecError(f"{where}: seed must be a non-negative integer, got {call['seed']!r}")
    _check_voice(call.get("voice", DEFAULT_VOICE), call.get("rate", DEFAULT_RATE_WPM), where, checked_voices)
    steps = call.get("steps")
    if not isinstance(steps, list):
        raise CallSpecError(f"{where}: steps must be a list (empty: a caller who hangs up after the lead)")
    for n, step in enumerate(steps, 1):
        at = f"{where}, step {n}"
        kinds = [k for k in ("say", "dtmf", "pause") if isinstance(step, dict) and k in step]
        if len(kinds) != 1:
            raise CallSpecError(f'{at}: needs exactly one of "say", "dtmf" or "pause", got {step!r:.60}')
        if "gap" in step:
            _seconds(step["gap"], f"{at}: gap")
        if "say" in step:
            if not isinstance(step["say"], str) or not step["say"].strip():
                raise CallSpecError(f"{at}: say needs some text")
            voice = step.get("voice", call.get("voice", DEFAULT_VOICE))
            _check_voice(voice, step.get("rate", call.get("rate", DEFAULT_RATE_WPM)), at, checked_voices)
        elif "dtmf" in step:
            keys = step["dtmf"]
            if not isinstance(keys, str) or not keys or any(k not in DTMF_FREQS_HZ for k in keys):
                raise CallSpecError(f"{at}: dtmf must be keys from 0-9 * # A-D, got {keys!r}")
        else:
            _seconds(step["pause"], f"{at}: pause")


def _seconds(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
        raise CallSpecError(f"{what} must be a number of seconds (0-3600), got {value!r}")


def _check_voice(voice: Any, rate: Any, where: str, checked: set[tuple[str, int]]) -> None:
    name = _voice_name(voice, where)
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise CallSpecError(f"{where}: rate must be whole words per minute, got {rate!r}")
    if (name, rate) in checked:
        return
    try:  # the synthesizer knows espeak-ng's voices and variants, and rejects what espeak-ng would ignore
        EspeakSynthesizer(voice=name, rate_wpm=rate)
    except SynthesisError as exc:
        raise CallSpecError(f"{where}: {exc}") from None
    checked.add((name, rate))


def _voice_name(voice: Any, where: str = "call") -> str:
    engine, _, name = str(voice).partition(":") if isinstance(voice, str) else ("", "", "")
    if engine != "espeak" or not name.strip():
        raise CallSpecError(f'{where}: voice must look like "espeak:en-us" or "espeak:en-us+f3", got {voice!r}')
    return name.strip()


# --------------------------------------------------------------------------- signals


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE_HZ), dtype=np.int16)


def _dtmf_tone(key: str) -> np.ndarray:
    low_hz, high_hz = DTMF_FREQS_HZ[key]
    t = np.arange(int(DTMF_TONE_S * RATE_HZ)) / RATE_HZ
    tone = DTMF_AMPLITUDE * (np.sin(2 * np.pi * low_hz * t) + np.sin(2 * np.pi * high_hz * t))
    return np.trunc(tone).astype(np.int16)


def _speak(text: str, voice: str, rate_wpm: int) -> np.ndarray:
    """One utterance from the espeak-ng program, at RATE_HZ."""
    with tempfile.TemporaryDirectory(prefix="voicebot-callgen-") as tmp:
        wav = Path(tmp) / "say.wav"
        try:
            subprocess.run(
                ["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-w", str(wav), "--", text],
                check=True, capture_output=True, text=True,
            )
        except FileNotFoundError:
            raise CallSpecError("espeak-ng is not installed (Debian: apt-get install espeak-ng)") from None
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise CallSpecError(f"espeak-ng failed for voice {voice}: {detail[-1] if detail else exc}") from None
        samples, native_hz = soundfile.read(wav, dtype="int16", always_2d=False)
    return resample(samples, int(native_hz), RATE_HZ)


def _biquad_response(kind: str, cutoff_hz: float, rate_hz: int, freqs_hz: np.ndarray) -> np.ndarray:
    """Complex response of sox's two-pole ``highpass``/``lowpass`` (RBJ cookbook, Q = 0.707)."""
    w0 = 2 * np.pi * cutoff_hz / rate_hz
    alpha = np.sin(w0) / (2 * np.sqrt(0.5))
    cos_w0 = np.cos(w0)
    if kind == "highpass":
        b = ((1 + cos_w0) / 2, -(1 + cos_w0), (1 + cos_w0) / 2)
    else:
        b = ((1 - cos_w0) / 2, 1 - cos_w0, (1 - cos_w0) / 2)
    a = (1 + alpha, -2 * cos_w0, 1 - alpha)
    z1 = np.exp(-2j * np.pi * freqs_hz / rate_hz)
    return (b[0] + b[1] * z1 + b[2] * z1**2) / (a[0] + a[1] * z1 + a[2] * z1**2)


def _band_limit(x: np.ndarray, rate_hz: int, low_hz: float, high_hz: float) -> np.ndarray:
    """sox ``highpass low lowpass high``, applied in the frequency domain.

    Zero padding of a quarter second holds the filters' impulse responses, which
    die out within milliseconds, so the result equals running the filters.
    """
    n = 1 << int(np.ceil(np.log2(len(x) + rate_hz // 4)))
    freqs = np.fft.rfftfreq(n, 1 / rate_hz)
    response = _biquad_response("highpass", low_hz, rate_hz, freqs) * _biquad_response("lowpass", high_hz, rate_hz, freqs)
    return np.fft.irfft(np.fft.rfft(x, n) * response, n)[: len(x)]


def _pink_noise(n: int, rms: float, seed: int) -> np.ndarray:
    """Seeded noise falling 3 dB per octave (flat below 20 Hz), scaled to ``rms``."""
    if n == 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    freqs = np.fft.rfftfreq(n, 1 / RATE_HZ)
    spectrum = (rng.standard_normal(len(freqs)) + 1j * rng.standard_normal(len(freqs))) / np.sqrt(
        np.maximum(freqs, 20.0)
    )
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n)
    return noise * (rms / np.sqrt(np.mean(noise**2)))
