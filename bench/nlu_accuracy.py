"""Intent matching accuracy: leave-one-out on the scenario's own examples, and
held-out phrasings (tests/data/nlu_heldout*.json) the matcher never saw.

Usage: python bench/nlu_accuracy.py [-v]
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from voicebot.config import PROJECT_ROOT
from voicebot.dialogue.nlu import IntentMatcher
from voicebot.dialogue.scenario import load_scenario


def leave_one_out(scenario) -> tuple[int, int]:
    ok = n = 0
    for intent in scenario.intents:
        for k, example in enumerate(intent.examples):
            others = [replace(i, examples=i.examples[:k] + i.examples[k + 1:]) if i is intent else i
                      for i in scenario.intents]
            m = IntentMatcher(others, scenario.intent_threshold, scenario.concepts, scenario.off_topic)
            ok += m.match(example).intent == intent.id
            n += 1
    return ok, n


def held_out(matcher: IntentMatcher, path: Path, verbose: bool) -> tuple[int, int, int, int]:
    data = json.loads(path.read_text())
    ok = n = none_ok = none_n = 0
    for intent, phrases in list(data["intents"].items()) + [("none", data["none"])]:
        for p in phrases:
            got = matcher.match(p)
            hit = (got.intent or "none") == intent
            if intent == "none":
                none_ok += hit
                none_n += 1
            else:
                ok += hit
                n += 1
            if verbose and not hit:
                print(f"  {intent:24s} -> {got.intent or 'none':24s} {got.confidence:.2f}  {p}")
    return ok, n, none_ok, none_n


def main() -> None:
    verbose = "-v" in sys.argv
    scenario = load_scenario(PROJECT_ROOT / "scenarios" / "benefits.toml")
    ok, n = leave_one_out(scenario)
    print(f"leave-one-out on scenario examples: {ok}/{n} = {ok / n:.1%}")
    matcher = IntentMatcher(scenario.intents, scenario.intent_threshold, scenario.concepts, scenario.off_topic)
    for path in sorted((PROJECT_ROOT / "tests" / "data").glob("nlu_heldout*.json")):
        ok, n, nok, nn = held_out(matcher, path, verbose)
        total = (ok + nok) / (n + nn)
        print(f"{path.name}: in-scope {ok}/{n} = {ok / n:.1%}, off-topic rejected {nok}/{nn} = {nok / nn:.1%}, "
              f"overall {total:.1%}")


if __name__ == "__main__":
    main()
