"""Gate verdicts: pure functions from what lm-eval measured to pass / fail / skipped.

A gate fails unless it measured and passed: a task that did not load, a dataset not available
offline, code execution not allowed, a missing metric key or a NaN value all fail the gate with
the reason. Only a gate the profile marks `optional` may be *skipped* instead, and only when its
data or code execution was unavailable; the report says so. A measured optional gate counts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .profiles import GateSpec

# TaskOutcome.status values
MEASURED = "measured"
UNAVAILABLE = "unavailable"  # the dataset cannot be had (offline, not cached, missing package data)
LOAD_FAILED = "load_failed"  # the task itself is broken (bad YAML, import error)
CODE_EXECUTION_NOT_ALLOWED = "code_execution_not_allowed"
EVAL_FAILED = "eval_failed"  # the model or the evaluation raised
NOT_RUN = "not_run"
# Statuses an optional gate may be skipped on: the environment lacked something, the gate is not broken.
SKIPPABLE = frozenset({UNAVAILABLE, CODE_EXECUTION_NOT_ALLOWED})

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"


@dataclass(frozen=True)
class TaskOutcome:
    """What happened when one lm-eval task ran on one model. `metrics` is lm-eval's
    `results[task]` dict (`{"acc,none": 0.8, "acc_stderr,none": 0.1, ...}`)."""

    task: str
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    n_samples: int | None = None
    chat_template: bool | None = None
    seconds: float | None = None   # the task's evaluation time on this model (None: read from a cache or not run)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GateResult:
    name: str
    task: str
    metric: str
    value: float | None
    stderr: float | None
    threshold: float | None
    base_value: float | None
    base_stderr: float | None
    verdict: str  # pass | fail | skipped
    reason: str
    optional: bool = False
    comparison: str | None = None
    comparison_short: str | None = None
    higher_is_better: bool = True

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def read_metric(outcome: TaskOutcome, spec: GateSpec) -> tuple[float | None, float | None, str | None]:
    """(value, stderr, problem). `problem` says why there is no usable value; stderr is None when
    lm-eval gave none (it writes "N/A")."""
    if spec.metric not in outcome.metrics:
        have = sorted(k for k in outcome.metrics if "," in k and "_stderr," not in k)
        return None, None, (
            f"metric {spec.metric!r} is not in {outcome.task}'s results "
            f"(it reported: {', '.join(have) or 'nothing'}); check the metric name and filter"
        )
    raw = outcome.metrics[spec.metric]
    value = _finite(raw)
    if value is None:
        return None, None, f"metric {spec.metric!r} is {raw!r}, not a finite number; nothing was measured"
    return value, _finite(outcome.metrics.get(spec.stderr_key)), None


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def _compare(spec: GateSpec, value: float, stderr: float | None, base_value: float,
             base_stderr: float | None) -> list[str]:
    """Failure reasons of the base comparison (empty when it holds)."""
    rule = spec.compare
    failures: list[str] = []
    if rule is None:
        return failures
    # where lower is better, a gain is a drop: compare the negated values
    sign = 1.0 if spec.higher_is_better else -1.0
    gain = sign * (value - base_value)
    if rule.min_gain is not None and gain < rule.min_gain:
        what = "gain" if spec.higher_is_better else "drop"
        failures.append(
            f"{what} {gain:+.3f} {'over' if spec.higher_is_better else 'below'} base {_fmt(base_value)} is below "
            f"the required {rule.min_gain:+.3f}"
        )
    if rule.no_regression:
        combined = math.sqrt((stderr or 0.0) ** 2 + (base_stderr or 0.0) ** 2)
        tolerance = rule.stderr_multiplier * combined
        if gain < -tolerance:
            note = "" if stderr is not None and base_stderr is not None else " (stderr missing: compared strictly)"
            failures.append(
                f"regressed from base {_fmt(base_value)} to {_fmt(value)}, beyond the allowed "
                f"{tolerance:.3f} (stderr){note}"
            )
    return failures


def decide_gate(
    spec: GateSpec,
    outcome: TaskOutcome,
    base: TaskOutcome | None = None,
    *,
    no_base_reason: str = "no base model to compare with (give --adapter, or --base for a merged model)",
) -> GateResult:
    """The verdict of one gate from the gated model's outcome and, when available, the base's."""
    comparison = spec.compare.describe(higher_is_better=spec.higher_is_better) if spec.compare else None

    def result(verdict: str, reason: str, value=None, stderr=None, base_value=None, base_stderr=None) -> GateResult:
        return GateResult(
            name=spec.name, task=spec.task, metric=spec.metric, value=value, stderr=stderr,
            threshold=spec.threshold, base_value=base_value, base_stderr=base_stderr,
            verdict=verdict, reason=reason, optional=spec.optional, comparison=comparison,
            comparison_short=spec.compare.describe(short=True, higher_is_better=spec.higher_is_better)
            if spec.compare else None, higher_is_better=spec.higher_is_better,
        )

    if outcome.status != MEASURED:
        reason = outcome.reason or outcome.status
        if spec.optional and outcome.status in SKIPPABLE:
            return result(SKIPPED, f"skipped (optional in this profile): {reason}")
        return result(FAIL, reason)

    value, stderr, problem = read_metric(outcome, spec)
    base_value = base_stderr = None
    base_problem = no_base_reason if base is None else None
    if base is not None:
        if base.status != MEASURED:
            base_problem = f"base model not measured: {base.reason or base.status}"
        else:
            base_value, base_stderr, base_problem = read_metric(base, spec)
            if base_problem:
                base_problem = f"base model: {base_problem}"
    if problem:
        return result(FAIL, problem, base_value=base_value, base_stderr=base_stderr)

    failures: list[str] = []
    passes: list[str] = []
    if spec.threshold is not None:
        if spec.higher_is_better and value >= spec.threshold:
            passes.append(f"{_fmt(value)} ≥ {spec.threshold:g}")
        elif spec.higher_is_better:
            failures.append(f"{_fmt(value)} is below the threshold {spec.threshold:g}")
        elif value <= spec.threshold:
            passes.append(f"{_fmt(value)} ≤ {spec.threshold:g}")
        else:
            failures.append(f"{_fmt(value)} is above the limit {spec.threshold:g}")
    if spec.compare is not None:
        if base_problem:
            failures.append(f"the comparison with the base needs the base's value: {base_problem}")
        else:
            more = _compare(spec, value, stderr, base_value, base_stderr)
            failures.extend(more)
            if not more:
                passes.append(f"{comparison} (base {_fmt(base_value)})")
    if failures:
        return result(FAIL, "; ".join(failures), value, stderr, base_value, base_stderr)
    return result(PASS, "; ".join(passes), value, stderr, base_value, base_stderr)


def with_failure(gate: GateResult, reason: str) -> GateResult:
    """The same gate, failed, with `reason` first (e.g. the adapter-had-no-effect check)."""
    reason_text = reason if gate.verdict != FAIL or not gate.reason else f"{reason}; {gate.reason}"
    return replace(gate, verdict=FAIL, reason=reason_text)


def answers_unchanged(answers: dict[Any, str], base_answers: dict[Any, str]) -> bool:
    """True when the gated model gave exactly the base model's answers on every shared prompt: an
    adapter that changed nothing was not applied (or learned nothing). Needs at least one shared prompt."""
    shared = set(answers) & set(base_answers)
    return bool(shared) and all(answers[k] == base_answers[k] for k in shared)


@dataclass
class GateReport:
    profile: str
    model: str
    adapter: str | None
    base_model: str | None
    persona: str
    limit: int | None
    gates: list[GateResult]
    notes: list[str] = field(default_factory=list)
    output_dir: str | None = None
    tasks: dict[str, dict[str, TaskOutcome]] = field(default_factory=dict)  # variant -> task -> outcome
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Every gate passed, except optional gates the report lists as skipped."""
        return bool(self.gates) and all(g.verdict in (PASS, SKIPPED) for g in self.gates)

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if g.verdict == FAIL]

    @property
    def skipped(self) -> list[GateResult]:
        return [g for g in self.gates if g.verdict == SKIPPED]

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "profile": self.profile,
            "model": self.model,
            "adapter": self.adapter,
            "base_model": self.base_model,
            "persona": self.persona,
            "limit": self.limit,
            "gates": [g.to_dict() for g in self.gates],
            "skipped": [g.name for g in self.skipped],
            "failed": [g.name for g in self.failed],
            "notes": list(self.notes),
            "output_dir": self.output_dir,
            "tasks": {v: {t: o.to_dict() for t, o in ts.items()} for v, ts in self.tasks.items()},
            "settings": dict(self.settings),
        }
