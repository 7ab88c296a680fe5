"""Evaluation gates: run lm-eval on a model (or base + PEFT adapter) against a profile of
evals/gates.yaml and decide each gate. A gate fails unless it measured and passed.

    from llamaforge.gates import run_gates, render_gate_table
    report = run_gates("out/merged", profile="release", allow_code_execution=True)
    report.passed, report.gates, report.to_dict()

Modules: profiles (gates.yaml), verdict (pure decisions), identity / answer_checks (pure scoring),
code_execution (the HumanEval sandbox), task_functions (what the lm-eval task YAMLs call),
runner (lm-eval), report (table, report.md, files). Nothing heavy is imported here."""

from __future__ import annotations

from .profiles import BaseComparison, GateProfile, GateSpec, get_gate_profile, load_gate_profiles
from .report import render_gate_table, render_markdown, summary_line
from .runner import run_gates
from .verdict import GateReport, GateResult, TaskOutcome, decide_gate

__all__ = [
    "BaseComparison", "GateProfile", "GateReport", "GateResult", "GateSpec", "TaskOutcome", "decide_gate",
    "get_gate_profile", "load_gate_profiles", "render_gate_table", "render_markdown", "run_gates", "summary_line",
]
