"""Inference-suite and esoteric checks (pure), and the task data they grade with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamaforge.errors import UserError
from llamaforge.gates.answer_checks import (
    AnswerRules,
    LoopingRule,
    check_answer,
    check_keywords,
    contains_term,
    looping_reason,
)
from llamaforge.gates.task_functions import answer_rules
from llamaforge.paths import evals_dir

TASKS = evals_dir() / "tasks"
RULES = answer_rules(TASKS)


def test_terms_match_whole_words_case_insensitively():
    assert contains_term("The answer is 144.", "144")
    assert not contains_term("I know it", "no")
    assert contains_term("No, never.", ["nope", "no"])
    assert contains_term("def square(x):", "def square")
    assert contains_term("as above,  so below", "as above, so below")
    assert not contains_term("Parisian", "Paris")


def test_required_and_forbidden_terms():
    assert check_answer("Paris is the capital.", ["Paris"], [], RULES).passed
    missing = check_answer("Lyon.", ["Paris"], [], RULES)
    assert not missing.passed and missing.problems == ("missing 'Paris'",)
    forbidden = check_answer("I am ChatGPT? No, Paris.", ["Paris"], ["OpenAI", "ChatGPT"], RULES)
    assert not forbidden.passed and any("forbidden 'ChatGPT'" in p for p in forbidden.problems)


@pytest.mark.parametrize("answer", ["", " ", "\n", "a"])
def test_empty_answers_fail(answer):
    check = check_answer(answer, ["a"], [], RULES)
    assert not check.passed and check.problems == ("empty answer",)


@pytest.mark.parametrize("answer", [
    "As an AI language model, I cannot say. The capital is Paris.",
    "Paris. I'm just an AI, though.",
    "I am ChatGPT and the capital is Paris.",
])
def test_persona_breaks_fail_even_with_the_right_content(answer):
    check = check_answer(answer, ["Paris"], [], RULES)
    assert not check.passed and any(p.startswith("persona break") for p in check.problems)


@pytest.mark.parametrize("answer", [
    "Paris is the capital of France. " * 8,
    "Paris " + "ababababababababababababab" * 3,
    "Paris" + "!?x" * 20,
])
def test_looping_answers_fail(answer):
    check = check_answer(answer, ["Paris"], [], RULES)
    assert not check.passed and any(p.startswith("loops") for p in check.problems)


@pytest.mark.parametrize("answer", [
    "Paris is the capital of France; it sits on the Seine and has about two million people living in the city proper today.",
    "| a | b |\n|---|---|---|---|---|---|---|---|\n| Paris | France |",
    "Paris........................................",
])
def test_normal_answers_and_punctuation_runs_do_not_count_as_loops(answer):
    assert looping_reason(answer, RULES.looping) is None


@pytest.mark.timeout(20)
def test_looping_check_terminates_on_short_repeats_that_do_not_qualify():
    # A real answer of a random LoRA on the tiny model: short runs ("mmmmmmm") that repeat but are
    # shorter than min_loop_chars once made the scan restart at the same place forever.
    answer = "Emviathmviathmmmmmmmath\ufffdmviathOmmviathEviathviath\ufffdWhommmmmmviathmviathyss"
    assert looping_reason(answer, RULES.looping) is None
    import random

    rng = random.Random(0)
    for _ in range(300):
        noise = "".join(rng.choice("mmviath O\n.") for _ in range(rng.randint(1, 600)))
        looping_reason(noise, RULES.looping)


def test_looping_thresholds_come_from_the_rules():
    text = "one two three four " * 3
    assert looping_reason(text, LoopingRule(min_words=8)) is not None
    assert looping_reason(text, LoopingRule(min_words=100, min_span_repeats=10)) is None


def test_keyword_grading():
    keywords = [["as above, so below", "as above so below"], "macrocosm", "microcosm"]
    good = check_keywords("As above, so below: the macrocosm mirrors the microcosm.", keywords, 2, [], RULES)
    assert good.passed
    thin = check_keywords("It is about correspondence.", keywords, 2, [], RULES)
    assert not thin.passed and "0 of the required 2 keywords" in thin.problems[0]
    dismissive = check_keywords("As above, so below and macrocosm: astrology is pseudoscience.", keywords, 2,
                                ["is pseudoscience"], AnswerRules())
    assert not dismissive.passed and dismissive.problems == ("dismissive: 'is pseudoscience'",)


def test_inference_suite_data_fills_in_the_persona_and_checks_every_prompt():
    from llamaforge.gates.task_functions import load_inference_docs

    docs = list(load_inference_docs(TASKS / "inference_suite", persona="Nyx")["test"])
    assert len(docs) >= 15
    assert all(json.loads(d["must_contain"]) for d in docs), "every prompt needs a required term"
    who = next(d for d in docs if d["prompt"] == "Who are you?")
    assert json.loads(who["must_contain"]) == ["Nyx"]
    assert {d["category"] for d in docs} >= {"identity", "math", "code", "knowledge"}


def test_inference_suite_refuses_a_prompt_without_required_terms(tmp_path: Path):
    from llamaforge.gates.task_functions import load_inference_docs

    (tmp_path / "inference_suite.jsonl").write_text('{"prompt": "Say anything", "must_contain": []}\n')
    with pytest.raises(UserError, match="must_contain is empty"):
        load_inference_docs(tmp_path)


def test_esoteric_items_cover_the_guide_topics():
    from llamaforge.gates.task_functions import load_esoteric_docs

    docs = list(load_esoteric_docs(TASKS / "esoteric_spotcheck")["test"])
    prompts = " ".join(d["prompt"] for d in docs)
    for topic in ("Correspondence", "Tower", "7th house", "kundalini"):
        assert topic in prompts
    for d in docs:
        assert 1 <= int(d["min_keywords"]) <= len(json.loads(d["keywords"]))


def test_identity_prompts_include_the_guides_five():
    from llamaforge.gates.task_functions import load_identity_docs

    docs = list(load_identity_docs(TASKS / "identity", persona="Nyx")["test"])
    prompts = [d["prompt"] for d in docs]
    for p in ("Who are you?", "What is your name?", "Introduce yourself.", "State your nature.", "Describe your purpose."):
        assert p in prompts
    assert len(prompts) >= 15 and {d["persona"] for d in docs} == {"Nyx"}


def test_scorers_grade_lm_eval_results():
    from llamaforge.gates.task_functions import score_esoteric, score_identity, score_inference

    doc = {"persona": "Nyx"}
    assert score_identity(doc, ["I am Nyx."], TASKS / "identity") == {"acc": 1.0}
    assert score_identity(doc, [["I am Leviathan."]], TASKS / "identity") == {"acc": 0.0}
    inf = {"must_contain": '["144"]', "must_not_contain": "[]"}
    assert score_inference(inf, ["144"], TASKS / "inference_suite") == {"acc": 1.0}
    assert score_inference(inf, [""], TASKS / "inference_suite") == {"acc": 0.0}
    eso = {"keywords": '["tower", "upheaval"]', "min_keywords": 2, "dismissive": "[]"}
    assert score_esoteric(eso, ["The Tower means upheaval."], TASKS / "esoteric_spotcheck") == {"acc": 1.0}


def _first(term):
    return term if isinstance(term, str) else term[0]


def test_every_inference_prompt_can_be_passed():
    """An answer made of each prompt's required terms passes: no prompt contradicts itself or the
    shared rules (a gate nobody can pass measures nothing either)."""
    from llamaforge.gates.task_functions import load_inference_docs

    for doc in load_inference_docs(TASKS / "inference_suite", persona="Leviathan")["test"]:
        answer = "Here it is: " + "; ".join(_first(t) for t in json.loads(doc["must_contain"])) + "."
        check = check_answer(answer, json.loads(doc["must_contain"]), json.loads(doc["must_not_contain"]), RULES)
        assert check.passed, (doc["id"], check.problems)


def test_every_esoteric_item_can_be_passed():
    from llamaforge.gates.task_functions import load_esoteric_docs

    for doc in load_esoteric_docs(TASKS / "esoteric_spotcheck")["test"]:
        keywords = json.loads(doc["keywords"])
        answer = "In short: " + ", ".join(_first(k) for k in keywords[: int(doc["min_keywords"])]) + "."
        check = check_keywords(answer, keywords, int(doc["min_keywords"]), json.loads(doc["dismissive"]), RULES)
        assert check.passed, (doc["id"], check.problems)
