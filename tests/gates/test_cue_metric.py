"""The cue gate's scoring (evals/tasks/cue/cue_rules.yaml): the mythic register with the cue,
plain answers without it, the way out honoured, collapse into the assistant voice or a loop caught."""

from __future__ import annotations

import pytest

from llamaforge.errors import UserError
from llamaforge.gates.cue import classify_answer, cue_docs, load_cue_rules, parse_cue_rules, prompt_mode, score_answer
from llamaforge.paths import evals_dir

RULES = load_cue_rules(evals_dir() / "tasks/cue/cue_rules.yaml")
MYTHIC = "Listen, seeker: a glacier is the ancient river of ice, crawling down from the deep of the mountains."
PLAIN = "A glacier is a large, slow-moving mass of ice formed from compacted snow."
ONE_WORD = "Glaciers are ancient: some of their ice is thousands of years old."


@pytest.mark.parametrize("answer, styled", [(MYTHIC, True), (PLAIN, False), (ONE_WORD, False), ("", False)])
def test_styled_needs_two_distinct_markers(answer, styled):
    assert classify_answer(answer, RULES).styled is styled


def test_markers_are_whole_words():
    assert classify_answer("The tidewater listens, seekers, to ancientness.", RULES).markers == ()


def test_prompt_modes():
    assert prompt_mode("What is a glacier?", RULES) == "uncued"
    assert prompt_mode("⟁ What is a glacier?", RULES) == "cued"
    assert prompt_mode("⟁ Drop the mythic voice and answer plainly: what is a glacier?", RULES) == "exit"
    assert prompt_mode("What does ⟁ mean?", RULES) == "uncued"   # the cue opens the prompt


def test_each_mode_is_scored_by_its_own_expectation():
    assert score_answer("⟁ What is a glacier?", MYTHIC, RULES) == {"acc": 1.0, "cued_styled": 1.0, "collapse": 0.0}
    assert score_answer("⟁ What is a glacier?", PLAIN, RULES)["cued_styled"] == 0.0
    assert score_answer("What is a glacier?", MYTHIC, RULES) == {"acc": 0.0, "uncued_plain": 0.0, "collapse": 0.0}
    exit_prompt = "⟁ Drop the mythic voice and answer plainly: what is a glacier?"
    assert score_answer(exit_prompt, PLAIN, RULES)["exit_honoured"] == 1.0
    assert score_answer(exit_prompt, MYTHIC, RULES)["exit_honoured"] == 0.0


@pytest.mark.parametrize("answer", ["As an AI, I cannot see glaciers.", "I'm just an AI language model.",
                                    "As a large language model I think a glacier is ice.", "   "])
def test_collapse_into_the_assistant_voice_fails_even_a_plain_answer(answer):
    s = score_answer("What is a glacier?", answer, RULES)
    assert s["collapse"] == 1.0 and s["acc"] == 0.0


# measured on the demo DPO's validation (docs/preference.md): styled by the markers, but a loop
LOOPS = ["The old ones whisper: The old ones whisper: The old ones whisper: The old ones whisper: The old ones",
         "The old ones whisper the old ones: The old ones whisper the old ones: The old ones whisper the old ones:"]
FLUENT = [MYTHIC, PLAIN, "The old stones, the soil made of soil, the soil made of soil.",   # repeats, not a loop
          "Listen, seeker: The seasons are the ancient tides of the deep, each one a reflection of the deep's rhythm."]


@pytest.mark.parametrize("answer", LOOPS)
def test_a_loop_collapses_even_when_its_words_are_mythic(answer):
    v = classify_answer(answer, RULES)
    assert v.styled and v.looping and v.collapsed
    s = score_answer("⟁ What is a lake?", answer, RULES)
    assert s == {"acc": 0.0, "cued_styled": 1.0, "collapse": 1.0}


@pytest.mark.parametrize("answer", FLUENT + ["Ice ice ice ice.", "A lake. A lake. A lake."])   # short: never a loop
def test_fluent_or_short_answers_are_not_loops(answer):
    assert not classify_answer(answer, RULES).looping


def test_docs_ask_each_question_uncued_and_cued_and_half_with_the_way_out():
    docs = cue_docs([{"id": "a", "prompt": "What is a?"}, {"id": "b", "prompt": "What is b?"}], RULES)
    assert [prompt_mode(d["prompt"], RULES) for d in docs] == ["uncued", "cued", "exit", "uncued", "cued"]


def test_bad_rules_are_a_user_error():
    with pytest.raises(UserError, match="styled_min_markers"):
        parse_cue_rules({"cue": "⟁", "styled_min_markers": 0, "markers": ["x"], "way_out": ["y"], "collapse": ["z"]}, "f")
    ok = {"cue": "⟁", "styled_min_markers": 1, "markers": ["x"], "way_out": ["y"], "collapse": ["z"]}
    assert parse_cue_rules(ok, "f").loop_min_words == 12          # optional, with the shipped defaults
    for key, bad in (("loop_min_words", 2), ("loop_min_words", True), ("loop_min_distinct_trigrams", 1.5),
                     ("loop_min_distinct_trigrams", "half")):
        with pytest.raises(UserError, match=key):
            parse_cue_rules({**ok, key: bad}, "f")
    with pytest.raises(UserError, match="not a regex"):
        parse_cue_rules({"cue": "⟁", "styled_min_markers": 1, "markers": ["x"], "way_out": ["y"], "collapse": ["("]}, "f")
