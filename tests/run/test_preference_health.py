"""The health checks of a preference (DPO) stage, on logged-metric fixtures: a healthy run and
each failure the checks exist for."""

from __future__ import annotations

import math

import pytest

from llamaforge.errors import UserError
from llamaforge.run.metrics import Curve, TrainPoint, parse_log
from llamaforge.run.preference_health import PreferenceThresholds, evaluate_preference_health, preference_loss_terms

T = PreferenceThresholds.load({}, stage="validate")
N = 20


def dpo_curve(*, margins=None, accuracies=None, chosen=None, logps_rejected=None, loss=None) -> Curve:
    """N logged DPO steps. Defaults: a healthy run, margins 0 -> 1.0, accuracies 0.5 -> 1, chosen
    rewards slightly up, rejected logps falling 20 nats, loss = -log sigmoid(margin)."""
    margins = margins or [i / (N - 1) for i in range(N)]
    accuracies = accuracies or [min(1.0, 0.5 + i / N) for i in range(N)]
    chosen = chosen or [0.1 * m for m in margins]
    logps_rejected = logps_rejected or [-90.0 - 20 * i / (N - 1) for i in range(N)]
    loss = loss or [math.log1p(math.exp(-m)) for m in margins]
    pts = []
    for i in range(N):
        prefs = {"rewards/margins": margins[i], "rewards/accuracies": accuracies[i], "rewards/chosen": chosen[i],
                 "rewards/rejected": chosen[i] - margins[i], "logps/chosen": -80.0 + chosen[i] * 10,
                 "logps/rejected": logps_rejected[i]}
        pts.append(TrainPoint(step=i + 1, epoch=(i + 1) / N, loss=loss[i], grad_norm=1.0, prefs=prefs))
    return Curve(train=pts, total_steps=N, epochs=1.0)


def verdicts(curve: Curve, t: PreferenceThresholds = T, **facts) -> dict[str, str]:
    facts = {"oom": None, "exit_code": 0, "checkpoint": None, **facts}
    report = evaluate_preference_health(curve, t, beta=0.1, **facts)
    return {c.name: c.status for c in report.checks}


def loss_check(curve: Curve, terms, t: PreferenceThresholds = T):
    report = evaluate_preference_health(curve, t, beta=0.1, loss_terms=terms, oom=None, exit_code=0, checkpoint=None)
    return next(c for c in report.checks if c.name in ("dpo_loss_below_ln2", "preference_loss_falling"))


def test_a_healthy_dpo_run_passes_every_preference_check():
    v = verdicts(dpo_curve())
    assert {k: s for k, s in v.items() if k != "checkpoint"} == dict.fromkeys(
        ["process", "no_oom", "no_nan", "margins_positive", "margins_rising", "accuracies_above_chance",
         "dpo_loss_below_ln2", "chosen_not_collapsing", "logps_bounded"], "pass")


def test_margins_at_zero_fail_positive_and_rising():
    v = verdicts(dpo_curve(margins=[0.0] * N, accuracies=[0.5] * N))
    assert v["margins_positive"] == v["margins_rising"] == v["accuracies_above_chance"] == "fail"
    assert v["dpo_loss_below_ln2"] == "fail"        # loss stays at ln 2


def test_margins_falling_back_fail_rising_even_when_positive():
    falling = [0.5 - 0.4 * i / (N - 1) for i in range(N)]
    v = verdicts(dpo_curve(margins=falling))
    assert v["margins_positive"] == "pass" and v["margins_rising"] == "fail"


def test_accuracies_at_chance_or_falling_fail():
    assert verdicts(dpo_curve(accuracies=[0.5] * N))["accuracies_above_chance"] == "fail"
    falling = [1.0 - 0.3 * i / (N - 1) for i in range(N)]   # ends at 0.7 >= 0.6, but it fell
    assert verdicts(dpo_curve(accuracies=falling))["accuracies_above_chance"] == "fail"


def test_loss_not_below_ln2_fails():
    assert verdicts(dpo_curve(loss=[math.log(2)] * N))["dpo_loss_below_ln2"] == "fail"


def test_the_loss_terms_of_a_recipe_are_what_axolotl_hands_trl():
    assert preference_loss_terms({"rl": "dpo"}) == (("sigmoid", 1.0),)
    assert preference_loss_terms({"rl": "ipo"}) == (("ipo", 1.0),)
    assert preference_loss_terms({"rl": "dpo", "dpo_loss_type": ["sigmoid", "sft"]}) == (("sigmoid", 1.0), ("sft", 1.0))
    assert preference_loss_terms({"rl": "dpo", "dpo_loss_type": ["sigmoid", "sft"],
                                  "dpo_loss_weights": [1, 0.5]}) == (("sigmoid", 1.0), ("sft", 0.5))
    for bad in ({"dpo_loss_type": "sigmoid"}, {"dpo_loss_type": []},
                {"dpo_loss_type": ["sigmoid", "sft"], "dpo_loss_weights": [1.0]},
                {"dpo_loss_type": ["sigmoid"], "dpo_loss_weights": [-1.0]},
                {"dpo_loss_type": ["sigmoid"], "dpo_loss_weights": [float("nan")]},
                {"dpo_loss_type": ["sigmoid", "Sigmoid"]}, {"dpo_loss_type": ["a b"]},
                {"dpo_loss_type": ["$(touch x)"]}, {"dpo_loss_type": ["x\ny"]}, {"dpo_loss_type": ["it's"]}):
        with pytest.raises(UserError, match="dpo_loss") as err:
            preference_loss_terms({"rl": "dpo", **bad})
        assert "\n" not in str(err.value)


def test_dpo_plus_nll_is_judged_by_its_fall_not_by_ln2():
    """DPO + the chosen answers' NLL (RPO) starts at ln 2 plus the NLL (~3 nats a token on the demo):
    the ln-2 rule would fail a run that learned; its loss must fall by the share ln 2 -> loss_max asks."""
    margins = [i / (N - 1) for i in range(N)]
    learning = [math.log1p(math.exp(-m)) + 3.0 - 2.0 * i / (N - 1) for i, m in enumerate(margins)]
    check = loss_check(dpo_curve(loss=learning), (("sigmoid", 1.0), ("sft", 1.0)))
    assert check.status == "pass" and "sigmoid + sft" in check.message
    assert loss_check(dpo_curve(loss=learning), (("sigmoid", 1.0),)).status == "fail"   # above ln 2 throughout
    flat = [3.7] * N
    assert loss_check(dpo_curve(loss=flat), (("sigmoid", 1.0), ("sft", 1.0))).status == "fail"
    almost = [3.7 - 0.01 * i / (N - 1) for i in range(N)]          # a 0.3% fall: noise, not learning
    assert loss_check(dpo_curve(loss=almost), (("sigmoid", 1.0), ("sft", 1.0))).status == "fail"
    nan = learning[:-1] + [float("nan")]
    assert loss_check(dpo_curve(loss=nan), (("sigmoid", 1.0), ("sft", 1.0))).status == "fail"


def test_ipo_is_judged_by_its_fall_from_one_over_four_beta_squared():
    start = 1 / (4 * 0.1 ** 2)                      # 25 at margin 0 with beta 0.1
    falling = [start * (1 - 0.8 * i / (N - 1)) for i in range(N)]
    assert loss_check(dpo_curve(loss=falling), (("ipo", 1.0),)).status == "pass"
    assert loss_check(dpo_curve(loss=[start] * N), (("ipo", 1.0),)).status == "fail"
    full = PreferenceThresholds.load({}, stage="full")
    slight = [start * (1 - 0.05 * i / (N - 1)) for i in range(N)]   # 5% lower: enough to leave the start,
    assert loss_check(dpo_curve(loss=slight), (("ipo", 1.0),)).status == "pass"
    assert loss_check(dpo_curve(loss=slight), (("ipo", 1.0),), full).status == "fail"   # not the full run's 13%


def test_a_weighted_dpo_loss_starts_at_its_weight_times_ln2():
    margins = [i / (N - 1) for i in range(N)]
    doubled = [2 * math.log1p(math.exp(-m)) for m in margins]
    check = loss_check(dpo_curve(loss=doubled), (("sigmoid", 2.0),))
    assert check.status == "pass" and check.threshold == pytest.approx(2 * T.loss_max)


def test_chosen_rewards_collapsing_fail():
    # margins grow only because the rejected answers fall faster: chosen down 30 nats (beta 0.1)
    v = verdicts(dpo_curve(chosen=[-3.0 * i / (N - 1) for i in range(N)]))
    assert v["chosen_not_collapsing"] == "fail" and v["margins_positive"] == "pass"


def test_logps_running_away_fail():
    runaway = [-90.0 - 400 * i / (N - 1) for i in range(N)]
    assert verdicts(dpo_curve(logps_rejected=runaway))["logps_bounded"] == "fail"


def test_a_nan_in_a_preference_metric_fails_no_nan():
    curve = dpo_curve()
    curve.train[5].prefs["rewards/margins"] = float("nan")
    assert verdicts(curve)["no_nan"] == "fail"


def test_too_few_points_are_not_measured_and_fail_the_stage():
    curve = dpo_curve()
    curve.train = curve.train[:3]
    report = evaluate_preference_health(curve, T, oom=None, exit_code=0, checkpoint=None)
    assert report.check("margins_positive").status == "not_measured" and not report.passed


def test_an_sft_curve_is_not_judged_as_a_preference_run():
    curve = dpo_curve()
    for p in curve.train:
        p.prefs = None
    v = verdicts(curve)
    assert v["margins_positive"] == v["accuracies_above_chance"] == "not_measured"


def test_thresholds_per_stage_and_overrides():
    assert PreferenceThresholds.load(stage="full").accuracy_min > T.accuracy_min
    assert PreferenceThresholds.load({"margin_min": 0.5}).margin_min == 0.5
    assert verdicts(dpo_curve(), PreferenceThresholds.load({"margin_min": 5.0}))["margins_positive"] == "fail"
    with pytest.raises(UserError, match="did you mean margin_min"):
        PreferenceThresholds.load({"margin_mn": 1})
    assert T.source("loss_max").startswith("project choice")


def test_trl_log_lines_keep_the_preference_metrics_through_the_report_round_trip():
    lines = [
        "{'loss': 0.6931, 'grad_norm': 1.2, 'learning_rate': 0.0005, 'rewards/chosen': 0.0, 'rewards/rejected': 0.0, "
        "'rewards/accuracies': 0.0, 'rewards/margins': 0.0, 'logps/chosen': -81.5, 'logps/rejected': -97.2, "
        "'logits/chosen': -1.1, 'logits/rejected': -1.2, 'epoch': 0.1}",
        "{'loss': 0.52, 'grad_norm': 1.0, 'learning_rate': 0.0004, 'rewards/chosen': 0.12, 'rewards/rejected': -0.31, "
        "'rewards/accuracies': 0.75, 'rewards/margins': 0.43, 'logps/chosen': -80.3, 'logps/rejected': -100.3, "
        "'logits/chosen': -1.0, 'logits/rejected': -1.3, 'epoch': 0.2}",
    ]
    curve = parse_log("\n".join(lines) + "\n").curve
    assert [p.prefs["rewards/margins"] for p in curve.train] == [0.0, 0.43]
    assert curve.train[1].prefs["logps/rejected"] == -100.3
    again = Curve.from_dict(curve.to_dict())
    assert again.train[1].prefs == curve.train[1].prefs


def test_a_real_demo_dpo_validation_log_is_judged_too_close_to_chance():
    """tests/fixtures/logs/axolotl_cpu_dpo_smollm2_validate.log: the metric lines of a real validation
    run (SmolLM2-135M, 24 cue pairs, 4 per step, 2 epochs, lr 5e-4). The margins rose (0 -> 0.24)
    but the last three steps' accuracies average 0.58: too close to chance for the full run."""
    from pathlib import Path

    log = Path(__file__).parent.parent / "fixtures/logs/axolotl_cpu_dpo_smollm2_validate.log"
    curve = parse_log(log.read_text(encoding="utf-8")).curve
    assert len(curve.train) == 12 and curve.train[0].loss == pytest.approx(math.log(2), abs=1e-3)
    report = evaluate_preference_health(curve, T, beta=0.1, oom=None, exit_code=0, checkpoint=None)
    status = {c.name: c.status for c in report.checks}
    assert status["margins_positive"] == status["margins_rising"] == status["dpo_loss_below_ln2"] == "pass"
    assert status["accuracies_above_chance"] == "fail"
    assert report.check("accuracies_above_chance").value == pytest.approx(0.5833, abs=1e-3)
