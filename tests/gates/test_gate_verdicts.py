"""Verdict logic (pure): a gate fails unless it measured and passed."""

from __future__ import annotations

import math

import pytest

from llamaforge.gates.profiles import BaseComparison, GateSpec
from llamaforge.gates.verdict import (
    CODE_EXECUTION_NOT_ALLOWED,
    EVAL_FAILED,
    LOAD_FAILED,
    MEASURED,
    UNAVAILABLE,
    GateReport,
    TaskOutcome,
    answers_unchanged,
    decide_gate,
    with_failure,
)

GATE = GateSpec(name="identity", task="identity", metric="acc,none", threshold=0.9)


def measured(value, stderr=0.05, task="identity", key="acc,none"):
    name, filt = key.split(",")
    return TaskOutcome(task, MEASURED, metrics={key: value, f"{name}_stderr,{filt}": stderr, "alias": task})


def test_pass_at_or_above_threshold():
    result = decide_gate(GATE, measured(0.95))
    assert result.verdict == "pass" and result.value == 0.95 and result.stderr == 0.05
    assert decide_gate(GATE, measured(0.9)).verdict == "pass"


def test_fail_below_threshold_says_by_how_much():
    result = decide_gate(GATE, measured(0.5))
    assert result.verdict == "fail"
    assert "0.500 is below the threshold 0.9" in result.reason


def test_missing_metric_key_fails_and_names_what_was_reported():
    spec = GateSpec(name="he", task="humaneval", metric="pass@1,none", threshold=0.4)
    outcome = measured(0.9, task="humaneval", key="pass@1,create_test")
    result = decide_gate(spec, outcome)
    assert result.verdict == "fail" and result.value is None
    assert "'pass@1,none' is not in humaneval's results" in result.reason
    assert "pass@1,create_test" in result.reason


@pytest.mark.parametrize("bad", [math.nan, math.inf, None, "N/A"])
def test_nan_or_non_numeric_value_fails(bad):
    result = decide_gate(GATE, TaskOutcome("identity", MEASURED, metrics={"acc,none": bad}))
    assert result.verdict == "fail" and result.value is None
    assert "not a finite number" in result.reason


def test_stderr_na_is_recorded_as_missing():
    result = decide_gate(GATE, TaskOutcome("identity", MEASURED, metrics={"acc,none": 1.0, "acc_stderr,none": "N/A"}))
    assert result.verdict == "pass" and result.stderr is None


@pytest.mark.parametrize("status", [UNAVAILABLE, LOAD_FAILED, CODE_EXECUTION_NOT_ALLOWED, EVAL_FAILED])
def test_unmeasured_required_gate_fails_with_the_reason(status):
    result = decide_gate(GATE, TaskOutcome("identity", status, reason=f"because {status}"))
    assert result.verdict == "fail" and result.reason == f"because {status}"


def test_unavailable_dataset_fails_a_required_gate():
    spec = GateSpec(name="tqa", task="truthfulqa_mc2", metric="acc,none", threshold=0.35)
    result = decide_gate(spec, TaskOutcome("truthfulqa_mc2", UNAVAILABLE, reason="dataset not available"))
    assert result.verdict == "fail" and "dataset not available" in result.reason


@pytest.mark.parametrize("status", [UNAVAILABLE, CODE_EXECUTION_NOT_ALLOWED])
def test_optional_gate_is_skipped_and_says_why(status):
    spec = GateSpec(name="tqa", task="truthfulqa_mc2", metric="acc,none", threshold=0.35, optional=True)
    result = decide_gate(spec, TaskOutcome("truthfulqa_mc2", status, reason="not here"))
    assert result.verdict == "skipped"
    assert result.reason == "skipped (optional in this profile): not here"


def test_optional_gate_is_not_skipped_when_the_task_is_broken_or_measured_low():
    spec = GateSpec(name="x", task="identity", metric="acc,none", threshold=0.9, optional=True)
    assert decide_gate(spec, TaskOutcome("identity", LOAD_FAILED, reason="bad yaml")).verdict == "fail"
    assert decide_gate(spec, measured(0.1)).verdict == "fail"


def test_min_gain_over_base():
    spec = GateSpec(name="g", task="identity", metric="acc,none", threshold=None, compare=BaseComparison(min_gain=0.2))
    assert decide_gate(spec, measured(0.9), measured(0.6)).verdict == "pass"
    result = decide_gate(spec, measured(0.7), measured(0.6))
    assert result.verdict == "fail" and "gain +0.100 over base 0.600 is below the required +0.200" in result.reason
    assert (result.value, result.base_value) == (0.7, 0.6)


def test_no_regression_beyond_combined_stderr():
    spec = GateSpec(name="he", task="identity", metric="acc,none", threshold=None, compare=BaseComparison(no_regression=True))
    # combined stderr = sqrt(0.03² + 0.04²) = 0.05
    assert decide_gate(spec, measured(0.46, 0.03), measured(0.50, 0.04)).verdict == "pass"
    result = decide_gate(spec, measured(0.44, 0.03), measured(0.50, 0.04))
    assert result.verdict == "fail" and "regressed from base 0.500 to 0.440" in result.reason
    doubled = GateSpec(name="he", task="identity", metric="acc,none", threshold=None,
                       compare=BaseComparison(no_regression=True, stderr_multiplier=2.0))
    assert decide_gate(doubled, measured(0.44, 0.03), measured(0.50, 0.04)).verdict == "pass"


def test_no_regression_without_stderr_compares_strictly():
    spec = GateSpec(name="he", task="identity", metric="acc,none", threshold=None, compare=BaseComparison(no_regression=True))
    no_se = TaskOutcome("identity", MEASURED, metrics={"acc,none": 0.49})
    base = TaskOutcome("identity", MEASURED, metrics={"acc,none": 0.5})
    result = decide_gate(spec, no_se, base)
    assert result.verdict == "fail" and "stderr missing" in result.reason


def test_comparison_without_a_measured_base_fails():
    spec = GateSpec(name="g", task="identity", metric="acc,none", threshold=0.5, compare=BaseComparison(no_regression=True))
    assert "no base model" in decide_gate(spec, measured(0.9)).reason
    result = decide_gate(spec, measured(0.9), TaskOutcome("identity", EVAL_FAILED, reason="OOM"))
    assert result.verdict == "fail" and "base model not measured: OOM" in result.reason


def test_base_value_is_recorded_without_a_comparison_rule():
    result = decide_gate(GATE, measured(0.95), measured(0.0, 0.0))
    assert result.verdict == "pass" and result.base_value == 0.0


def test_both_threshold_and_comparison_must_hold():
    spec = GateSpec(name="g", task="identity", metric="acc,none", threshold=0.4, compare=BaseComparison(no_regression=True))
    result = decide_gate(spec, measured(0.3, 0.01), measured(0.6, 0.01))
    assert result.verdict == "fail"
    assert "below the threshold" in result.reason and "regressed" in result.reason


def test_with_failure_fails_a_passing_gate_and_keeps_reasons():
    passing = decide_gate(GATE, measured(1.0))
    failed = with_failure(passing, "adapter had no effect")
    assert failed.verdict == "fail" and failed.reason == "adapter had no effect"
    both = with_failure(decide_gate(GATE, measured(0.0)), "adapter had no effect")
    assert both.reason.startswith("adapter had no effect; 0.000 is below")


def test_answers_unchanged_needs_shared_prompts():
    assert answers_unchanged({"a": "x", "b": "y"}, {"a": "x", "b": "y"})
    assert not answers_unchanged({"a": "x", "b": "y"}, {"a": "x", "b": "z"})
    assert not answers_unchanged({}, {})
    assert not answers_unchanged({"a": "x"}, {"b": "x"})


def test_report_passes_only_when_every_gate_passed_or_was_skipped():
    ok = decide_gate(GATE, measured(1.0))
    skipped = decide_gate(GateSpec(name="t", task="t", metric="acc,none", threshold=0.3, optional=True),
                          TaskOutcome("t", UNAVAILABLE, reason="offline"))
    failed = decide_gate(GATE, measured(0.1))
    base = dict(profile="p", model="m", adapter=None, base_model=None, persona="Leviathan", limit=None)
    assert GateReport(gates=[ok, skipped], **base).passed
    report = GateReport(gates=[ok, skipped, failed], **base)
    assert not report.passed
    data = report.to_dict()
    assert data["passed"] is False and data["skipped"] == ["t"] and data["failed"] == ["identity"]
    assert not GateReport(gates=[], **base).passed
