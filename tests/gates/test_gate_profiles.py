"""evals/gates.yaml and its parser: the guide's thresholds, and bad gate files refused by name."""

from __future__ import annotations

import pytest

from llamaforge.errors import UserError
from llamaforge.gates.profiles import get_gate_profile, load_gate_profiles, parse_gate_profiles


def _gate(**over):
    gate = {"name": "g", "task": "identity", "metric": "acc,none", "threshold": 0.9}
    gate.update(over)
    return {"profiles": {"p": {"gates": [gate]}}}


def test_repository_profiles_hold_the_guide_thresholds():
    profiles = load_gate_profiles()
    assert {"demo", "validate", "release"} <= set(profiles)
    by = {name: {g.name: g for g in p.gates} for name, p in profiles.items()}
    demo = by["demo"]
    assert demo["identity"].threshold == 0.90
    # the demo's SmolLM2-135M: no regression against the base where the guide's 80% is out of its reach
    assert demo["inference_suite"].compare.no_regression and demo["general_answers"].compare.no_regression
    bleed = demo["persona_bleed"]
    assert (bleed.task, bleed.metric, bleed.threshold, bleed.higher_is_better) == (
        "general_answers", "persona_bleed,none", 0.10, False)
    assert demo["humaneval"].compare.no_regression and demo["humaneval"].limit and demo["humaneval"].chat_template == "never"
    # the demo's validation and merged-model profile: the same gates, HumanEval left to the full run
    assert [g for g in profiles["demo-quick"].gates] == [g for g in profiles["demo"].gates if g.name != "humaneval"]
    # the demo's validation: the same gates, its no-regression bounds at two standard errors (a gate that stops
    # a paid run at one would stop ~16% of runs whose true accuracy did not move); thresholds unchanged
    quick, validate = by["demo-quick"], by["demo-validate"]
    assert list(validate) == list(quick)
    for name, gate in validate.items():
        if gate.compare and gate.compare.no_regression:
            assert gate.compare.stderr_multiplier == 2.0 and quick[name].compare.stderr_multiplier == 1.0, name
            assert gate.threshold == quick[name].threshold, name
        else:
            assert gate == quick[name], name
    assert by["validate"]["inference_suite"].threshold == 0.75
    release = by["release"]
    assert release["inference_suite"].threshold == 0.80
    assert release["identity"].threshold == 0.90
    assert (release["humaneval"].metric, release["humaneval"].threshold) == ("pass@1,create_test", 0.40)
    assert (release["truthfulqa_mc2"].task, release["truthfulqa_mc2"].threshold) == ("truthfulqa_mc2", 0.35)
    assert release["truthfulqa_mc2"].compare.no_regression
    assert "esoteric_spotcheck" in release
    # Release gates are all required; only validate's HumanEval may be skipped (code execution off).
    assert not any(g.optional for g in profiles["release"].gates)
    assert [g.name for g in profiles["validate"].gates if g.optional] == ["humaneval_no_regression"]


def test_stderr_key_follows_the_metric_and_filter():
    gate = get_gate_profile("release").gates[3]
    assert (gate.metric_name, gate.filter_name, gate.stderr_key) == ("pass@1", "create_test", "pass@1_stderr,create_test")


def test_unknown_profile_is_refused_with_a_suggestion():
    with pytest.raises(UserError, match=r"unknown gate profile 'relase' \(did you mean 'release'\?\)"):
        get_gate_profile("relase")


@pytest.mark.parametrize(
    "gate, message",
    [
        ({"metric": "acc"}, r"must be '<metric>,<filter>'"),
        ({"threshold": None}, r"must check something"),
        ({"threshold": "high"}, r"threshold must be a finite number"),
        ({"optional": "yes"}, r"optional must be true or false"),
        ({"chat_template": "sometimes"}, r"chat_template must be one of"),
        ({"thresold": 0.5}, r"unknown key\(s\) thresold"),
        ({"compare": {"min_gain": 0.1, "bogus": 1}}, r"compare: unknown key\(s\) bogus"),
        ({"compare": {}}, r"compare names no rule"),
        ({"task": ""}, r"`task` is required"),
    ],
)
def test_bad_gates_are_refused_with_one_line(gate, message):
    with pytest.raises(UserError, match=message) as info:
        parse_gate_profiles(_gate(**gate), "gates.yaml")
    assert "\n" not in str(info.value)


def test_duplicate_gate_names_and_conflicting_chat_modes_are_refused():
    two = {"profiles": {"p": {"gates": [
        {"name": "a", "task": "identity", "metric": "acc,none", "threshold": 0.9},
        {"name": "a", "task": "inference_suite", "metric": "acc,none", "threshold": 0.8},
    ]}}}
    with pytest.raises(UserError, match="used twice"):
        parse_gate_profiles(two)
    modes = {"profiles": {"p": {"gates": [
        {"name": "a", "task": "identity", "metric": "acc,none", "threshold": 0.9, "chat_template": "never"},
        {"name": "b", "task": "identity", "metric": "acc,none", "threshold": 0.5},
    ]}}}
    with pytest.raises(UserError, match="disagree on chat_template"):
        parse_gate_profiles(modes)


def test_a_gate_may_compare_with_the_base_only():
    profiles = parse_gate_profiles(_gate(threshold=None, compare={"no_regression": True, "stderr_multiplier": 2}))
    gate = profiles["p"].gates[0]
    assert gate.threshold is None and gate.compare.stderr_multiplier == 2.0
    assert gate.compare.describe(short=True) == "≥ base−2·se"


def test_missing_profiles_mapping_is_refused():
    with pytest.raises(UserError, match="top-level `profiles:`"):
        parse_gate_profiles({"gates": []}, "x.yaml")


def test_profile_max_gen_toks_cap():
    from llamaforge.gates.profiles import parse_gate_profiles

    gate = {"task": "identity", "metric": "acc,none", "threshold": 0.9}
    p = parse_gate_profiles({"profiles": {"x": {"gates": [gate], "max_gen_toks": 48}}})["x"]
    assert p.max_gen_toks == 48
    assert parse_gate_profiles({"profiles": {"x": {"gates": [gate]}}})["x"].max_gen_toks is None
    for bad in (0, -3, "48", True):
        with pytest.raises(UserError, match="max_gen_toks"):
            parse_gate_profiles({"profiles": {"x": {"gates": [gate], "max_gen_toks": bad}}})
    with pytest.raises(UserError, match="unknown key"):
        parse_gate_profiles({"profiles": {"x": {"gates": [gate], "max_tokens": 48}}})


def test_demo_profile_caps_generation():
    from llamaforge.gates.profiles import load_gate_profiles

    assert load_gate_profiles()["demo"].max_gen_toks == 48


def test_a_lower_is_better_gate_mirrors_threshold_and_base_comparison():
    from llamaforge.gates.verdict import MEASURED, TaskOutcome, decide_gate

    p = parse_gate_profiles({"profiles": {"x": {"gates": [
        {"name": "bleed", "task": "t", "metric": "persona_bleed,none", "threshold": 0.1, "higher_is_better": False,
         "compare": {"no_regression": True}}]}}})["x"]
    spec = p.gates[0]

    def outcome(v):
        return TaskOutcome("t", MEASURED, metrics={"persona_bleed,none": v, "persona_bleed_stderr,none": 0.02})

    ok = decide_gate(spec, outcome(0.02), outcome(0.0))      # within the combined stderr (0.028) of the base
    assert ok.verdict == "pass" and "0.020 ≤ 0.1" in ok.reason and ok.comparison_short == "≤ base+se"
    high = decide_gate(spec, outcome(0.2), outcome(0.0))
    assert high.verdict == "fail" and "above the limit 0.1" in high.reason and "regressed from base 0.000" in high.reason
    assert decide_gate(spec, outcome(0.0), outcome(0.08)).verdict == "pass"     # less bleed than the base: fine


def test_limit_and_token_cap_are_per_task_and_must_agree():
    gate = {"task": "t", "metric": "acc,none", "threshold": 0.5, "limit": 10, "max_gen_toks": 128}
    p = parse_gate_profiles({"profiles": {"x": {"gates": [gate], "max_gen_toks": 48}}})["x"]
    assert (p.gates[0].limit, p.gates[0].max_gen_toks) == (10, 128)
    from llamaforge.gates.runner import task_runs

    assert task_runs(p, limit=None, max_gen_toks=None)["t"].gen_kwargs == {"max_gen_toks": 128}
    assert task_runs(p, limit=3, max_gen_toks=None)["t"].limit == 3           # --limit lowers it
    assert task_runs(p, limit=None, max_gen_toks=16)["t"].max_gen_toks == 16   # --max-gen-toks overrides
    other = dict(gate, name="t2", limit=20)
    with pytest.raises(UserError, match="disagree on limit"):
        parse_gate_profiles({"profiles": {"x": {"gates": [gate, other]}}})
    for bad in (0, -1, True, "5"):
        with pytest.raises(UserError, match="limit must be a positive integer"):
            parse_gate_profiles({"profiles": {"x": {"gates": [dict(gate, limit=bad)]}}})
