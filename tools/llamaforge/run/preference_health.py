"""Health checks of a preference (DPO) stage, judged from the metrics TRL's DPOTrainer logs at every
logging step (kept on each TrainPoint as `prefs`): margins positive and rising, accuracies above
chance, the loss below ln 2, the chosen answers not pushed down, log-probs not running away, no
NaN. The process, OOM and checkpoint checks are the SFT ones (health.py). Thresholds live in
facts/health.yaml `preference_thresholds`, each with its reason."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ..errors import UserError
from .health import (
    FAIL,
    NOT_MEASURED,
    PASS,
    StageThresholds,
    Check,
    CheckpointFacts,
    HealthReport,
    _fmt,
    _mean,
    check_checkpoint,
    check_nan,
    check_oom,
    check_process,
    stage_threshold_values,
)
from .metrics import Curve, TrainPoint

LN2 = math.log(2)
PREFERENCE_METHODS = ("dpo", "ipo")   # rl: methods whose TRL trainer logs rewards/margins and friends
DEFAULT_BETA = 0.1                    # TRL's and Axolotl's default rl_beta


@dataclass(frozen=True)
class PreferenceThresholds(StageThresholds):
    """Every number the preference checks use; defaults from facts/health.yaml for the stage."""

    FACTS_KEY: ClassVar[str] = "preference_thresholds"
    stage: str
    min_points: int
    window_fraction: float
    margin_min: float
    margin_rise_min: float
    accuracy_min: float
    loss_max: float
    chosen_drop_max: float
    logps_drift_max: float

    @classmethod
    def load(cls, overrides: dict | None = None, stage: str = "validate") -> PreferenceThresholds:
        values = stage_threshold_values(cls.FACTS_KEY, cls.names(), overrides, stage)
        if not 0 < values["window_fraction"] <= 0.5:
            raise UserError(f"preference health threshold window_fraction={values['window_fraction']} must be in (0, 0.5]")
        return cls(stage=stage, **values)


def is_preference_config(config: dict) -> bool:
    return str(config.get("rl") or "").lower() in PREFERENCE_METHODS


def _points(curve: Curve) -> list[TrainPoint]:
    return sorted((p for p in curve.train if p.prefs and "rewards/margins" in p.prefs), key=lambda p: p.step)


def _windows(pts: list[TrainPoint], key: str, t: PreferenceThresholds) -> tuple[float, float, int] | None:
    values = [p.prefs[key] for p in pts if key in p.prefs and math.isfinite(p.prefs[key])]
    if len(values) < t.min_points:
        return None
    k = max(1, math.ceil(len(values) * t.window_fraction))
    return _mean(values[:k]), _mean(values[-k:]), k


def _short(name: str, key: str, t: PreferenceThresholds, threshold) -> Check:
    return Check(name, NOT_MEASURED, None, threshold,
                 f"fewer than {t.min_points} logged `{key}` values; log more often (logging_steps) to judge it")


def check_pref_nan(curve: Curve) -> Check:
    base = check_nan(curve)
    bad = [f"{k}={v} at step {p.step}" for p in curve.train for k, v in (p.prefs or {}).items() if not math.isfinite(v)]
    if not bad:
        return base
    n = len(bad) + (int(base.value) if base.status == FAIL else 0)
    return Check("no_nan", FAIL, n, 0, f"non-finite preference metrics: {', '.join(bad[:3])}"
                 + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""))


def check_margins(curve: Curve, t: PreferenceThresholds) -> list[Check]:
    w = _windows(_points(curve), "rewards/margins", t)
    if w is None:
        return [_short("margins_positive", "rewards/margins", t, t.margin_min),
                _short("margins_rising", "rewards/margins", t, t.margin_rise_min)]
    early, late, k = w
    rise = late - early
    return [
        Check("margins_positive", PASS if late > t.margin_min else FAIL, round(late, 4), t.margin_min,
              f"mean rewards/margins of the last {k} logged steps is {_fmt(late)}, needs > {_fmt(t.margin_min)}"),
        Check("margins_rising", PASS if rise > t.margin_rise_min else FAIL, round(rise, 4), t.margin_rise_min,
              f"rewards/margins {_fmt(early)} (first {k}) -> {_fmt(late)} (last {k}): "
              f"{rise:+.4g}, needs > {t.margin_rise_min:+.4g}"),
    ]


def check_accuracies(curve: Curve, t: PreferenceThresholds) -> Check:
    w = _windows(_points(curve), "rewards/accuracies", t)
    if w is None:
        return _short("accuracies_above_chance", "rewards/accuracies", t, t.accuracy_min)
    early, late, k = w
    ok = late >= t.accuracy_min and late >= early
    why = "" if late >= early else f"; it fell from {_fmt(early)} early"
    return Check("accuracies_above_chance", PASS if ok else FAIL, round(late, 4), t.accuracy_min,
                 f"mean rewards/accuracies of the last {k} logged steps is {_fmt(late)} (chance 0.5), "
                 f"needs >= {_fmt(t.accuracy_min)} and not below the first {k}{why}")


def check_dpo_loss(curve: Curve, t: PreferenceThresholds) -> Check:
    losses = [p.loss for p in _points(curve)]
    if len(losses) < t.min_points:
        return _short("dpo_loss_below_ln2", "loss", t, t.loss_max)
    k = max(1, math.ceil(len(losses) * t.window_fraction))
    late = _mean(losses[-k:])
    ok = math.isfinite(late) and late < t.loss_max
    return Check("dpo_loss_below_ln2", PASS if ok else FAIL, round(late, 4), t.loss_max,
                 f"mean DPO loss of the last {k} logged steps is {_fmt(late)} (ln 2 = {LN2:.3f} at the start), "
                 f"needs < {_fmt(t.loss_max)}")


def check_chosen(curve: Curve, t: PreferenceThresholds, beta: float) -> Check:
    w = _windows(_points(curve), "rewards/chosen", t)
    if w is None:
        return _short("chosen_not_collapsing", "rewards/chosen", t, -t.chosen_drop_max)
    _, late, k = w
    nats = late / beta
    ok = nats > -t.chosen_drop_max
    return Check("chosen_not_collapsing", PASS if ok else FAIL, round(nats, 3), -t.chosen_drop_max,
                 f"mean rewards/chosen of the last {k} logged steps is {_fmt(late)}: the chosen answers' "
                 f"log-prob moved {nats:+.3g} nats against the reference (beta {beta:g}), must stay above "
                 f"{-t.chosen_drop_max:g}")


def check_logps(curve: Curve, t: PreferenceThresholds) -> Check:
    pts = _points(curve)
    drifts = {}
    for key in ("logps/chosen", "logps/rejected"):
        w = _windows(pts, key, t)
        if w is not None:
            drifts[key] = w[1] - w[0]
    if not drifts:
        return _short("logps_bounded", "logps/chosen", t, t.logps_drift_max)
    key, worst = max(drifts.items(), key=lambda kv: abs(kv[1]))
    ok = abs(worst) <= t.logps_drift_max
    listed = ", ".join(f"{k} {v:+.4g}" for k, v in drifts.items())
    return Check("logps_bounded", PASS if ok else FAIL, round(worst, 3), t.logps_drift_max,
                 f"late mean against early mean, nats per sequence: {listed}; each within ±{t.logps_drift_max:g}")


def evaluate_preference_health(curve: Curve, thresholds: PreferenceThresholds, *, beta: float = DEFAULT_BETA,
                               oom: str | None, exit_code: int | None, checkpoint: CheckpointFacts | None,
                               error: str | None = None, interrupted: str | None = None) -> HealthReport:
    """All checks of a DPO stage, in the order a person reads them."""
    t = thresholds
    return HealthReport([
        check_process(exit_code, error, interrupted),
        check_oom(oom, exit_code, interrupted),
        check_pref_nan(curve),
        *check_margins(curve, t),
        check_accuracies(curve, t),
        check_dpo_loss(curve, t),
        check_chosen(curve, t, beta),
        check_logps(curve, t),
        check_checkpoint(checkpoint),
    ])
