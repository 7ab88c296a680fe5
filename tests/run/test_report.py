"""Stage reports: report.json (atomic, written last, never a stale pass), report.md (checks with
numbers and what to do), loss_curve.png (a real PNG), and reading a report back."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from llamaforge.errors import UserError
from llamaforge.run import report as report_module
from llamaforge.checkpoint import CheckpointFacts
from llamaforge.run.health import Thresholds, evaluate_health
from llamaforge.run.metrics import Curve, curve_from_trainer_state, parse_log
from .curves import curve_of
from llamaforge.run.report import (
    epoch_boundaries,
    read_stage_report,
    remove_stage_report,
    write_stage_report,
)

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_curve() -> Curve:
    return curve_from_trainer_state(LOGS / "trainer_state_tiny.json")


def record_for(curve: Curve, thresholds: Thresholds, **health_kwargs) -> dict:
    kwargs = {"oom": None, "exit_code": 0, "checkpoint": CheckpointFacts(True, "out", True, "final: loads")}
    kwargs.update(health_kwargs)
    health = evaluate_health(curve, thresholds, **kwargs)
    return {"stage": thresholds.stage, "recipe": {"path": "recipes/tiny/lora-cpu.yaml", "hash": "ab12"},
            "corpus": {"manifest_hash": "cd34"}, "command": ["accelerate", "launch", "-m", "axolotl.cli.train"],
            "health": health.to_dict(), "passed": health.passed}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_passing_report_files(tmp_path, tiny_curve):
    t = Thresholds.load({"plateau_steps": 100})
    paths = write_stage_report(tmp_path / "validate", record_for(tiny_curve, t), tiny_curve, t)
    assert set(paths) == {"png", "md", "json"}
    width, height = png_size(paths["png"])
    assert width >= 600 and height >= 300 and paths["png"].stat().st_size > 10_000
    back = read_stage_report(tmp_path / "validate")
    assert back["health"]["passed"] is True and back["stage"] == "validate"
    assert back["files"] == {"png": "loss_curve.png", "md": "report.md", "json": "report.json"}
    assert back["thresholds"]["plateau_steps"] == 100
    assert len(back["curve"]["train"]) == 45 and back["curve"]["eval"][-1]["step"] == 225
    md = paths["md"].read_text()
    assert md.startswith("# validate stage: PASSED")
    assert "- recipe.path: `recipes/tiny/lora-cpu.yaml`" in md and "- corpus.manifest_hash: `cd34`" in md
    assert "| eval_perplexity | pass | 1.131 | 3 | exp(eval_loss 0.1227) = 1.131 at step 225, limit 3 |" in md
    assert "## What to do" not in md and "![loss curve](loss_curve.png)" in md
    assert '"Loss Plateau: Stuck at same loss for 1000+ steps"' in md  # the thresholds' sources


def test_failing_report_says_what_to_do(tmp_path):
    w = parse_log((LOGS / "synthetic_cuda_oom_2proc.log").read_text())
    t = Thresholds.load()
    rec = record_for(w.curve, t, oom=w.oom, exit_code=1, error=w.last_error,
                     checkpoint=CheckpointFacts(False, None, None, "no adapter or model weights"))
    rec["oom_advice"] = "the planner's fitting configuration: zero3, offload none, micro-batch 1 x accumulation 16"
    rec["gates"] = {"passed": False, "failed": ["identity"], "gates": [  # gates.GateReport.to_dict()
        {"name": "identity", "task": "identity", "metric": "acc", "value": 0.2, "stderr": 0.1, "threshold": 0.9,
         "verdict": "fail", "reason": "0.2 < 0.9", "optional": False, "comparison": None},
        {"name": "esoteric_spotcheck", "value": None, "threshold": 0.5, "verdict": "skipped",
         "reason": "dataset unavailable", "optional": True}]}
    paths = write_stage_report(tmp_path, rec, w.curve, t)
    md = paths["md"].read_text()
    assert md.startswith("# validate stage: FAILED")
    assert "| no_oom | **FAIL** | GPU memory | - | GPU out of memory: torch.OutOfMemoryError: CUDA out of memory." in md
    todo = md.split("## What to do")[1].split("## Curve")[0]
    assert "**no_oom** (fail): Out of memory" in todo and "micro_batch_size" in todo and "gradient_checkpointing" in todo
    assert "**loss_falls** (not measured): Too few losses" in todo
    assert "**no_plateau** (not measured)" in todo and "plateau_steps=100" in todo
    assert "**identity** (fail): Model not learning identity" in todo and "count the identity rows" in todo
    assert "esoteric_spotcheck" not in todo  # an optional gate skipped is not a failure
    assert "Planner: the planner's fitting configuration: zero3" in todo
    assert "| identity | **FAIL** | 0.2 | - | ≥ 0.9 | 0.2 < 0.9 |" in md     # tuned, base (not measured here), target
    assert "| esoteric_spotcheck | skipped (optional) | - | - | ≥ 0.5 | dataset unavailable |" in md
    assert "oom_advice" not in md.split("## Health checks")[0]
    assert "- peak accelerator memory: 74.81 GiB" in md
    assert read_stage_report(paths["json"])["health"]["passed"] is False


def test_gates_that_did_not_run_and_a_forged_gate_pass(tmp_path, tiny_curve):
    t = Thresholds.load({"plateau_steps": 100})
    rec = record_for(tiny_curve, t)
    rec["gates"] = {"passed": False, "skipped": "the run's health checks failed; gates were not run"}
    rec["passed"] = False
    rec["changes"] = ["output_dir -> runs/x/validate/out", "logging_steps: 5 (at least ~50 loss points)"]
    md = write_stage_report(tmp_path, rec, tiny_curve, t)["md"].read_text()
    assert md.startswith("# validate stage: FAILED")
    assert "The health checks passed; the stage failed on the gates below." in md
    assert "## Gates\n\n- the run's health checks failed; gates were not run" in md
    assert "- changes:\n  - output_dir -> runs/x/validate/out\n  - logging_steps: 5" in md
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "passed": True}))
    with pytest.raises(UserError, match="the gates did not pass"):
        read_stage_report(path)


def test_host_oom_advice_is_about_ram(tmp_path, tiny_curve):
    t = Thresholds.load()
    paths = write_stage_report(tmp_path, record_for(tiny_curve, t, exit_code=137), tiny_curve, t)
    todo = paths["md"].read_text().split("## What to do")[1]
    assert "**no_oom** (fail): Host RAM ran out" in todo


def test_loss_not_falling_advice_names_the_guide_remedies(tmp_path):
    curve = curve_of([2.0 + 0.001 * i for i in range(50)])
    t = Thresholds.load()
    md = write_stage_report(tmp_path, record_for(curve, t), curve, t)["md"].read_text()
    line = next(x for x in md.splitlines() if x.startswith("- **loss_falls** (fail)"))
    assert "learning rate" in line and "warm-up" in line and "data format" in line


def test_nan_curve_gives_strict_json_and_a_plot(tmp_path, tiny_curve):
    curve = Curve.from_dict(tiny_curve.to_dict())
    curve.train[-1].loss = math.nan
    curve.train[-2].grad_norm = math.inf
    t = Thresholds.load()
    paths = write_stage_report(tmp_path, record_for(curve, t), curve, t)
    text = paths["json"].read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert '"loss": "nan"' in text and png_size(paths["png"])


def test_empty_curve_still_plots(tmp_path):
    t = Thresholds.load()
    paths = write_stage_report(tmp_path, record_for(Curve(), t, exit_code=1, error="RuntimeError: x"), Curve(), t)
    assert png_size(paths["png"]) and "0 train losses, 0 evaluations logged" in paths["md"].read_text()


def test_report_json_is_written_last(tmp_path, tiny_curve, monkeypatch):
    order = []
    real = report_module.write_bytes_atomic

    def recording(path, data):
        order.append(path.name)
        real(path, data)

    monkeypatch.setattr(report_module, "write_bytes_atomic", recording)
    t = Thresholds.load()
    write_stage_report(tmp_path, record_for(tiny_curve, t), tiny_curve, t)
    assert order == ["loss_curve.png", "report.md", "report.json"]


def test_a_failure_half_way_leaves_no_report_json_not_even_an_old_pass(tmp_path, tiny_curve, monkeypatch):
    t = Thresholds.load({"plateau_steps": 100})
    write_stage_report(tmp_path, record_for(tiny_curve, t), tiny_curve, t)
    assert read_stage_report(tmp_path)["health"]["passed"] is True

    def broken_plot(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_module, "plot_loss_curve", broken_plot)
    with pytest.raises(RuntimeError, match="disk full"):
        write_stage_report(tmp_path, record_for(tiny_curve, t), tiny_curve, t)
    assert not (tmp_path / "report.json").exists()
    with pytest.raises(UserError, match="no stage report"):
        read_stage_report(tmp_path)


def test_an_interrupted_write_leaves_no_partial_file(tmp_path, tiny_curve, monkeypatch):
    t = Thresholds.load()
    import llamaforge.files as atomic_module

    real_replace = atomic_module.os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("report.json"):
            raise OSError("interrupted")
        real_replace(src, dst)

    monkeypatch.setattr(atomic_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="interrupted"):
        write_stage_report(tmp_path, record_for(tiny_curve, t), tiny_curve, t)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss_curve.png", "report.md"]


def test_remove_stage_report(tmp_path, tiny_curve):
    t = Thresholds.load()
    write_stage_report(tmp_path, record_for(tiny_curve, t), tiny_curve, t)
    remove_stage_report(tmp_path)
    remove_stage_report(tmp_path)  # idempotent
    assert not (tmp_path / "report.json").exists()


def test_writing_a_malformed_record_is_a_bug_not_a_report(tmp_path, tiny_curve):
    t = Thresholds.load()
    with pytest.raises(ValueError, match="no `health` section"):
        write_stage_report(tmp_path, {"stage": "validate"}, tiny_curve, t)
    assert not any(tmp_path.iterdir())


def _valid_report(tmp_path, tiny_curve) -> dict:
    t = Thresholds.load()
    write_stage_report(tmp_path, record_for(tiny_curve, t), tiny_curve, t)
    return json.loads((tmp_path / "report.json").read_text())


@pytest.mark.parametrize("damage, match", [
    (lambda text, rec: text[: len(text) // 2], "not valid JSON \\(partly written\\?\\)"),
    (lambda text, rec: "[]", "not a JSON object"),
    (lambda text, rec: json.dumps({**rec, "stage": "final"}), "`stage` is 'final'"),
    (lambda text, rec: json.dumps({k: v for k, v in rec.items() if k != "health"}), "no `health` section"),
    (lambda text, rec: json.dumps({**rec, "health": {**rec["health"], "passed": True}}), "health.passed is True"),
    (lambda text, rec: json.dumps({**rec, "passed": True}), "`passed` disagrees"),
    (lambda text, rec: json.dumps({**rec, "health": {**rec["health"], "checks": [{"name": "x", "status": "ok"}]}}),
     "malformed check"),
])
def test_read_rejects_corrupt_partial_or_forged_reports(tmp_path, tiny_curve, damage, match):
    rec = _valid_report(tmp_path, tiny_curve)  # default plateau window: not measured, so not passed
    assert rec["health"]["passed"] is False
    path = tmp_path / "report.json"
    path.write_text(damage(path.read_text(), rec))
    with pytest.raises(UserError, match=match):
        read_stage_report(path)


def test_epoch_boundaries_of_the_tiny_run(tiny_curve):
    assert epoch_boundaries(tiny_curve) == [(1, 75.0), (2, 150.0), (3, 225.0)]
    assert epoch_boundaries(Curve()) == []


def test_a_preference_report_names_its_loss_terms_and_plots_the_limit_its_check_applied(tmp_path, monkeypatch):
    """A DPO+NLL stage: report.md lists the loss terms, and the plot's limit line is the one
    `preference_loss_falling` applied, not DPO's ln-2 limit."""
    from llamaforge.run.preference_health import PreferenceThresholds, evaluate_preference_health
    from llamaforge.run.metrics import TrainPoint

    pts = [TrainPoint(step=i + 1, epoch=(i + 1) / 20, loss=3.7 - 0.15 * i, grad_norm=1.0,
                      prefs={"rewards/margins": 0.3 * i, "rewards/accuracies": 1.0, "rewards/chosen": 0.1 * i,
                             "logps/chosen": -50.0 + i, "logps/rejected": -60.0 - i}) for i in range(20)]
    curve = Curve(train=pts, total_steps=20, epochs=1.0)
    t = PreferenceThresholds.load({}, stage="validate")
    terms = (("sigmoid", 1.0), ("sft", 1.0))
    health = evaluate_preference_health(curve, t, beta=0.1, loss_terms=terms, oom=None, exit_code=0,
                                        checkpoint=CheckpointFacts(True, "out", True, "final: loads"))
    plotted = []
    monkeypatch.setattr(report_module, "plot_loss_curve",
                        lambda *a, preference_limit=None, **k: plotted.append(preference_limit) or False)
    rec = {"stage": "validate", "recipe": {"path": "dpo.yaml", "hash": "ab"}, "corpus": {"manifest_hash": "cd"},
           "preference": {"method": "dpo", "beta": 0.1, "loss": [list(x) for x in terms]},
           "health": health.to_dict(), "passed": health.passed}
    md = write_stage_report(tmp_path, rec, curve, t)["md"].read_text()
    assert '- preference.loss: `[["sigmoid", 1.0], ["sft", 1.0]]`' in md
    check = next(c for c in health.checks if c.name == "preference_loss_falling")
    assert check.status == "pass" and plotted == [(check.threshold, plotted[0][1])]
    assert "fall from the first steps" in plotted[0][1]
