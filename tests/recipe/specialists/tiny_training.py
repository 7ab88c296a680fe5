"""What the demo-size slow tests of specialists and DPO share: a CPU plan (the real SmolLM2-135M or the
tiny random model), real Axolotl training of a rendered recipe, the Trainer's logged metrics, a cut
to a few steps."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

TINY_STEPS = 24


def cpu_plan(*, lora_r: int, seq_len: int, micro_batch: int, reason: str, model: str = "tiny"):
    """A hand-made plan for a model on the CPU (the planner prices GPUs), like the demo's."""
    from llamaforge.planning.catalog import get_model, parse_hardware
    from llamaforge.planning.plan import Plan
    from llamaforge.planning.train_setup import TrainSetup

    setup = TrainSetup(model=get_model(model), hardware=parse_hardware("cpu", allow_cpu=True), method="lora",
                       parallel="single", lora_r=lora_r, lora_alpha=2 * lora_r, seq_len=seq_len,
                       micro_batch=micro_batch, grad_accum=1, grad_ckpt=False, optimizer="adamw_torch", attn="sdpa",
                       sample_packing=False)
    return Plan(setup=setup, estimate=None, reasons=[reason], rejected=[])


def cut_to_steps(recipe: Path, steps: int = TINY_STEPS) -> dict:
    """Keep the rendered recipe (header included) but stop after `steps` optimizer steps."""
    text = recipe.read_text()
    cfg = yaml.safe_load(text)
    cfg["max_steps"] = steps
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    recipe.write_text(header + yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def train(recipe: Path, cwd: Path) -> str:
    """Run stock Axolotl on the recipe (the CPU launch of its header, without accelerate's wrapper);
    the combined log. Fails the test with the log's tail when Axolotl fails."""
    env = dict(os.environ, AXOLOTL_DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    res = subprocess.run([sys.executable, "-m", "axolotl.cli.train", str(recipe)], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    return log


def logged_metrics(log: str) -> list[dict[str, float]]:
    """Every metrics dict the Trainer printed, in order."""
    from llamaforge.run.metrics import parse_metric_dict

    found = (parse_metric_dict(m.group(0)) for m in re.finditer(r"\{'[^{}]*\}", log))
    return [m for m in found if m]
