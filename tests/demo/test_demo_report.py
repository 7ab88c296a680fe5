"""The demo's base-vs-tuned table: one row per gate, each stage's value, and the target each stage
was held to (the validation's wider no-regression bound named beside the release one)."""

from __future__ import annotations

from llamaforge.demo.workflow import DemoResult, demo_report_markdown


def _gate(name, value, base, comparison, threshold=None, verdict="pass"):
    return {"name": name, "value": value, "base_value": base, "threshold": threshold,
            "comparison_short": comparison, "verdict": verdict}


def test_a_stage_held_to_another_bound_is_named_beside_the_release_target():
    result = DemoResult(stage_gates={
        "validate": {"gates": [_gate("general_answers", 0.525, 0.65, "≥ base−2·se", 0.5),
                               _gate("identity", 1.0, 0.0, None, 0.9)]},
        "full": {"gates": [_gate("general_answers", 0.625, 0.65, "≥ base−se", 0.5),
                           _gate("identity", 1.0, 0.0, None, 0.9),
                           _gate("humaneval", 0.0, 0.0, "≥ base−se")]},
    })
    rows = {r["gate"]: r for r in result.gate_columns()}
    assert rows["general_answers"]["target"] == "≥ 0.5, ≥ base−se (validate: ≥ 0.5, ≥ base−2·se)"
    assert (rows["general_answers"]["validate"], rows["general_answers"]["full"]) == (0.525, 0.625)
    assert rows["identity"]["target"] == "≥ 0.9"          # the same everywhere: said once
    assert rows["humaneval"]["target"] == "≥ base−se" and "validate" not in rows["humaneval"]
    assert list(rows["general_answers"])[:3] == ["gate", "target", "base"]
    md = demo_report_markdown(result)
    assert "| general_answers | ≥ 0.5, ≥ base−se (validate: ≥ 0.5, ≥ base−2·se) | 0.650 |" in md
