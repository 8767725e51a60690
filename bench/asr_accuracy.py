#!/usr/bin/env python3
"""Recognition accuracy and speed on synthetic calls (espeak-ng voices, rates, channels).

Prints per grammar: sentence accuracy of the top result and of the n-best (exact match of the
normalised text), for open speech the word error rate and the share of sentences whose key
words survive, and the decoding real-time factor. The open-speech test sentences are not in
the language model's training list (tests/data/open_sentences.txt).

    .venv/bin/python bench/asr_accuracy.py [--voices 4] [--engine pocketsphinx]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
import wave
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voicebot.asr.grammar import GrammarSet  # noqa: E402

VOICES = [
    ("en-us", 160, "wide"), ("en-gb", 170, "wide"), ("en-us+f3", 150, "noisy"), ("en-us+m2", 140, "phone"),
    ("en-gb-scotland", 150, "wide"), ("en-us+f4", 180, "wide"), ("en-us+m4", 160, "phone"), ("en-gb+f2", 130, "noisy"),
]
DIGITS = "zero one two three four five six seven eight nine".split()
CHECK = "0123456789ABCDEFHJKLMNPRSTUVWXY"

OPEN = [  # (sentence, key words)
    ("When do you open on Monday morning?", ["open"]),
    ("Is the service point in the town centre still open?", ["service", "point"]),
    ("I would like to apply for housing allowance please.", ["housing", "allowance"]),
    ("Can I handle my application on your website?", ["website"]),
    ("Could I see an advisor on a video call?", ["video"]),
    ("I think the decision on my benefit is wrong.", ["decision"]),
    ("They say I have to pay back an overpayment.", ["overpayment"]),
    ("I want to talk to a real person.", ["person"]),
    ("Could you repeat that please?", ["repeat"]),
    ("That is all, thank you, goodbye.", ["goodbye"]),
    ("My cat sleeps on the sofa all day.", []),
    ("The football match starts at eight.", []),
]


def personal_id(rng: random.Random) -> tuple[str, str]:
    day, month, year = rng.randrange(1, 29), rng.randrange(1, 13), rng.randrange(0, 100)
    century = rng.choice(["-", "-", "A", "Y"])
    ind = rng.randrange(2, 900)
    digits = f"{day:02d}{month:02d}{year:02d}"
    check = CHECK[int(digits + f"{ind:03d}") % 31]
    spell = lambda s: " ".join(DIGITS[int(c)] for c in s)  # noqa: E731
    cword = "dash" if century == "-" else century
    chk = DIGITS[int(check)] if check.isdigit() else check
    said = f"{spell(digits)}, {cword}, {spell(f'{ind:03d}')}, {chk}"
    return said, " ".join([spell(digits), cword.lower(), spell(f"{ind:03d}"), chk.lower()])


def grammar_cases(rng: random.Random) -> list[tuple[str, str, str]]:
    cases = [("personal_id", *personal_id(rng)) for _ in range(3)]
    for _ in range(2):
        code = "".join(rng.choice("0123456789") for _ in range(5))
        text = " ".join(DIGITS[int(c)] for c in code)
        cases.append(("postal_code", text, text))
    cases += [
        ("amount", "seven hundred and ten euros", "seven hundred and ten euros"),
        ("amount", "eight hundred twenty", "eight hundred twenty"),
        ("amount", "one thousand two hundred euros a month", "one thousand two hundred euros a month"),
        ("count", "three", "three"), ("count", "two of us", "two of us"), ("count", "just me", "just me"),
        ("yes_no", "yes", "yes"), ("yes_no", "no", "no"), ("yes_no", "yes, that's right", "yes that's right"),
        ("field_choice", "the postal code", "the postal code"),
    ]
    return cases


def synth(text: str, voice: str, rate: int, channel: str, tmp: Path) -> bytes:
    raw, clean, out = tmp / "raw.wav", tmp / "clean.wav", tmp / "out.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(clean), "pad", "0.3", "0.3"], check=True)
    if channel == "phone":
        ph = tmp / "ph.wav"
        subprocess.run(["sox", str(clean), "-r", "8000", "-e", "u-law", str(ph), "highpass", "300", "lowpass", "3400"], check=True)
        subprocess.run(["sox", str(ph), "-r", "16000", "-e", "signed-integer", "-b", "16", str(out)], check=True)
    elif channel == "noisy":
        with wave.open(str(clean)) as w:
            seconds = w.getnframes() / 16000
        noise = tmp / "noise.wav"
        subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(noise), "synth", str(seconds),
                        "pinknoise", "vol", "0.04"], check=True)
        subprocess.run(["sox", "-m", str(clean), str(noise), "-b", "16", str(out)], check=True)
    else:
        out = clean
    with wave.open(str(out)) as w:
        return w.readframes(w.getnframes())


def wer(ref: list[str], hyp: list[str]) -> tuple[int, int]:
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d.copy(), i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return int(d[-1]), len(ref)


def norm(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c in " '" else " " for c in text.lower()).split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voices", type=int, default=len(VOICES), help="how many voice/rate/channel set-ups")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()

    from voicebot.asr.pocketsphinx import PocketSphinxEngine

    sentences = [s for s in (ROOT / "tests/data/open_sentences.txt").read_text().splitlines() if s and s[0] != "#"]
    t0 = time.time()
    engine = PocketSphinxEngine(GrammarSet.load(ROOT / "grammars"), sentences, cache_dir=Path(tempfile.mkdtemp()))
    print(f"engine {engine.name} {engine.model_name}: ready in {time.time() - t0:.2f} s")
    rng = random.Random(args.seed)
    top: dict[str, list[bool]] = defaultdict(list)
    nbest: dict[str, list[bool]] = defaultdict(list)
    errors = words = kept = keyed = 0
    audio_s = decode_s = 0.0
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for voice, rate, channel in VOICES[: args.voices]:
            stream = engine.open_stream()  # one caller per voice, as in a call
            cases = [(None, s, s) for s, _ in OPEN] + grammar_cases(rng)
            keys = {s: k for s, k in OPEN}
            for grammar, said, ref in cases:
                pcm = synth(said, voice, rate, channel, tmp)
                stream.set_grammar(grammar)
                start = time.perf_counter()
                for i in range(0, len(pcm), 3200):
                    stream.accept(pcm[i : i + 3200])
                result = stream.finish()
                decode_s += time.perf_counter() - start
                audio_s += len(pcm) / 32000
                texts = [a.text for a in result.alternatives]
                hyp = texts[0] if texts else ""
                if grammar is None:
                    e, n = wer(norm(ref), norm(hyp))
                    errors, words = errors + e, words + n
                    if keys[said]:
                        keyed += 1
                        kept += all(k in norm(hyp) for k in keys[said])
                else:
                    top[grammar].append(hyp == " ".join(norm(ref)))
                    nbest[grammar].append(" ".join(norm(ref)) in texts)
            stream.close()
    print(f"set-ups: {args.voices} voices x rates x channels")
    print(f"open speech: WER {errors / max(1, words):.1%}, key words kept {kept}/{keyed}")
    for g in sorted(top):
        print(f"{g:13s} top-1 {sum(top[g])}/{len(top[g])}  in n-best {sum(nbest[g])}/{len(nbest[g])}")
    print(f"real-time factor {decode_s / audio_s:.3f} (decode {decode_s:.1f} s for {audio_s:.1f} s of audio)")


if __name__ == "__main__":
    main()
