from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from voicebot.tts.base import SynthesisError
from voicebot.tts.cache import PromptCache


class CountingSynth:
    """Fake synthesizer: PCM that encodes voice, rate and text, and a count of calls."""

    def __init__(self, voice: str = "en-us", rate_wpm: int = 170, sample_rate_hz: int = 16000, delay_s: float = 0.0):
        self.voice = voice
        self.rate_wpm = rate_wpm
        self.sample_rate_hz = sample_rate_hz
        self.delay_s = delay_s
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def synthesize(self, text: str) -> bytes:
        with self._lock:
            self.calls.append(text)
        time.sleep(self.delay_s)
        if text == "fail":
            raise SynthesisError("boom")
        return f"{self.voice}|{self.rate_wpm}|{self.sample_rate_hz}|{text}".encode()


def test_second_render_of_a_prompt_does_not_call_the_synthesizer():
    synth = CountingSynth()
    cache = PromptCache(synth)
    first = cache.render("Welcome to the service line.")
    second = cache.render("Welcome to the service line.")
    assert first == second == b"en-us|170|16000|Welcome to the service line."
    assert synth.calls == ["Welcome to the service line."]
    assert (cache.hits, cache.misses) == (1, 1)


def test_different_texts_get_their_own_audio():
    synth = CountingSynth()
    cache = PromptCache(synth)
    assert cache.render("Yes.") == b"en-us|170|16000|Yes."
    assert cache.render("No.") == b"en-us|170|16000|No."
    assert synth.calls == ["Yes.", "No."]


def test_a_changed_voice_rate_or_sample_rate_does_not_reuse_old_audio():
    synth = CountingSynth()
    cache = PromptCache(synth)
    cache.render("Hello.")
    synth.voice = "en-gb"
    assert cache.render("Hello.") == b"en-gb|170|16000|Hello."
    synth.rate_wpm = 140
    assert cache.render("Hello.") == b"en-gb|140|16000|Hello."
    synth.sample_rate_hz = 8000
    assert cache.render("Hello.") == b"en-gb|140|8000|Hello."
    assert len(synth.calls) == 4
    synth.voice, synth.rate_wpm, synth.sample_rate_hz = "en-us", 170, 16000
    assert cache.render("Hello.") == b"en-us|170|16000|Hello."
    assert len(synth.calls) == 4


def test_two_caches_with_different_voices_keep_their_own_audio():
    us, gb = PromptCache(CountingSynth(voice="en-us")), PromptCache(CountingSynth(voice="en-gb"))
    assert us.render("Hi.") != gb.render("Hi.")


def test_least_recently_used_prompt_is_evicted_first():
    synth = CountingSynth()
    cache = PromptCache(synth, max_items=2)
    cache.render("a")
    cache.render("b")
    cache.render("a")  # "b" is now the least recently used
    cache.render("c")
    assert "a" in cache and "c" in cache and "b" not in cache
    assert len(cache) == 2
    cache.render("b")
    assert synth.calls == ["a", "b", "c", "b"]


def test_warm_renders_each_static_prompt_once():
    synth = CountingSynth()
    cache = PromptCache(synth)
    cache.warm(["Welcome.", "Goodbye.", "Welcome."])
    assert synth.calls == ["Welcome.", "Goodbye."]
    cache.render("Goodbye.")
    assert synth.calls == ["Welcome.", "Goodbye."]


def test_concurrent_renders_of_one_prompt_synthesize_it_once():
    synth = CountingSynth(delay_s=0.05)
    cache = PromptCache(synth)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(cache.render, ["Please hold."] * 8))
    assert set(results) == {b"en-us|170|16000|Please hold."}
    assert synth.calls == ["Please hold."]


def test_a_failed_render_is_not_cached():
    synth = CountingSynth()
    cache = PromptCache(synth)
    with pytest.raises(SynthesisError):
        cache.render("fail")
    with pytest.raises(SynthesisError):
        cache.render("fail")
    assert synth.calls == ["fail", "fail"]
    assert "fail" not in cache


def test_max_items_must_be_positive():
    with pytest.raises(ValueError):
        PromptCache(CountingSynth(), max_items=0)
