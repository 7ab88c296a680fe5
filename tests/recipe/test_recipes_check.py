"""Every committed recipe passes `llamaforge check` — Axolotl 0.19's own schema for its target
hardware included — and every DeepSpeed JSON we ship parses with DeepSpeed's own config parser once
the HF Trainer has filled its "auto" fields from a recipe."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml

from llamaforge.paths import repo_root
from llamaforge.recipe.registry import list_recipes

ROOT = repo_root()


@pytest.mark.slow
def test_every_committed_recipe_passes_check_with_axolotls_schema(monkeypatch):
    from llamaforge.check.findings import check_configs

    monkeypatch.chdir(ROOT)          # recipes refer to their DeepSpeed files from the repository root
    entries = [e for e in list_recipes() if e.trainer == "axolotl"]   # MLX-LM configs: tests/recipe/test_mlx.py
    reports = check_configs([ROOT / e.path for e in entries])
    for entry, report in zip(entries, reports):
        errors = [f.to_dict() for f in report.findings if f.severity == "error"]
        assert report.ok and not errors, f"{entry.path}: {errors}"
        # the schema really ran: no "not validated" finding, and memory was judged
        assert not any(f.key == "schema" for f in report.findings), entry.path
        assert report.estimate is not None and report.estimate.fits, entry.path
        # check reads the recipe back to the same estimate its header states
        assert report.estimate.peak_gpu_gib == pytest.approx(entry.peak_gpu_gib, abs=0.06), entry.path


def _trainer_args(cfg: dict) -> SimpleNamespace:
    """What the HF Trainer passes to HfTrainerDeepSpeedConfig.trainer_config_process."""
    return SimpleNamespace(
        world_size=1, per_device_train_batch_size=cfg["micro_batch_size"],
        gradient_accumulation_steps=cfg["gradient_accumulation_steps"], max_grad_norm=cfg["max_grad_norm"],
        learning_rate=cfg["learning_rate"], adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        weight_decay=cfg["weight_decay"], save_on_each_node=False, fp16=False, fp16_full_eval=False,
        bf16=bool(cfg.get("bf16")), bf16_full_eval=False, get_warmup_steps=lambda total: 0,
    )


MODEL_8B = SimpleNamespace(config=SimpleNamespace(hidden_size=4096))


@pytest.mark.slow
def test_every_deepspeed_json_parses_with_deepspeeds_own_config_parser():
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    ds_files = sorted((ROOT / "recipes/deepspeed").glob("*.json"))
    assert len(ds_files) >= 4
    recipe_cfg = yaml.safe_load((ROOT / "recipes/llama-3.1-8b/full-8xH100-80GB.yaml").read_text())
    for path in ds_files:
        raw = json.loads(path.read_text())
        hf = HfTrainerDeepSpeedConfig(raw)
        args = _trainer_args(recipe_cfg)
        hf.trainer_config_process(args)                        # fills the batch fields from the recipe
        hf.trainer_config_finalize(args, MODEL_8B, 1000)       # and the bucket sizes; raises on a contradiction
        filled = hf.config
        assert "auto" not in json.dumps(filled), path.name
        parsed = DeepSpeedConfig(filled)                       # DeepSpeed's own validation
        assert parsed.zero_optimization_stage == raw["zero_optimization"]["stage"], path.name
        assert parsed.train_batch_size == recipe_cfg["micro_batch_size"] * recipe_cfg["gradient_accumulation_steps"]
        if "offload_param" in raw["zero_optimization"]:
            assert parsed.zero_config.offload_param is not None and parsed.zero_optimization_stage == 3


@pytest.mark.slow
def test_a_hard_coded_batch_size_is_caught_by_the_same_arithmetic():
    """The failure users meet on GPUs: a DeepSpeed JSON whose train_batch_size disagrees with
    micro-batch x accumulation x world size. The Trainer refuses it before DeepSpeed starts."""
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    raw = json.loads((ROOT / "recipes/deepspeed/zero3.json").read_text())
    raw["train_batch_size"] = 4
    hf = HfTrainerDeepSpeedConfig(raw)
    args = _trainer_args({"micro_batch_size": 4, "gradient_accumulation_steps": 1, "max_grad_norm": 1.0,
                          "learning_rate": 2e-4, "weight_decay": 0.0, "bf16": True})
    args.world_size = 2
    hf.trainer_config_process(args)
    with pytest.raises(ValueError, match="train_batch_size"):
        hf.trainer_config_finalize(args, MODEL_8B, 10)
