"""Health checks of a preference (DPO) stage, judged from the metrics TRL's DPOTrainer logs at every
logging step (kept on each TrainPoint as `prefs`): margins positive and rising, accuracies above
chance, the loss below ln 2 (or, for a recipe whose loss is not DPO's alone, falling by as much),
the chosen answers not pushed down, log-probs not running away, no NaN. The process, OOM and
checkpoint checks are the SFT ones (health.py). Thresholds live in facts/health.yaml
`preference_thresholds`, each with its reason."""

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
# the loss names TRL 1.9's DPOTrainer knows (trl/trainer/dpo_trainer.py, "Unknown loss type"); it
# compares them case-sensitively, and refuses any other only at the first training step
TRL_DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


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


def preference_loss_terms(config: dict) -> tuple[tuple[str, float], ...]:
    """What the trainer minimises, as (TRL loss type, weight) terms: Axolotl passes `dpo_loss_type`
    and `dpo_loss_weights` of an `rl: dpo` recipe to TRL (default: sigmoid, DPO's own loss), and
    `rl: ipo` is TRL's "ipo" loss. `[sigmoid, sft]` is DPO plus the chosen answers' NLL (RPO, the
    Llama 3 recipe). Raises UserError for a shape TRL would refuse mid-launch."""
    rl = str(config.get("rl") or "").lower()
    if rl == "ipo":
        return (("ipo", 1.0),)
    types = config.get("dpo_loss_type")
    weights = config.get("dpo_loss_weights")
    if types is None:
        types = ["sigmoid"]
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise UserError(f"`dpo_loss_type: {types!r}` must be a list of TRL loss names, e.g. [sigmoid] or [sigmoid, sft]")
    unknown = [t for t in types if t not in TRL_DPO_LOSSES]
    if unknown:
        raise UserError(f"`dpo_loss_type` names {', '.join(map(repr, unknown))}, which TRL does not know; "
                        f"one of {', '.join(TRL_DPO_LOSSES)}")
    if weights is None:
        weights = [1.0] * len(types)
    if (not isinstance(weights, list) or len(weights) != len(types)
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0
                       for w in weights)):
        raise UserError(f"`dpo_loss_weights: {weights!r}` must be one positive number per `dpo_loss_type` entry "
                        f"({len(types)}: {', '.join(types)})")
    return tuple((t, float(w)) for t, w in zip(types, weights))


def describe_loss(terms: tuple[tuple[str, float], ...]) -> str:
    return " + ".join(t if w == 1 else f"{w:g} x {t}" for t, w in terms)


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


def check_dpo_loss(curve: Curve, t: PreferenceThresholds,
                   terms: tuple[tuple[str, float], ...] = (("sigmoid", 1.0),)) -> Check:
    """DPO's own loss starts at ln 2 (margins 0): its late mean must be below loss_max. Any other
    loss (IPO starts at 1/(4 beta^2); DPO + NLL starts at ln 2 plus the chosen answers' NLL) is asked
    to fall from its first logged steps by the same share, loss_max / ln 2, as `preference_loss_falling`."""
    losses = [p.loss for p in _points(curve)]
    plain = len(terms) == 1 and terms[0][0] == "sigmoid"
    name = "dpo_loss_below_ln2" if plain else "preference_loss_falling"
    if len(losses) < t.min_points:
        return _short(name, "loss", t, t.loss_max)
    k = max(1, math.ceil(len(losses) * t.window_fraction))
    late = _mean(losses[-k:])
    if plain:
        weight = terms[0][1]
        limit = t.loss_max * weight
        ok = math.isfinite(late) and late < limit
        scale = "" if weight == 1 else f" (weight {weight:g}: {weight:g} x ln 2 at the start)"
        return Check(name, PASS if ok else FAIL, round(late, 4), round(limit, 4),
                     f"mean DPO loss of the last {k} logged steps is {_fmt(late)} (ln 2 = {LN2:.3f} at the start)"
                     f"{scale}, needs < {_fmt(limit)}")
    early = _mean(losses[:k])
    share = t.loss_max / LN2
    limit = early - abs(early) * (1 - share)
    ok = math.isfinite(late) and math.isfinite(early) and late < limit
    return Check(name, PASS if ok else FAIL, round(late, 4), round(limit, 4),
                 f"the loss is {describe_loss(terms)}, not DPO's alone, so it does not start at ln 2: mean of the "
                 f"last {k} logged steps {_fmt(late)} against {_fmt(early)} for the first {k}, needs < {_fmt(limit)} "
                 f"({1 - share:.1%} lower, the fall ln 2 -> {_fmt(t.loss_max)} asks of DPO); the preference itself is "
                 "judged by the margins and accuracies")


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
                               loss_terms: tuple[tuple[str, float], ...] = (("sigmoid", 1.0),),
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
        check_dpo_loss(curve, t, loss_terms),
        check_chosen(curve, t, beta),
        check_logps(curve, t),
        check_checkpoint(checkpoint),
    ])
