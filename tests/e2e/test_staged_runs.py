"""Staged runs with real Axolotl: on SmolLM2-135M, a validation whose gates fail blocks the full run;
on the tiny random model (plumbing), the DeepSpeed ZeRO-3 path trains on 2 CPU processes through
LlamaForge's launcher, and a crashed child leaves a failing report."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The demo corpus and a tiny model, built once for this module."""
    from llamaforge.corpus.build import BuildOptions, build_corpus
    from llamaforge.demo.workflow import _texts_for_tokenizer
    from llamaforge.paths import datasets_dir
    from llamaforge.models.tiny import create_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    res = build_corpus(datasets_dir() / "demo.yaml", BuildOptions(workers=1), cwd=root)
    create_tiny_model(root / "model", _texts_for_tokenizer(res.out_dir))
    return root, Path(res.out_dir)


@pytest.fixture
def in_dir(monkeypatch):
    monkeypatch.setenv("AXOLOTL_DO_NOT_TRACK", "1")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    def chdir(path):
        monkeypatch.chdir(path)
    return chdir


@pytest.mark.slow
def test_a_validation_whose_gates_fail_blocks_the_full_run(demo_run, in_dir, cli, tmp_path):
    """The real model, trained on the demo's validation sample exactly as the demo does it, but gated
    for a persona the corpus does not teach (Nyx): healthy training, failed identity gate, and
    `--stage full` refused with the failed gate named. Seed 003: the 10% run must pass its quality
    checks too, not only its loss curve."""
    root, proc = demo_run
    assert proc.returncode == 0, proc.stdout[-3000:]
    in_dir(root)
    recipe = root / "build/demo/nyx.yaml"
    text = (root / "build/demo/leviathan-smollm2.yaml").read_text()
    text = text.replace("# llamaforge-persona: Leviathan", "# llamaforge-persona: Nyx")
    # the identity gate alone (the demo's validation ran demo-validate): the refusal is the point
    assert "# llamaforge-validate-gates: demo-validate\n" in text
    recipe.write_text(text.replace("# llamaforge-validate-gates: demo-validate", "# llamaforge-validate-gates: identity"))

    res = cli("run", str(recipe), "--stage", "validate", "--runs-dir", "runs", "--json")
    assert res.code == 1, res.err
    report = json.loads((root / "runs/nyx/validate/report.json").read_text())
    assert report["health"]["passed"] is True            # it trained as well as the demo's validation did
    assert report["passed"] is False and report["gates"]["passed"] is False
    gates = {g["name"]: g for g in report["gates"]["gates"]}
    assert gates["identity"]["verdict"] == "fail" and gates["identity"]["value"] <= 0.1   # it answers as Leviathan
    assert "identity" in report["gates"]["failed"]
    md = (root / "runs/nyx/validate/report.md").read_text()
    assert "The health checks passed; the stage failed on the gates below." in md

    res = cli("run", str(recipe), "--stage", "full", "--runs-dir", "runs")
    assert res.code == 1
    assert "full run refused" in res.err and "gates of profile `identity` failed: identity" in res.err
    assert not (root / "runs/nyx/full").exists()   # nothing was launched


@pytest.mark.slow
def test_deepspeed_zero3_trains_on_two_cpu_processes(tiny, in_dir, cli, tmp_path):
    """The distributed path without a GPU: torchrun + llamaforge.run.cpu_distributed + ZeRO-3 with
    "auto" batch fields, launched by `llamaforge run` from a recipe rendered by the templates."""
    from llamaforge.planning.catalog import get_model, parse_hardware
    from llamaforge.demo.workflow import demo_settings
    from llamaforge.planning.plan import Plan
    from llamaforge.recipe.request import Layout, RecipeRequest
    from llamaforge.recipe.sft import render_recipe
    from llamaforge.recipe.matrix import write_files
    from llamaforge.planning.train_setup import TrainSetup

    root, corpus = tiny
    in_dir(tmp_path)
    setup = TrainSetup(model=get_model("tiny"), hardware=parse_hardware("2xcpu", allow_cpu=True), method="lora",
                       parallel="zero3", lora_r=16, seq_len=256, micro_batch=4, grad_accum=2, grad_ckpt=False,
                       optimizer="adamw_torch", attn="sdpa", sample_packing=False)
    plan = Plan(setup=setup, estimate=None, reasons=["the ZeRO-3 CPU test"], rejected=[])
    # 3 epochs of the 10% sample (~15 optimizer steps): one epoch is 5 steps, and the loss of a random
    # model can fall less than the health check's 10% in 5 steps (CI measured 5.1%)
    hyper = dict(demo_settings("tiny").hyper, epochs=3)
    req = RecipeRequest(model="tiny", gpus="2xcpu", method="lora", corpus="demo", hyper_layers=(("common", hyper),))
    rec = render_recipe(req, Layout(recipe_dir_for_model=False, base="ds", launch_from_root=True), plan_obj=plan,
                        base_model=str(root / "model"), train_files=[str(corpus / "train.jsonl")],
                        eval_file=str(corpus / "eval.jsonl"), name="zero3-cpu",
                        extra_header={"health": "plateau_steps=10, eval_ppl_max=1000, overfit_gap=10"})
    write_files(rec.files, tmp_path)
    recipe = tmp_path / "ds/zero3-cpu.yaml"
    cfg = yaml.safe_load(recipe.read_text())
    assert cfg["deepspeed"] == "ds/deepspeed/zero3.json"
    ds = json.loads((tmp_path / cfg["deepspeed"]).read_text())
    assert ds["train_batch_size"] == "auto" and ds["zero_optimization"]["stage"] == 3
    assert "torchrun --nproc_per_node 2 -m llamaforge.run.cpu_distributed" in recipe.read_text()

    res = cli("run", str(recipe), "--stage", "validate", "--runs-dir", "runs", "--no-gates", "--json")
    log = (tmp_path / "runs/zero3-cpu/validate/train.log").read_text()
    assert "train_batch_size is not equal" not in log
    report = json.loads((tmp_path / "runs/zero3-cpu/validate/report.json").read_text())
    statuses = {c["name"]: c for c in report["health"]["checks"]}
    assert statuses["process"]["status"] == "pass", log[-3000:]
    assert statuses["checkpoint"]["status"] == "pass", statuses["checkpoint"]["message"]
    assert statuses["loss_falls"]["status"] == "pass", statuses["loss_falls"]["message"]
    assert '"world_size": 2' in log
    assert res.code in (0, 1)


@pytest.mark.slow
def test_a_crashed_child_leaves_a_failing_report_that_names_the_cause(tiny, in_dir, cli, tmp_path):
    from llamaforge.demo.workflow import demo_recipe_request, demo_settings
    from llamaforge.recipe.matrix import write_files

    root, corpus = tiny
    in_dir(tmp_path)
    rec = demo_recipe_request(tmp_path / "no-such-model", corpus, tmp_path / "crash.yaml", demo_settings("tiny"))
    write_files(rec.files, tmp_path)
    res = cli("run", str(tmp_path / "crash.yaml"), "--stage", "validate", "--runs-dir", "runs", "--json")
    assert res.code == 1
    report = json.loads((tmp_path / "runs/crash/validate/report.json").read_text())
    assert report["passed"] is False and report["exit_code"] not in (0, None)
    process = next(c for c in report["health"]["checks"] if c["name"] == "process")
    assert process["status"] == "fail"
    assert "no-such-model" in process["message"] or "Error" in process["message"], process["message"]
    assert "stage" in report and report["stage"] == "validate"
