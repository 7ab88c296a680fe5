"""Real Axolotl on the tiny model: a validation that fails its gate blocks the full run, and the
DeepSpeed ZeRO-3 path trains on 2 CPU processes through LlamaForge's launcher."""

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
    from llamaforge.demo import _texts_for_tokenizer
    from llamaforge.paths import datasets_dir
    from llamaforge.tinymodel import create_tiny_model

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
def test_a_validation_that_fails_its_gate_blocks_the_full_run(tiny, in_dir, cli, tmp_path):
    from llamaforge.demo import demo_recipe_request
    from llamaforge.render import write_files

    root, corpus = tiny
    in_dir(tmp_path)
    rec = demo_recipe_request(root / "model", corpus, tmp_path / "starved.yaml")
    write_files(rec.files, tmp_path)
    recipe = tmp_path / "starved.yaml"
    cfg = yaml.safe_load(recipe.read_text())
    cfg["max_steps"] = 4                     # a tiny step budget: the model cannot learn in 4 steps
    header = "".join(line + "\n" for line in recipe.read_text().splitlines() if line.startswith("#"))
    recipe.write_text(header + yaml.safe_dump(cfg, sort_keys=False))

    res = cli("run", str(recipe), "--stage", "validate", "--runs-dir", "runs", "--json")
    assert res.code == 1, res.err
    report = json.loads((tmp_path / "runs/starved/validate/report.json").read_text())
    assert report["passed"] is False and report["health"]["passed"] is False
    statuses = {c["name"]: c["status"] for c in report["health"]["checks"]}
    assert statuses["process"] == "pass"              # it ran; it just did not learn
    assert statuses["final_train_loss"] == "fail"
    assert "fail" in statuses.values() or "not_measured" in statuses.values()

    res = cli("run", str(recipe), "--stage", "full", "--runs-dir", "runs")
    assert res.code == 1
    assert "full run refused" in res.err and "did not pass" in res.err
    assert not (tmp_path / "runs/starved/full").exists()   # nothing was launched


@pytest.mark.slow
def test_deepspeed_zero3_trains_on_two_cpu_processes(tiny, in_dir, cli, tmp_path):
    """The distributed path without a GPU: torchrun + llamaforge.run.cpu_distributed + ZeRO-3 with
    "auto" batch fields, launched by `llamaforge run` from a recipe rendered by the templates."""
    from llamaforge.catalog import get_model, parse_hardware
    from llamaforge.demo import demo_settings
    from llamaforge.plan import Plan
    from llamaforge.render import Layout, RecipeRequest, render_recipe, write_files
    from llamaforge.training import TrainSetup

    root, corpus = tiny
    in_dir(tmp_path)
    setup = TrainSetup(model=get_model("tiny"), hardware=parse_hardware("2xcpu", allow_cpu=True), method="lora",
                       parallel="zero3", lora_r=16, seq_len=256, micro_batch=4, grad_accum=2, grad_ckpt=False,
                       optimizer="adamw_torch", attn="sdpa", sample_packing=False)
    plan = Plan(setup=setup, estimate=None, reasons=["the ZeRO-3 CPU test"], rejected=[])
    hyper = dict(demo_settings("tiny").hyper, epochs=1)
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
    from llamaforge.demo import demo_recipe_request, demo_settings
    from llamaforge.render import write_files

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
