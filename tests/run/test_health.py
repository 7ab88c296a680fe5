"""Every health rule on synthetic curves (healthy, plateau, spike, overfit, underfit, NaN, crashed,
OOM, empty, too short), the thresholds and their facts file, and checkpoint inspection on
synthetic safetensors folders (no torch). The real-adapter inspection is in the slow test at the end."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from llamaforge.errors import UserError
from llamaforge.run.health import Check, HealthReport, Thresholds, evaluate_health
from llamaforge.checkpoint import CheckpointFacts, inspect_checkpoint
from llamaforge.run.metrics import Curve, health_facts, parse_log

from .curves import curve_of, healthy_curve

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
OK_CKPT = CheckpointFacts(True, "out", True, "final: LoRA r=8, loads")


def run(curve, *, stage="validate", overrides=None, oom=None, exit_code=0, checkpoint=OK_CKPT, error=None):
    t = Thresholds.load(overrides, stage=stage)
    return evaluate_health(curve, t, oom=oom, exit_code=exit_code, checkpoint=checkpoint, error=error)


def statuses(report: HealthReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


ALL_CHECKS = ["process", "no_oom", "no_nan", "loss_falls", "final_train_loss", "eval_perplexity", "no_spike",
              "no_plateau", "not_overfitting", "not_underfitting", "checkpoint"]


# ---- thresholds ----------------------------------------------------------------------------------


def test_stage_defaults_come_from_the_guide():
    v, f = Thresholds.load(stage="validate"), Thresholds.load(stage="full")
    assert (v.final_train_loss_max, v.eval_ppl_max) == (1.5, 3.0)
    assert (f.final_train_loss_max, f.eval_ppl_max) == (1.0, 2.0)
    assert (v.overfit_gap, v.underfit_loss, v.underfit_after_epoch, v.plateau_steps) == (0.5, 1.5, 1.0, 1000)


def test_every_threshold_has_a_source_in_the_facts_file():
    table = health_facts()["thresholds"]
    assert set(table) == set(Thresholds.names())
    t = Thresholds.load()
    for name in Thresholds.names():
        assert len(t.source(name)) > 20, name
    assert "1000+ steps" in t.source("plateau_steps") and ">0.5 gap" in t.source("overfit_gap")


def test_overrides_apply_and_keep_their_types():
    t = Thresholds.load({"plateau_steps": 100.0, "final_train_loss_max": 2, "spike_factor": 3}, stage="full")
    assert t.plateau_steps == 100 and isinstance(t.plateau_steps, int)
    assert t.final_train_loss_max == 2.0 and isinstance(t.final_train_loss_max, float)
    assert t.eval_ppl_max == 2.0 and t.stage == "full"


@pytest.mark.parametrize("overrides, match", [
    ({"plateau_step": 100}, "unknown health threshold 'plateau_step' \\(did you mean plateau_steps\\?\\)"),
    ({"bogus": 1}, "unknown health threshold 'bogus'"),
    ({"plateau_steps": 0.5}, "whole number"),
    ({"plateau_steps": 0}, "whole number"),
    ({"overfit_gap": -1}, "must not be negative"),
    ({"loss_window_fraction": 1.5}, "fraction"),
    ({"eval_ppl_max": "3"}, "not a number"),
    ({"eval_ppl_max": math.nan}, "not a number"),
    ({"eval_ppl_max": True}, "not a number"),
])
def test_bad_overrides_are_user_errors(overrides, match):
    with pytest.raises(UserError, match=match):
        Thresholds.load(overrides)


def test_unknown_stage_is_a_user_error():
    with pytest.raises(UserError, match="unknown stage 'final'"):
        Thresholds.load(stage="final")


# ---- verdicts ------------------------------------------------------------------------------------


def test_healthy_curve_passes_every_check():
    report = run(healthy_curve())
    assert statuses(report) == dict.fromkeys(ALL_CHECKS, "pass"), [c for c in report.checks if c.status != "pass"]
    assert report.passed
    falls = report.check("loss_falls")
    assert falls.value > 0.5 and falls.threshold == 0.1 and "steps 10-400" in falls.message


def test_real_tiny_run_passes_with_a_plateau_window_it_can_measure():
    curve = parse_log((LOGS / "axolotl_cpu_lora_tiny.log").read_text()).curve
    report = run(curve, overrides={"plateau_steps": 100})
    assert report.passed, [c for c in report.checks if c.status != "pass"]
    assert report.check("final_train_loss").value == pytest.approx((0.1273 + 0.1296 + 0.1383) / 3)
    assert report.check("eval_perplexity").value == pytest.approx(math.exp(0.1227))


def test_real_tiny_run_with_default_plateau_window_is_not_measured_and_fails_the_gate():
    curve = parse_log((LOGS / "axolotl_cpu_lora_tiny.log").read_text()).curve
    report = run(curve)
    plateau = report.check("no_plateau")
    assert plateau.status == "not_measured" and plateau.value == 220 and plateau.threshold == 1000
    assert "shorter than one plateau window of 1000 steps" in plateau.message
    assert not report.passed


def test_plateau_stuck_above_the_target_fails():
    losses = [3.0 - 0.01 * i for i in range(50)] + [2.5 + 0.01 * ((-1) ** i) for i in range(150)]
    report = run(curve_of(losses, steps_per_epoch=1000))
    plateau = report.check("no_plateau")
    assert plateau.status == "fail" and plateau.value < 0.01
    assert "stuck from step" in plateau.message and "while above 1.5" in plateau.message


def test_flat_loss_below_the_target_is_converged_not_stuck():
    losses = [3.0 * math.exp(-i / 10) + 0.3 for i in range(60)] + [0.3] * 140
    plateau = run(curve_of(losses)).check("no_plateau")
    assert plateau.status == "pass" and "converged" in plateau.message


def test_spike_fails_and_noise_does_not():
    base = [2.0 - 0.005 * i + 0.03 * ((-1) ** i) for i in range(100)]
    assert run(curve_of(base)).check("no_spike").status == "pass"
    spiky = list(base)
    spiky[60] = 4.5
    spike = run(curve_of(spiky)).check("no_spike")
    assert spike.status == "fail" and spike.value == 1 and "step 610" in spike.message


def test_small_relative_jump_on_a_tiny_loss_is_not_a_spike():
    losses = [0.12 + 0.01 * ((-1) ** i) for i in range(20)]
    losses[10] = 0.3  # 2.5x but only +0.18
    assert run(curve_of(losses)).check("no_spike").status == "pass"


def test_overfitting_gap_above_limit_fails():
    curve = healthy_curve()
    curve.eval[-1].loss = curve.train[-1].loss + 0.8
    over = run(curve).check("not_overfitting")
    assert over.status == "fail" and over.value == pytest.approx(0.8) and over.threshold == 0.5


def test_underfitting_after_epoch_one():
    losses = [2.4 - 0.003 * i for i in range(200)]  # falls, but stays above 1.5
    curve = curve_of(losses, steps_per_epoch=1000, evals=[(1000, 2.0), (2000, 1.9)])
    under = run(curve).check("not_underfitting")
    assert under.status == "fail" and "both above 1.5" in under.message
    # same losses but the eval is low: not both high
    curve.eval[-1].loss = 1.2
    assert run(curve).check("not_underfitting").status == "pass"


def test_underfitting_before_epoch_one_is_not_measured():
    curve = curve_of([2.4 - 0.003 * i for i in range(50)], steps_per_epoch=1000, evals=[(500, 2.0)])
    under = run(curve).check("not_underfitting")
    assert under.status == "not_measured" and "reached epoch 0.5" in under.message


def test_nan_loss_fails_no_nan_and_final_loss():
    losses = [2.5 - 0.01 * i for i in range(30)] + [math.nan] * 3
    report = run(curve_of(losses))
    assert report.check("no_nan").status == "fail" and "loss=nan at step 310" in report.check("no_nan").message
    assert report.check("final_train_loss").status == "fail"
    assert not report.passed


def test_infinite_grad_norm_fails_no_nan():
    curve = healthy_curve()
    curve.train[50].grad_norm = math.inf
    check = run(curve).check("no_nan")
    assert check.status == "fail" and "grad_norm=inf at step 510" in check.message


def test_all_nan_curve_measures_nothing_and_fails():
    report = run(curve_of([math.nan] * 20, evals=[(200, math.nan)]))
    s = statuses(report)
    assert s["no_nan"] == "fail" and s["final_train_loss"] == "fail" and s["eval_perplexity"] == "fail"
    assert s["loss_falls"] == s["no_spike"] == s["no_plateau"] == "not_measured"
    assert s["not_overfitting"] == "not_measured"
    assert not report.passed


def test_empty_curve_passes_nothing_about_the_curve():
    report = run(Curve(), exit_code=0)
    s = statuses(report)
    for name in ("no_nan", "loss_falls", "final_train_loss", "eval_perplexity", "no_spike", "no_plateau",
                 "not_overfitting", "not_underfitting"):
        assert s[name] == "not_measured", name
    assert not report.passed


def test_one_point_curve_is_too_short():
    report = run(curve_of([1.0], evals=[(10, 1.0)]))
    s = statuses(report)
    assert s["loss_falls"] == s["no_spike"] == s["no_plateau"] == "not_measured"
    assert report.check("loss_falls").message.startswith("1 finite train losses logged; this check needs at least 5")
    assert not report.passed


def test_loss_that_does_not_fall_fails():
    falls = run(curve_of([2.0 + 0.001 * i for i in range(50)])).check("loss_falls")
    assert falls.status == "fail" and falls.value < 0


def test_final_loss_and_perplexity_limits_depend_on_the_stage():
    curve = healthy_curve()
    for p in curve.train[-3:]:
        p.loss = 1.2
    curve.eval[-1].loss = math.log(2.5)
    v, f = run(curve, stage="validate"), run(curve, stage="full")
    assert v.check("final_train_loss").status == "pass" and f.check("final_train_loss").status == "fail"
    assert v.check("eval_perplexity").status == "pass" and f.check("eval_perplexity").status == "fail"
    assert f.check("eval_perplexity").value == pytest.approx(2.5)


def test_only_the_pre_training_evaluation_is_not_a_final_perplexity():
    curve = healthy_curve()
    curve.eval = curve.eval[:1]  # step 0
    check = run(curve).check("eval_perplexity")
    assert check.status == "not_measured" and "before training" in check.message
    assert run(curve).check("not_overfitting").status == "not_measured"


def test_crashed_process_fails_with_its_error_line():
    curve = parse_log((LOGS / "axolotl_cpu_zero3_batch_mismatch.log").read_text())
    report = run(curve.curve, exit_code=1, error=curve.last_error, checkpoint=CheckpointFacts(False, None, None, "none"))
    proc = report.check("process")
    assert proc.status == "fail" and proc.value == 1
    assert "8 != 8 * 1 * 2" in proc.message
    assert report.check("checkpoint").status == "fail" and not report.passed


def test_process_still_running_is_not_measured():
    report = run(healthy_curve(), exit_code=None)
    assert report.check("process").status == "not_measured"
    assert report.check("no_oom").status == "not_measured"
    assert not report.passed


def test_gpu_oom_fails():
    w = parse_log((LOGS / "synthetic_cuda_oom_2proc.log").read_text())
    report = run(w.curve, oom=w.oom, exit_code=1, error=w.last_error)
    oom = report.check("no_oom")
    assert oom.status == "fail" and oom.value == "GPU memory"
    assert oom.message.startswith("GPU out of memory: torch.OutOfMemoryError")


def test_sigkill_exit_is_reported_as_host_ram_not_gpu():
    oom = run(healthy_curve(), exit_code=137).check("no_oom")
    assert oom.status == "fail" and oom.value == "host RAM" and "GPU" not in oom.message
    assert oom.message == "host RAM (OOM killer?): process killed by SIGKILL (exit code 137)"
    proc = run(healthy_curve(), exit_code=-9).check("process")
    assert proc.status == "fail" and "signal 9" in proc.message
    assert "128+9: killed by signal 9" in run(healthy_curve(), exit_code=137).check("process").message


def test_killed_line_is_host_ram():
    w = parse_log((LOGS / "synthetic_nan_then_killed.log").read_text())
    oom = run(w.curve, oom=w.oom, exit_code=137).check("no_oom")
    assert oom.message.startswith("host RAM (OOM killer?): /bin/bash: line 1: 48213 Killed")


@pytest.mark.parametrize("facts, status", [
    (None, "not_measured"),
    (CheckpointFacts(False, None, None, "no weights"), "fail"),
    (CheckpointFacts(True, "out", None, ".bin weights, cannot verify"), "not_measured"),
    (CheckpointFacts(True, "out", False, "truncated"), "fail"),
    (CheckpointFacts(True, "out", True, "loads"), "pass"),
])
def test_checkpoint_check(facts, status):
    assert run(healthy_curve(), checkpoint=facts).check("checkpoint").status == status


def test_report_passes_only_when_every_check_passes_and_is_strict_json():
    assert not HealthReport([]).passed
    report = HealthReport([Check("a", "pass", 1.0, 2.0, ""), Check("b", "not_measured", math.nan, None, "")])
    assert not report.passed
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["passed"] is False and data["counts"] == {"pass": 1, "fail": 0, "not_measured": 1}
    assert data["checks"][1]["value"] == "nan"


# ---- checkpoint inspection on synthetic folders (no torch) ---------------------------------------


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], *, truncate: int = 0) -> None:
    """A valid safetensors file of zeros: {name: (dtype, shape)}."""
    size = {"F32": 4, "BF16": 2, "F16": 2}
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape) in tensors.items():
        n = math.prod(shape) * size[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    data = struct.pack("<Q", len(raw)) + raw + bytes(offset)
    path.write_bytes(data[:len(data) - truncate] if truncate else data)


def lora_tensors(r=8, layers=2, modules=("q_proj", "v_proj"), hidden=64) -> dict:
    out = {}
    for layer in range(layers):
        for m in modules:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{m}"
            out[f"{prefix}.lora_A.weight"] = ("F32", [r, hidden])
            out[f"{prefix}.lora_B.weight"] = ("F32", [hidden, r])
    return out


def make_adapter(folder: Path, *, r=8, tensors=None, config=None, truncate=0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}
    cfg.update(config or {})
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    write_safetensors(folder / "adapter_model.safetensors", tensors or lora_tensors(r=r), truncate=truncate)
    return folder


def test_adapter_with_checkpoints_loads(tmp_path):
    make_adapter(tmp_path / "checkpoint-10")
    make_adapter(tmp_path / "checkpoint-2")
    make_adapter(tmp_path)
    facts = inspect_checkpoint(tmp_path)
    assert facts.written and facts.loads is True and facts.path == str(tmp_path)
    assert "checkpoints: checkpoint-2, checkpoint-10" in facts.detail
    assert "final: LoRA r=8, 4 adapted modules, 8 tensors, loads" in facts.detail
    assert "checkpoint-10: LoRA r=8" in facts.detail


def test_only_checkpoints_no_final(tmp_path):
    make_adapter(tmp_path / "checkpoint-5")
    facts = inspect_checkpoint(tmp_path)
    assert facts.written and facts.loads is True and facts.path == str(tmp_path / "checkpoint-5")


@pytest.mark.parametrize("kwargs, reason", [
    ({"truncate": 100}, "truncated"),
    ({"config": {"r": 16}}, "do not match rank r=16"),
    ({"tensors": {k: v for k, v in lora_tensors().items() if "lora_B" not in k or "layers.1.self_attn.v" not in k}},
     "without its pair"),
    ({"tensors": {k: ("F32", [0]) for k in lora_tensors()}}, "ZeRO-3"),
    ({"config": {"target_modules": ["q_proj", "v_proj", "o_proj"]}}, "\\['o_proj'\\]"),
    ({"tensors": {"base_model.model.lm_head.weight": ("F32", [4, 4])}}, "no lora_A/lora_B"),
])
def test_broken_adapter_does_not_load(tmp_path, kwargs, reason):
    make_adapter(tmp_path, **kwargs)
    facts = inspect_checkpoint(tmp_path)
    assert facts.written and facts.loads is False
    assert "does not load" in facts.detail
    import re

    assert re.search(reason, facts.detail), facts.detail


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.write_bytes(b"\x01\x02"), "shorter than the 8-byte header"),
    (lambda p: p.write_bytes(struct.pack("<Q", 10 ** 9) + b"{}"), "does not fit"),
    (lambda p: p.write_bytes(struct.pack("<Q", 4) + b"nope"), "not JSON"),
])
def test_garbled_safetensors_header(tmp_path, damage, reason):
    make_adapter(tmp_path)
    damage(tmp_path / "adapter_model.safetensors")
    facts = inspect_checkpoint(tmp_path)
    assert facts.loads is False and reason in facts.detail


def test_broken_adapter_config(tmp_path):
    make_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{not json")
    facts = inspect_checkpoint(tmp_path)
    assert facts.loads is False and "adapter_config.json is not readable JSON" in facts.detail


def test_pre_saved_adapter_config_alone_is_not_a_checkpoint(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (tmp_path / "checkpoint-1").mkdir()
    facts = inspect_checkpoint(tmp_path)
    assert not facts.written and facts.loads is None
    assert "Axolotl pre-saves it" in facts.detail and "checkpoint-1" in facts.detail


def test_missing_output_folder(tmp_path):
    facts = inspect_checkpoint(tmp_path / "out")
    assert not facts.written and "does not exist" in facts.detail


def test_sharded_full_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 8, "hidden_size": 4}))
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {"model.embed_tokens.weight": ("BF16", [8, 4])})
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {"lm_head.weight": ("BF16", [8, 4])})
    index = {"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                            "lm_head.weight": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    facts = inspect_checkpoint(tmp_path)
    assert facts.loads is True and "llama model, 2 tensors" in facts.detail
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    facts = inspect_checkpoint(tmp_path)
    assert facts.loads is False and "model-00002-of-00002.safetensors: cannot read" in facts.detail


def test_full_model_embedding_must_match_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 16, "hidden_size": 4}))
    write_safetensors(tmp_path / "model.safetensors", {"model.embed_tokens.weight": ("F32", [8, 4])})
    facts = inspect_checkpoint(tmp_path)
    assert facts.loads is False and "config.json says [16, 4]" in facts.detail


def test_bin_weights_are_written_but_not_verified(tmp_path):
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x02")
    facts = inspect_checkpoint(tmp_path)
    assert facts.written and facts.loads is None and "cannot verify without torch" in facts.detail


# ---- a real PEFT adapter on the tiny model --------------------------------------------------------


@pytest.mark.slow
def test_real_peft_adapter_on_the_tiny_model(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llamaforge.models.tiny import create_tiny_model

    model_dir = tmp_path / "model"
    create_tiny_model(model_dir, ["Who are you? I am Leviathan.", "def add(a, b): return a + b"] * 20)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                                  task_type="CAUSAL_LM"))
    out = tmp_path / "out"
    peft_model.save_pretrained(out / "checkpoint-3")
    peft_model.save_pretrained(out)
    facts = inspect_checkpoint(out)
    assert facts.written and facts.loads is True, facts.detail
    layers = model.config.num_hidden_layers
    assert f"final: LoRA r=8, {3 * layers} adapted modules, {6 * layers} tensors, loads" in facts.detail
    assert "checkpoint-3: LoRA r=8" in facts.detail

    # a checkpoint cut short by a full disk
    weights = out / "checkpoint-3" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    facts = inspect_checkpoint(out)
    assert facts.loads is False and "checkpoint-3: does not load" in facts.detail and "truncated" in facts.detail

    # the full model folder create_tiny_model wrote passes as a model
    model_facts = inspect_checkpoint(model_dir)
    assert model_facts.loads is True and "llama model" in model_facts.detail


# The demo's logged train losses (llamaforge demo on SmolLM2-135M, 2 cores; docs/runs.md): one batch of
# 8 rows per point in the validation run, two batches per point in the full run.
DEMO_VALIDATE_LOSSES = [1.76, 1.9, 1.39, 1.14, 0.95, 2.23, 0.96, 1.08, 1.94, 1.31, 0.58, 1.35, 1.02, 0.99, 0.49,
                        0.47, 0.89, 1.44, 1.32, 1.05]
DEMO_FULL_LOSSES = [0.87, 1.24, 1.55, 1.43, 1.07, 0.82, 1.12, 0.84, 1.3, 0.56, 0.93, 0.61, 0.82, 1.5, 0.64, 0.48, 0.32,
                    0.41, 0.34, 0.36, 0.5, 0.4, 0.55, 0.41, 0.39, 0.4, 0.28, 0.4, 0.33, 0.35, 0.42, 0.3]


def _demo_thresholds(stage):
    from llamaforge.demo.workflow import demo_settings

    return Thresholds.load(demo_settings().health, stage=stage)


def test_the_demos_health_departures_pass_its_healthy_runs():
    from llamaforge.run.health import check_plateau, check_spike

    for losses, every, stage in ((DEMO_VALIDATE_LOSSES, 1, "validate"), (DEMO_FULL_LOSSES, 2, "full")):
        t = _demo_thresholds(stage)
        curve = curve_of(losses, every=every)
        assert check_spike(curve, t).status == "pass" and check_plateau(curve, t).status == "pass", stage
        # with the facts' defaults, the same healthy runs fail (the reason for the departures)
        default = Thresholds.load({"plateau_steps": t.plateau_steps}, stage=stage)
        assert "fail" in (check_spike(curve, default).status, check_plateau(curve, default).status), stage
    # the guide's own loss and perplexity limits are not touched
    for stage in ("validate", "full"):
        t, guide = _demo_thresholds(stage), Thresholds.load({}, stage=stage)
        assert (t.final_train_loss_max, t.eval_ppl_max, t.overfit_gap) == (
            guide.final_train_loss_max, guide.eval_ppl_max, guide.overfit_gap)


def test_the_demos_departures_still_fail_a_flat_or_a_diverging_curve():
    from llamaforge.run.health import check_plateau, check_spike

    t = _demo_thresholds("full")
    flat = curve_of([2.0 + 0.02 * ((-1) ** i) for i in range(32)], every=2)
    assert check_plateau(flat, t).status == "fail"
    diverging = curve_of(DEMO_FULL_LOSSES[:20] + [0.9, 2.5, 4.0, 6.0], every=2)
    assert check_spike(diverging, t).status == "fail"
