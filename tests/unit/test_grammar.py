"""The JSGF subset parser and what engines get out of it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from voicebot.asr.grammar import GrammarError, GrammarSet, normalize_result

GRAMMARS = Path(__file__).resolve().parents[2] / "grammars"

COMMANDS = """#JSGF V1.0;
grammar commands;
public <commands> = agent | operator | repeat that | goodbye;
"""


def _set(**texts: str) -> GrammarSet:
    return GrammarSet.from_texts({"commands": COMMANDS, **texts})


def test_finite_grammar_lists_every_sentence_with_commands_merged() -> None:
    gs = _set(yes_no="public <yes_no> = (yes | no) [please];")
    phrases = gs["yes_no"].phrases()
    assert phrases is not None
    assert set(phrases) == {"yes", "yes please", "no", "no please", "agent", "operator", "repeat that", "goodbye"}


def test_repetition_makes_the_grammar_infinite_so_no_phrase_list() -> None:
    gs = _set(digits="public <digits> = <d>+; <d> = one | two;")
    assert gs["digits"].phrases() is None
    assert gs["digits"].vocabulary == {"one", "two", "agent", "operator", "repeat", "that", "goodbye"}


def test_phrase_list_gives_up_above_the_limit() -> None:
    gs = _set(big="public <big> = <d> <d> <d>; <d> = zero | one | two | three | four | five | six | seven | eight | nine;")
    assert len(gs["big"].phrases(limit=5000) or []) == 1000 + 4
    assert gs["big"].phrases(limit=100) is None


def test_to_jsgf_is_self_contained_and_offers_commands_at_the_root() -> None:
    gs = _set(count="public <count> = [just] <n> [people]; <n> = one | two;")
    text = gs["count"].to_jsgf()
    assert text.startswith("#JSGF V1.0;")
    assert "public <count_root> = <s_count> | <c_commands>;" in text
    assert "<s_n> = (one | two);" in text
    assert "<c_commands> =" in text
    # the commands grammar itself is not merged with itself
    assert "<c_" not in gs["commands"].to_jsgf()


def test_letter_names_keep_their_period_in_the_grammar_and_lose_it_in_results() -> None:
    gs = _set(pid="public <pid> = <d>+ (a. | d.); <d> = one | two;")
    assert {"a.", "d."} <= gs["pid"].vocabulary
    assert normalize_result("ONE two d.") == "one two d"


def test_comments_quoted_tokens_and_star_are_understood() -> None:
    gs = _set(g='// a comment\n/* block\ncomment */ public <g> = "thank you" <x>*; <x> = very;')
    assert gs["g"].vocabulary >= {"thank", "you", "very"}


def test_weights_reach_the_jsgf_an_engine_decodes_but_not_its_phrase_list() -> None:
    gs = _set(g="public <g> = /20/ dash | /1/ x.;")
    assert "(/20/ dash | /1/ x.)" in gs["g"].to_jsgf()
    assert {"dash", "x."} <= set(gs["g"].phrases() or [])


def test_log_prior_is_the_normalised_weight_of_each_choice_along_the_parse() -> None:
    gs = _set(g="public <g> = <digit>+ (/3/ dash | /1/ x.) [please];\n<digit> = one | two;")
    g = gs["g"]
    assert g.log_prior("one two dash".split()) == pytest.approx(math.log(3 / 4))
    assert g.log_prior("two x. please".split()) == pytest.approx(math.log(1 / 4))
    assert g.log_prior("goodbye".split()) == 0.0  # a command: no weights on its way
    assert g.log_prior("dash".split()) is None  # + needs a digit
    assert g.log_prior("one dash dash".split()) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("public <g> = one | ;", "g.jsgf:1: empty alternative"),
        ("public <g> = one\n | <missing>;", "g.jsgf:2: undefined rule <missing>"),
        ("public <g> = (one | two;", "g.jsgf:1: expected ')'"),
        ("\n\npublic <g> = one {tag};", "g.jsgf:3: unexpected character '{' (tags are not supported"),
        ("public <g> = /2/ one | two;", "g.jsgf:1: give every alternative of a choice a weight, or none"),
        ("<g> = one;", "g.jsgf:1: no public rule"),
        ("public <g> = one <g>;", "g.jsgf:1: rule <g> is recursive"),
        ("public <g> = one;\n<g> = two;", "g.jsgf:2: rule <g> defined twice"),
    ],
)
def test_syntax_errors_name_file_and_line_on_one_line(text: str, message: str) -> None:
    with pytest.raises(GrammarError) as err:
        GrammarSet.from_texts({"g": text})
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_missing_directory_is_a_grammar_error(tmp_path: Path) -> None:
    with pytest.raises(GrammarError, match="no .jsgf grammar files"):
        GrammarSet.load(tmp_path)
    with pytest.raises(GrammarError, match="not found"):
        GrammarSet.load(tmp_path / "nope")


def test_project_grammars_load_and_cover_the_dialogue_states() -> None:
    gs = GrammarSet.load(GRAMMARS)
    assert {"yes_no", "personal_id", "postal_code", "amount", "count", "field_choice", "commands"} <= set(gs)
    for name in gs:
        if name != "commands":
            assert "agent" in gs[name].vocabulary, name
    pid = gs["personal_id"].vocabulary
    assert {"zero", "oh", "nine", "dash", "plus", "a.", "d.", "y.", "h."} <= pid
    assert "g." not in pid and "q." not in pid
    assert {"hundred", "thousand", "euros", "month"} <= gs["amount"].vocabulary
    assert {"twenty", "people", "myself"} <= gs["count"].vocabulary
