"""The health checks that decide whether a training stage passed.

Pure rules over a `Curve` and facts the caller gathered (exit code, OOM line, checkpoint facts);
thresholds come from facts/health.yaml (the training guide's numbers, each with its source
sentence), overridden per recipe. Every check is "pass", "fail" or "not_measured" with its numbers;
a check that could not measure never counts as a pass, so a run with too few points fails its gate.
The checkpoint facts come from llamaforge.checkpoint, which reads the saved files."""

from __future__ import annotations

import difflib
import math
import statistics
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from ..checkpoint import CheckpointFacts
from ..errors import UserError
from ..files import json_safe
from .metrics import Curve, EvalPoint, TrainPoint, describe_oom, health_facts, perplexity_of

STAGES = ("validate", "full")
PASS, FAIL, NOT_MEASURED = "pass", "fail", "not_measured"


# ---- thresholds -------------------------------------------------------------------------------


class StageThresholds:
    """What a table of stage thresholds (a frozen dataclass with `stage` and one field per threshold)
    shares: its names, each one's source in facts/health.yaml `FACTS_KEY`, its JSON form."""

    FACTS_KEY: ClassVar[str]

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "stage"]

    def source(self, name: str) -> str:
        return " ".join(str(health_facts()[self.FACTS_KEY][name]["source"]).split())

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Thresholds(StageThresholds):
    """Every number the checks use. Defaults: facts/health.yaml for the stage."""

    FACTS_KEY: ClassVar[str] = "thresholds"
    stage: str
    final_train_loss_max: float
    eval_ppl_max: float
    overfit_gap: float
    underfit_loss: float
    underfit_after_epoch: float
    plateau_steps: int
    plateau_min_rel_drop: float
    plateau_edge_fraction: float
    spike_factor: float
    spike_abs: float
    spike_window: int
    min_points: int
    loss_window_fraction: float
    loss_falls_min_rel_drop: float
    final_loss_points: int

    @classmethod
    def load(cls, overrides: dict | None = None, stage: str = "validate") -> Thresholds:
        """The stage's defaults with `overrides` (e.g. a recipe's `# llamaforge-health:` header)
        applied. UserError on an unknown stage, an unknown key or a value out of range."""
        values = stage_threshold_values(cls.FACTS_KEY, cls.names(), overrides, stage)
        return cls(stage=stage, **values)


def stage_threshold_values(table_key: str, names: list[str], overrides: dict | None, stage: str) -> dict:
    """The values of facts/health.yaml `table_key` for `stage` with `overrides` applied; UserError on
    an unknown stage, an unknown key or a value out of range."""
    if stage not in STAGES:
        raise UserError(f"unknown stage {stage!r}; use one of: {', '.join(STAGES)}")
    table = health_facts()[table_key]
    values: dict = {}
    for name in names:
        entry = table[name]
        values[name] = entry[stage] if stage in entry else entry["value"]
    for key, value in (overrides or {}).items():
        if key not in values:
            close = difflib.get_close_matches(str(key), values, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"unknown health threshold {key!r}{hint}; known: {', '.join(values)}")
        values[key] = _checked_threshold(key, value, int_valued=isinstance(values[key], int))
    return values


_FRACTIONS = {"plateau_min_rel_drop", "plateau_edge_fraction", "loss_window_fraction", "loss_falls_min_rel_drop"}


def _checked_threshold(key: str, value, *, int_valued: bool):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"health threshold {key}={value!r} is not a number")
    if int_valued:
        if value != int(value) or value < 1:
            raise UserError(f"health threshold {key}={value!r} must be a whole number >= 1")
        return int(value)
    if key in _FRACTIONS and not 0 < value <= 1:
        raise UserError(f"health threshold {key}={value!r} must be a fraction in (0, 1]")
    if value < 0:
        raise UserError(f"health threshold {key}={value!r} must not be negative")
    return float(value)


# ---- the report ------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    status: str  # "pass" | "fail" | "not_measured"
    value: float | str | None
    threshold: float | str | None
    message: str


@dataclass
class HealthReport:
    checks: list[Check]

    @property
    def passed(self) -> bool:
        """True only when there are checks and every one of them passed."""
        return bool(self.checks) and all(c.status == PASS for c in self.checks)

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict:
        return json_safe({
            "passed": self.passed,
            "counts": {s: sum(c.status == s for c in self.checks) for s in (PASS, FAIL, NOT_MEASURED)},
            "checks": [asdict(c) for c in self.checks],
        })


# ---- the rules ---------------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


def _finite_train(curve: Curve) -> list[TrainPoint]:
    return sorted((p for p in curve.train if math.isfinite(p.loss)), key=lambda p: p.step)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def check_process(exit_code: int | None, error: str | None, interrupted: str | None = None) -> Check:
    if interrupted:
        return Check("process", FAIL, interrupted, 0,
                     f"interrupted by {interrupted}: the training process group was stopped before it finished")
    if exit_code is None:
        return Check("process", NOT_MEASURED, None, 0, "the process had not exited (no exit code)")
    if exit_code == 0:
        return Check("process", PASS, 0, 0, "exited with code 0")
    why = f": {error}" if error else " (no error line in the log)"
    signal = (f" (killed by signal {-exit_code})" if exit_code < 0
              else f" (128+{exit_code - 128}: killed by signal {exit_code - 128})" if 128 < exit_code < 160 else "")
    return Check("process", FAIL, exit_code, 0, f"exited with code {exit_code}{signal}{why}")


def check_oom(oom: str | None, exit_code: int | None, interrupted: str | None = None) -> Check:
    cause = describe_oom(oom, exit_code)
    if cause:
        where = "host RAM" if cause.startswith("host RAM") else "GPU memory"
        return Check("no_oom", FAIL, where, None, cause)
    if interrupted:
        return Check("no_oom", NOT_MEASURED, None, None, f"the run was interrupted ({interrupted}); its log ends early")
    if exit_code is None:
        return Check("no_oom", NOT_MEASURED, None, None, "the process had not exited; its log is incomplete")
    return Check("no_oom", PASS, None, None, "no out-of-memory line in the log and no SIGKILL exit")


def check_nan(curve: Curve) -> Check:
    if not curve.train and not curve.eval:
        return Check("no_nan", NOT_MEASURED, None, None, "no loss was logged")
    bad = []
    for p in curve.train:
        if not math.isfinite(p.loss):
            bad.append(f"loss={p.loss} at step {p.step}")
        if p.grad_norm is not None and not math.isfinite(p.grad_norm):
            bad.append(f"grad_norm={p.grad_norm} at step {p.step}")
    for p in curve.eval:
        if not math.isfinite(p.loss):
            bad.append(f"eval_loss={p.loss} at step {p.step}")
    n = len(curve.train) + len(curve.eval)
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        return Check("no_nan", FAIL, len(bad), 0, f"non-finite values: {', '.join(bad[:3])}{more}")
    return Check("no_nan", PASS, 0, 0, f"all {n} logged losses and gradient norms are finite")


def _too_few(name: str, pts: list[TrainPoint], t: Thresholds, need: int | None = None) -> Check | None:
    need = max(need or 0, t.min_points)
    if len(pts) < need:
        return Check(name, NOT_MEASURED, len(pts), need,
                     f"{len(pts)} finite train losses logged; this check needs at least {need}")
    return None


def check_loss_falls(curve: Curve, t: Thresholds) -> Check:
    pts = _finite_train(curve)
    if (short := _too_few("loss_falls", pts, t)) is not None:
        return short
    k = max(1, math.ceil(len(pts) * t.loss_window_fraction))
    early, late = _mean([p.loss for p in pts[:k]]), _mean([p.loss for p in pts[-k:]])
    if early <= 0:
        return Check("loss_falls", FAIL, 0.0, t.loss_falls_min_rel_drop,
                     f"the early losses average {_fmt(early)}; nothing to fall from")
    drop = (early - late) / early
    status = PASS if drop >= t.loss_falls_min_rel_drop else FAIL
    return Check("loss_falls", status, round(drop, 4), t.loss_falls_min_rel_drop,
                 f"mean loss of the first {k} points (steps {pts[0].step}-{pts[k - 1].step}) {_fmt(early)} -> "
                 f"last {k} (steps {pts[-k].step}-{pts[-1].step}) {_fmt(late)}: {drop:.1%} lower, "
                 f"needs >= {t.loss_falls_min_rel_drop:.0%}")


def check_final_train_loss(curve: Curve, t: Thresholds) -> Check:
    if not curve.train:
        return Check("final_train_loss", NOT_MEASURED, None, t.final_train_loss_max, "no train loss was logged")
    last = sorted(curve.train, key=lambda p: p.step)[-t.final_loss_points:]
    value = _mean([p.loss for p in last])  # NaN if any is NaN: fails below
    steps = f"step {last[0].step}" if len(last) == 1 else f"steps {last[0].step}-{last[-1].step}"
    ok = math.isfinite(value) and value <= t.final_train_loss_max
    return Check("final_train_loss", PASS if ok else FAIL, value, t.final_train_loss_max,
                 f"mean of the last {len(last)} logged losses ({steps}) is {_fmt(value)}, "
                 f"limit {_fmt(t.final_train_loss_max)}")


def _final_eval(curve: Curve) -> EvalPoint | None:
    """The last evaluation made after training started (an evaluation at step 0 judges the
    untrained model)."""
    trained = [(p.step if p.step is not None else -1, i, p) for i, p in enumerate(curve.eval)
               if (p.step > 0 if p.step is not None else (p.epoch is None or p.epoch > 0))]
    return max(trained, key=lambda x: x[:2])[2] if trained else None


def check_eval_perplexity(curve: Curve, t: Thresholds) -> Check:
    final = _final_eval(curve)
    if final is None:
        why = "only the evaluation before training (step 0) ran" if curve.eval else "no evaluation ran"
        return Check("eval_perplexity", NOT_MEASURED, None, t.eval_ppl_max, why)
    ppl = perplexity_of(final.loss) if math.isfinite(final.loss) else math.nan
    ok = math.isfinite(ppl) and ppl <= t.eval_ppl_max
    return Check("eval_perplexity", PASS if ok else FAIL, ppl, t.eval_ppl_max,
                 f"exp(eval_loss {_fmt(final.loss)}) = {_fmt(ppl)} at step {final.step}, limit {_fmt(t.eval_ppl_max)}")


def check_spike(curve: Curve, t: Thresholds) -> Check:
    pts = _finite_train(curve)
    if (short := _too_few("no_spike", pts, t, need=t.spike_window + 1)) is not None:
        return short
    worst: tuple[float, TrainPoint, float] | None = None
    spikes: list[str] = []
    for i in range(t.spike_window, len(pts)):
        ref = statistics.median(p.loss for p in pts[i - t.spike_window:i])
        point = pts[i]
        ratio = point.loss / ref if ref > 0 else math.inf
        if worst is None or ratio > worst[0]:
            worst = (ratio, point, ref)
        if ratio >= t.spike_factor and point.loss - ref >= t.spike_abs:
            spikes.append(f"step {point.step}: {_fmt(ref)} -> {_fmt(point.loss)} ({ratio:.2f}x)")
    threshold = f"{t.spike_factor}x and +{t.spike_abs}"
    if spikes:
        more = f" (+{len(spikes) - 3} more)" if len(spikes) > 3 else ""
        return Check("no_spike", FAIL, len(spikes), threshold,
                     f"{len(spikes)} spike(s) against the median of the {t.spike_window} losses before: "
                     f"{'; '.join(spikes[:3])}{more}")
    ratio, point, ref = worst
    return Check("no_spike", PASS, round(ratio, 3), threshold,
                 f"largest jump over the median of the {t.spike_window} losses before: {ratio:.2f}x "
                 f"at step {point.step} ({_fmt(ref)} -> {_fmt(point.loss)})")


def check_plateau(curve: Curve, t: Thresholds) -> Check:
    pts = _finite_train(curve)
    if (short := _too_few("no_plateau", pts, t)) is not None:
        return short
    span = pts[-1].step - pts[0].step
    if span < t.plateau_steps:
        return Check("no_plateau", NOT_MEASURED, span, t.plateau_steps,
                     f"the losses span steps {pts[0].step}-{pts[-1].step} ({span} steps), shorter than one "
                     f"plateau window of {t.plateau_steps} steps")
    prefix = [0.0]
    for p in pts:
        prefix.append(prefix[-1] + p.loss)
    stuck: list[tuple[float, int, int, float, float]] = []
    flattest: tuple[float, int, int, float, float] | None = None
    j = 0
    for i, start in enumerate(pts):
        while j < len(pts) and pts[j].step - start.step < t.plateau_steps:
            j += 1
        if j == len(pts):
            break
        n = j - i + 1  # points i..j span at least plateau_steps
        k = max(1, round(n * t.plateau_edge_fraction))
        head = (prefix[i + k] - prefix[i]) / k
        tail = (prefix[j + 1] - prefix[j + 1 - k]) / k
        drop = (head - tail) / head if head > 0 else 0.0
        window = (drop, start.step, pts[j].step, head, tail)
        if flattest is None or drop < flattest[0]:
            flattest = window
        if drop < t.plateau_min_rel_drop and min(head, tail) > t.final_train_loss_max:
            stuck.append(window)
    if stuck:
        drop, a, b, head, tail = min(stuck)
        return Check("no_plateau", FAIL, round(drop, 4), t.plateau_min_rel_drop,
                     f"stuck from step {a} to {b}: loss {_fmt(head)} -> {_fmt(tail)} ({drop:.1%} lower, needs >= "
                     f"{t.plateau_min_rel_drop:.0%} per {t.plateau_steps} steps) while above "
                     f"{_fmt(t.final_train_loss_max)}; {len(stuck)} such window(s)")
    drop, a, b, head, tail = flattest
    note = (f", already at or below {_fmt(t.final_train_loss_max)} (converged)"
            if drop < t.plateau_min_rel_drop else "")
    return Check("no_plateau", PASS, round(drop, 4), t.plateau_min_rel_drop,
                 f"flattest {t.plateau_steps}-step window: steps {a}-{b}, loss {_fmt(head)} -> {_fmt(tail)} "
                 f"({drop:.1%} lower){note}")


def _train_loss_at(curve: Curve, step: int | None) -> TrainPoint | None:
    pts = _finite_train(curve)
    if not pts:
        return None
    if step is None:
        return pts[-1]
    before = [p for p in pts if p.step <= step]
    return before[-1] if before else pts[0]


def check_overfitting(curve: Curve, t: Thresholds) -> Check:
    final = _final_eval(curve)
    train = _train_loss_at(curve, final.step if final else None)
    if final is None or train is None:
        return Check("not_overfitting", NOT_MEASURED, None, t.overfit_gap,
                     "needs an evaluation after training started and a finite train loss")
    gap = final.loss - train.loss
    ok = math.isfinite(gap) and gap <= t.overfit_gap
    return Check("not_overfitting", PASS if ok else FAIL, gap, t.overfit_gap,
                 f"eval_loss {_fmt(final.loss)} (step {final.step}) - train loss {_fmt(train.loss)} "
                 f"(step {train.step}) = {_fmt(gap)}, limit {_fmt(t.overfit_gap)}")


def check_underfitting(curve: Curve, t: Thresholds) -> Check:
    after = t.underfit_after_epoch
    train = [p for p in _finite_train(curve) if p.epoch is not None and p.epoch >= after]
    evals = [p for p in curve.eval if p.epoch is not None and p.epoch >= after and math.isfinite(p.loss)]
    if not train or not evals:
        reached = max((p.epoch for p in curve.train if p.epoch is not None), default=None)
        where = f"the run reached epoch {_fmt(reached)}" if reached is not None else "no epoch was logged"
        what = "train loss and an evaluation" if not train else "an evaluation"
        return Check("not_underfitting", NOT_MEASURED, None, t.underfit_loss,
                     f"needs {what} at or after epoch {_fmt(after)}; {where}")
    tr, ev = train[-1], evals[-1]
    both_high = tr.loss > t.underfit_loss and ev.loss > t.underfit_loss
    return Check("not_underfitting", FAIL if both_high else PASS, min(tr.loss, ev.loss), t.underfit_loss,
                 f"after epoch {_fmt(after)}: train loss {_fmt(tr.loss)} (epoch {_fmt(tr.epoch)}), eval_loss "
                 f"{_fmt(ev.loss)} (epoch {_fmt(ev.epoch)}); "
                 + ("both above" if both_high else "not both above") + f" {_fmt(t.underfit_loss)}")


def check_checkpoint(facts: CheckpointFacts | None) -> Check:
    if facts is None:
        return Check("checkpoint", NOT_MEASURED, None, None, "the output folder was not inspected")
    if not facts.written:
        return Check("checkpoint", FAIL, facts.path, None, f"no checkpoint written: {facts.detail}")
    if facts.loads is None:
        return Check("checkpoint", NOT_MEASURED, facts.path, None, f"written, not verified: {facts.detail}")
    status = PASS if facts.loads else FAIL
    return Check("checkpoint", status, facts.path, None, facts.detail)


def evaluate_health(curve: Curve, thresholds: Thresholds, *, oom: str | None, exit_code: int | None,
                    checkpoint: CheckpointFacts | None, error: str | None = None,
                    interrupted: str | None = None) -> HealthReport:
    """All checks, in the order a person reads them. `interrupted`: the signal that stopped the run
    (SIGINT, SIGTERM, SIGHUP), when one did."""
    t = thresholds
    return HealthReport([
        check_process(exit_code, error, interrupted),
        check_oom(oom, exit_code, interrupted),
        check_nan(curve),
        check_loss_falls(curve, t),
        check_final_train_loss(curve, t),
        check_eval_perplexity(curve, t),
        check_spike(curve, t),
        check_plateau(curve, t),
        check_overfitting(curve, t),
        check_underfitting(curve, t),
        check_checkpoint(checkpoint),
    ])
