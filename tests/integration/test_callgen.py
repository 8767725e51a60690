"""Test-call recordings through the real espeak-ng: timing, formats, DTMF, channels, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from voicebot.testing.callgen import CallSpecError, build_call, build_spec

LEAD_S, GAP_S, SAY_GAP_S, PAUSE_S = 1.0, 0.5, 1.0, 0.3
TONE_S, AFTER_TONE_S = 0.16, 0.1
DTMF_HZ = {"5": (770, 1336), "#": (941, 1477)}
ALL_DTMF_HZ = (697, 770, 852, 941, 1209, 1336, 1477)


def _call(call_id: str, channel: str = "wide", **extra) -> dict:
    """Keys first, then a pause, then speech: the keys and silences land at known times."""
    return {
        "id": call_id, "voice": "espeak:en-us", "rate": 160, "channel": channel, "lead": LEAD_S, "gap": GAP_S,
        "steps": [{"dtmf": "5#"}, {"pause": PAUSE_S}, {"say": "Yes please.", "gap": SAY_GAP_S}],
        **extra,
    }


SPEECH_START_S = LEAD_S + 2 * (TONE_S + AFTER_TONE_S) + GAP_S + PAUSE_S


def _read(path):
    x, rate = soundfile.read(path, dtype="float64")
    return x * 32768.0, rate


def _span(x: np.ndarray, rate: int, start_s: float, end_s: float) -> np.ndarray:
    return x[int(start_s * rate) : int(end_s * rate)]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def _tone_power(x: np.ndarray, rate: int, freq_hz: float) -> float:
    """Goertzel-style power of one frequency in a window."""
    n = np.arange(len(x))
    return float(np.abs(np.dot(x, np.exp(-2j * np.pi * freq_hz * n / rate))) ** 2 / len(x))


def _assert_key(x: np.ndarray, rate: int, start_s: float, key: str) -> None:
    window = _span(x, rate, start_s + 0.02, start_s + TONE_S - 0.02)
    powers = {f: _tone_power(window, rate, f) for f in ALL_DTMF_HZ}
    low, high = DTMF_HZ[key]
    others = max(p for f, p in powers.items() if f not in (low, high))
    assert min(powers[low], powers[high]) > 100 * others, f"key {key} at {start_s} s: {powers}"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("calls")
    spec = out / "spec.json"
    spec.write_text(json.dumps({"calls": [_call("wide"), _call("phone", "phone"), _call("noisy", "noisy")]}))
    paths = build_spec(spec, out / "wav")
    return {p.stem: p for p in paths}


def test_wide_call_has_keys_silences_and_speech_at_the_right_times(built):
    info = soundfile.info(built["wide"])
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    x, rate = _read(built["wide"])
    assert np.all(_span(x, rate, 0, LEAD_S) == 0)
    _assert_key(x, rate, LEAD_S, "5")
    _assert_key(x, rate, LEAD_S + TONE_S + AFTER_TONE_S, "#")
    assert np.all(_span(x, rate, LEAD_S + TONE_S, LEAD_S + TONE_S + AFTER_TONE_S) == 0)
    assert np.all(_span(x, rate, LEAD_S + 2 * TONE_S + AFTER_TONE_S, SPEECH_START_S) == 0)
    speech_end_s = len(x) / rate - SAY_GAP_S
    assert 0.5 < speech_end_s - SPEECH_START_S < 2.0, "two words at 160 words per minute"
    assert _rms(_span(x, rate, SPEECH_START_S, speech_end_s)) > 1000
    assert np.all(_span(x, rate, speech_end_s + 0.01, len(x) / rate) == 0)


def test_phone_call_is_8khz_mu_law_band_limited_with_the_same_timing(built):
    info = soundfile.info(built["phone"])
    assert (info.samplerate, info.channels, info.subtype, info.format) == (8000, 1, "ULAW", "WAV")
    wide, wide_rate = _read(built["wide"])
    phone, rate = _read(built["phone"])
    assert len(phone) / rate == pytest.approx(len(wide) / wide_rate, abs=0.001)
    _assert_key(phone, rate, LEAD_S, "5")
    _assert_key(phone, rate, LEAD_S + TONE_S + AFTER_TONE_S, "#")

    def share_below(x, r, hz):
        power = np.abs(np.fft.rfft(x)) ** 2
        return power[np.fft.rfftfreq(len(x), 1 / r) < hz].sum() / power.sum()

    speech_w = _span(wide, wide_rate, SPEECH_START_S, len(wide) / wide_rate - SAY_GAP_S)
    speech_p = _span(phone, rate, SPEECH_START_S, len(phone) / rate - SAY_GAP_S)
    # the 300 Hz high-pass takes out most of the voice's low fundamental
    assert share_below(speech_p, rate, 200) < 0.3 * share_below(speech_w, wide_rate, 200)
    assert _rms(speech_p) > 500


def test_noisy_call_has_pink_noise_at_the_reference_level_everywhere(built):
    info = soundfile.info(built["noisy"])
    assert (info.samplerate, info.subtype) == (16000, "PCM_16")
    x, rate = _read(built["noisy"])
    wide, _ = _read(built["wide"])
    assert len(x) == len(wide)
    lead = _span(x, rate, 0, LEAD_S)
    # sox: pinknoise vol 0.04 is -41.6 dBFS, and mixing two inputs halves each (-6 dB)
    assert 20 * np.log10(_rms(lead) / 32768) == pytest.approx(-47.6, abs=1.0)
    assert 20 * np.log10(_rms(_span(x, rate, len(x) / rate - SAY_GAP_S, len(x) / rate)) / 32768) == pytest.approx(
        -47.6, abs=1.0
    )
    # pink: each octave holds about as much power as the next (white noise would double per octave)
    power = np.abs(np.fft.rfft(lead)) ** 2
    freqs = np.fft.rfftfreq(len(lead), 1 / rate)
    octaves = [power[(freqs >= lo) & (freqs < 2 * lo)].sum() for lo in (250, 500, 1000, 2000)]
    assert max(octaves) / min(octaves) < 1.6
    # the caller is still there, at half level
    assert _rms(_span(x, rate, SPEECH_START_S, SPEECH_START_S + 0.4)) > 10 * _rms(lead)


def test_a_spec_always_gives_the_same_files(built, tmp_path):
    again = build_call(_call("noisy", "noisy"), tmp_path)
    assert again.read_bytes() == built["noisy"].read_bytes()
    other_seed = build_call(_call("noisy", "noisy", seed=7), tmp_path / "seed7")
    assert other_seed.read_bytes() != built["noisy"].read_bytes()
    assert build_call(_call("wide"), tmp_path).read_bytes() == built["wide"].read_bytes()


def test_a_step_can_override_voice_and_rate(tmp_path):
    base = {"id": "slow", "voice": "espeak:en-us", "rate": 120, "lead": 0, "gap": 0,
            "steps": [{"say": "Seven hundred and ten euros."}]}
    slow = build_call(base, tmp_path)
    fast = build_call({**base, "id": "fast", "steps": [{"say": "Seven hundred and ten euros.", "rate": 300}]}, tmp_path)
    gb = build_call({**base, "id": "gb", "steps": [{"say": "Seven hundred and ten euros.", "voice": "espeak:en-gb"}]},
                    tmp_path)
    assert soundfile.info(fast).duration < 0.6 * soundfile.info(slow).duration
    assert gb.read_bytes() != slow.read_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"voice": "espeak:no-such-voice"}, "unknown espeak-ng voice 'no-such-voice'"),
        ({"voice": "espeak:en-us+nosuchvariant"}, "nosuchvariant"),
        ({"voice": "festival:kal"}, 'voice must look like "espeak:en-us"'),
        ({"channel": "radio"}, "unknown channel 'radio'"),
        ({"steps": [{"dtmf": "5x"}]}, "dtmf must be keys"),
        ({"steps": [{"sya": "typo"}]}, 'exactly one of "say", "dtmf" or "pause"'),
        ({"steps": [{"say": "hi", "rate": "fast"}]}, "rate must be whole words per minute"),
        ({"steps": [{"pause": -1}]}, "pause must be a number of seconds"),
        ({"steps": "say hello"}, "steps must be a list"),
        ({"id": "../escape"}, "call id must be a file-name-safe string"),
        ({"gap": "long"}, "gap must be a number of seconds"),
    ],
)
def test_a_bad_call_is_a_one_line_error(tmp_path, change, message):
    call = {**_call("bad"), **change}
    with pytest.raises(CallSpecError) as err:
        build_call(call, tmp_path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir()), "nothing written for a bad call"


def test_a_bad_spec_file_is_a_one_line_error(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"calls": [')
    with pytest.raises(CallSpecError, match="not valid JSON"):
        build_spec(broken, tmp_path / "out")
    empty = tmp_path / "empty.json"
    empty.write_text('{"tests": []}')
    with pytest.raises(CallSpecError, match='expected {"calls"'):
        build_spec(empty, tmp_path / "out")
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({"calls": [_call("same"), _call("same")]}))
    with pytest.raises(CallSpecError, match="more than once: same"):
        build_spec(twice, tmp_path / "out")
    with pytest.raises(CallSpecError, match="cannot read call spec"):
        build_spec(tmp_path / "missing.json", tmp_path / "out")


def test_a_bad_call_late_in_a_spec_stops_it_before_any_audio_is_built(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"calls": [_call("good"), _call("bad", voice="espeak:no-such-voice")]}))
    with pytest.raises(CallSpecError, match="call bad"):
        build_spec(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()
