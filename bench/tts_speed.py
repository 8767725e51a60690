"""How fast the espeak-ng synthesizer (through pyttsx3) renders a prompt.

Figures: start-up of the first synthesizer, render time of a typical
two-sentence prompt at 8 and 16 kHz as x real time, and first-audio latency.
``synthesize`` returns a whole prompt at once, so the first audio of a prompt
is ready when its render ends; splitting prompts at sentence ends would make
it the first sentence's render time, shown too. A cached prompt costs a
dictionary look-up.

    .venv/bin/python bench/tts_speed.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

from voicebot.tts.cache import PromptCache
from voicebot.tts.espeak import EspeakSynthesizer

PROMPT = "Welcome to the benefits service line. How can I help you today?"
FIRST_SENTENCE = "Welcome to the benefits service line."


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls, and the last result."""
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    start = time.perf_counter()
    EspeakSynthesizer(sample_rate_hz=16000, voice="en-us")
    print(f"first synthesizer ready (engine start, voice check): {1000 * (time.perf_counter() - start):.1f} ms")

    for rate_hz in (8000, 16000):
        synth = EspeakSynthesizer(sample_rate_hz=rate_hz, voice="en-us", rate_wpm=170)
        cpu0 = time.process_time()
        wall_s, pcm = timed(lambda: synth.synthesize(PROMPT), args.repeats)
        cpu_s = (time.process_time() - cpu0) / args.repeats
        audio_s = len(pcm) / 2 / rate_hz
        first_s, _ = timed(lambda: synth.synthesize(FIRST_SENTENCE), args.repeats)
        print(
            f"{rate_hz} Hz: {audio_s:.2f} s of speech in {1000 * wall_s:.1f} ms wall "
            f"({audio_s / wall_s:.0f}x real time; {1000 * cpu_s:.1f} ms CPU), "
            f"first audio after {1000 * wall_s:.1f} ms (whole prompt) "
            f"or {1000 * first_s:.1f} ms (first sentence only)"
        )

    cache = PromptCache(EspeakSynthesizer(sample_rate_hz=8000, voice="en-us"))
    cache.render(PROMPT)
    hit_s, _ = timed(lambda: cache.render(PROMPT), 1000)
    print(f"cached prompt: {1e6 * hit_s:.1f} us")


if __name__ == "__main__":
    main()
