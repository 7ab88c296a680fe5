"""Stage derivation and gatekeeping of `llamaforge run`, without launching anything: the changes a
stage makes, the refusal of `full` without a matching passing validation, run-folder ownership,
--resume, --dry-run and the bad-input lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llamaforge.corpus.build import BuildOptions, build_corpus
from llamaforge.errors import UserError
from llamaforge.paths import datasets_dir
from llamaforge.run.health import Thresholds, evaluate_health
from llamaforge.run.report import write_stage_report
from llamaforge.run.runner import RunRefused, plan_stage
from llamaforge.run.stage import derive_stage_config, load_recipe, prepared_dataset_key

from .curves import healthy_curve


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A built demo corpus and the demo recipe (model path only named: nothing loads it here)."""
    from llamaforge.demo.workflow import demo_recipe_request, demo_settings
    from llamaforge.recipe.matrix import write_files

    root = tmp_path_factory.mktemp("stage")
    res = build_corpus(datasets_dir() / "demo.yaml", BuildOptions(workers=1), cwd=root)
    rec = demo_recipe_request(root / "model", res.out_dir, root / "recipe.yaml", demo_settings("tiny"))
    write_files(rec.files, root)
    return root, root / "recipe.yaml", res


def passing_report(stage_dir: Path, recipe_path: Path, manifest_path: Path, *, passed=True, recipe_hash=None, mhash=None,
                   gates="pass"):
    from llamaforge.corpus.manifest import manifest_hash

    recipe = load_recipe(recipe_path)
    curve = healthy_curve()
    th = Thresholds.load({}, stage="validate")
    health = evaluate_health(curve, th, oom=None, exit_code=0 if passed else 1, checkpoint=None)
    checks = health.to_dict()
    if passed:   # the checkpoint check is I/O; stand in a passing one for this unit test
        for c in checks["checks"]:
            c["status"] = "pass"
        checks["passed"] = True
    gate_rows = [{"name": "identity", "verdict": "pass" if gates == "pass" else "fail", "value": 0.3, "threshold": 0.9}]
    gate_section = ({"passed": False, "profile": "validate", "skipped": "--no-gates: the gates were not run"}
                    if gates == "skipped" else
                    {"passed": gates == "pass", "profile": "validate", "gates": gate_rows,
                     "failed": [] if gates == "pass" else ["identity"]})
    report = {"stage": "validate", "name": "x", "passed": checks["passed"] and gates == "pass", "health": checks,
              "gates": gate_section,
              "recipe": {"path": str(recipe_path), "hash": recipe_hash or recipe.hash},
              "corpus": {"manifest": str(manifest_path), "manifest_hash": mhash or manifest_hash(manifest_path)}}
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_stage_report(stage_dir, report, curve, th)


def test_validate_stage_uses_the_sample_and_says_what_it_changed(workspace):
    root, recipe_path, res = workspace
    plan, gate = plan_stage(recipe_path, "validate", runs_root=root / "runs")
    cfg = plan.config
    assert [d["path"] for d in cfg["datasets"]] == [str(Path(res.out_dir) / "sample.jsonl")]
    assert "curriculum_sampling" not in cfg
    assert cfg["datasets"][0]["type"] == "chat_template"
    assert cfg["test_datasets"][0]["path"] == str(Path(res.out_dir) / "eval.jsonl")
    assert cfg["output_dir"] == str(root / "runs" / "recipe" / "validate" / "out")
    assert cfg["save_first_step"] is True
    assert cfg["excess_length_strategy"] in ("drop", "truncate", "raise")
    assert cfg["evals_per_epoch"] * cfg["num_epochs"] >= 20
    assert "corpus-" in cfg["dataset_prepared_path"]
    assert any("validation sample" in c for c in plan.changes)
    assert plan.command[-2:] == ["axolotl.cli.train", str(plan.stage_recipe_path)]
    assert "--cpu" in plan.command and plan.env["AXOLOTL_DO_NOT_TRACK"] == "1"
    assert gate["forced"] is False


def test_full_stage_uses_the_train_split(workspace, tmp_path):
    root, recipe_path, res = workspace
    passing_report(tmp_path / "runs/recipe/validate", recipe_path, Path(res.out_dir) / "manifest.json")
    plan, gate = plan_stage(recipe_path, "full", runs_root=tmp_path / "runs")
    assert [d["path"] for d in plan.config["datasets"]] == [str(Path(res.out_dir) / "train.jsonl")]
    assert "save_first_step" not in plan.config or plan.config["save_first_step"] is not True
    assert gate["forced"] is False


@pytest.mark.parametrize("epochs,evals,wanted", [(1, 1, 2), (0.5, 2, 3), (1, 0.5, 2), (3, 4, 4)])
def test_a_stage_always_evaluates_where_axolotl_would_schedule_none(workspace, tmp_path, epochs, evals, wanted):
    """evals_per_epoch x num_epochs <= 1 makes Axolotl 0.19 schedule no evaluation (docs/check.md): the
    stage raises evals_per_epoch and says why, since its health checks need an evaluation."""
    from llamaforge.check.findings import schedules_no_evaluation
    from llamaforge.corpus.manifest import load_manifest
    from llamaforge.run.stage import corpus_files

    root, recipe_path, res = workspace
    text = recipe_path.read_text()
    cfg = yaml.safe_load(text)
    one = tmp_path / "one.yaml"
    one.write_text(text.replace(f"num_epochs: {cfg['num_epochs']}\n", f"num_epochs: {epochs}\n")
                   .replace(f"evals_per_epoch: {cfg['evals_per_epoch']}\n", f"evals_per_epoch: {evals}\n"))
    files = corpus_files(load_manifest(Path(res.out_dir)))
    out, changes = derive_stage_config(load_recipe(one), "full", files, Path("out"))
    assert out["num_epochs"] == epochs and out["evals_per_epoch"] == wanted and not schedules_no_evaluation(out)
    assert any("schedule no evaluation" in c for c in changes) is (evals * epochs <= 1)


def test_full_is_refused_without_a_validation(workspace, tmp_path):
    _, recipe_path, _ = workspace
    with pytest.raises(RunRefused, match="no validation report") as exc:
        plan_stage(recipe_path, "full", runs_root=tmp_path / "runs")
    assert exc.value.exit_code == 1


@pytest.mark.parametrize("kind,fragment", [
    ("failed", "did not pass \\(health checks failed"),
    ("gates", "did not pass \\(gates of profile `validate` failed: identity\\)"),
    ("ungated", "did not pass \\(gates not passed: --no-gates"),
    ("recipe", "recipe changed"),
    ("corpus", "corpus changed"),
])
def test_full_is_refused_unless_the_validation_matches_and_passed(workspace, tmp_path, kind, fragment):
    """Seed 003: the 10% run must pass its quality checks (the gates) too, not only its health."""
    _, recipe_path, res = workspace
    manifest = Path(res.out_dir) / "manifest.json"
    passing_report(tmp_path / "runs/recipe/validate", recipe_path, manifest, passed=kind != "failed",
                   recipe_hash="0" * 64 if kind == "recipe" else None, mhash="f" * 64 if kind == "corpus" else None,
                   gates={"gates": "fail", "ungated": "skipped"}.get(kind, "pass"))
    with pytest.raises(RunRefused, match=fragment):
        plan_stage(recipe_path, "full", runs_root=tmp_path / "runs")
    plan, gate = plan_stage(recipe_path, "full", runs_root=tmp_path / "runs", force=True)
    assert gate["forced"] is True and fragment.split()[0] in gate["reason"]


def test_the_validate_stage_runs_its_own_gate_profile(workspace):
    _, recipe_path, _ = workspace
    recipe = load_recipe(recipe_path)
    assert recipe.gate_profile_for("validate") == recipe.header.get("validate-gates", "validate")
    assert recipe.gate_profile_for("full") == recipe.gate_profile


def test_recipe_hash_ignores_comments_but_not_values(workspace, tmp_path):
    _, recipe_path, _ = workspace
    text = recipe_path.read_text()
    a = tmp_path / "a.yaml"
    a.write_text("# a new comment\n" + text)
    assert load_recipe(a).hash == load_recipe(recipe_path).hash
    a.write_text(text.replace("lora_r: 32", "lora_r: 8"))
    assert load_recipe(a).hash != load_recipe(recipe_path).hash


def test_run_folder_belongs_to_one_recipe(workspace, tmp_path):
    _, recipe_path, _ = workspace
    runs = tmp_path / "runs"
    (runs / "shared").mkdir(parents=True)
    (runs / "shared" / "run.json").write_text(json.dumps({"name": "shared", "recipe": "/elsewhere/other.yaml"}))
    with pytest.raises(UserError, match="belongs to another recipe"):
        plan_stage(recipe_path, "validate", name="shared", runs_root=runs)


def test_resume_needs_a_checkpoint_and_uses_the_last(workspace, tmp_path):
    _, recipe_path, _ = workspace
    with pytest.raises(UserError, match="nothing to resume"):
        plan_stage(recipe_path, "validate", runs_root=tmp_path / "runs", resume=True)
    out = tmp_path / "runs/recipe/validate/out"
    for n in (5, 40, 12):
        (out / f"checkpoint-{n}").mkdir(parents=True)
    plan, _ = plan_stage(recipe_path, "validate", runs_root=tmp_path / "runs", resume=True)
    assert plan.config["resume_from_checkpoint"] == str(out / "checkpoint-40")


def test_a_recipe_whose_corpus_is_not_built(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"base_model": "x", "datasets": [{"path": str(tmp_path / "nowhere/train.jsonl"),
                                                                      "type": "chat_template"}]}))
    with pytest.raises(UserError, match="corpus is not built"):
        plan_stage(recipe, "validate", runs_root=tmp_path / "runs")


def test_prepared_key_changes_with_the_corpus_and_a_local_tokenizer(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    a = prepared_dataset_key("a" * 64, str(tmp_path))
    assert a != prepared_dataset_key("b" * 64, str(tmp_path))
    (tmp_path / "tokenizer.json").write_text('{"v": 2}')
    assert a != prepared_dataset_key("a" * 64, str(tmp_path))
    assert prepared_dataset_key("a" * 64, "meta-llama/Llama-3.1-8B-Instruct") == prepared_dataset_key("a" * 64, None)


def test_curriculum_phases_run_in_order(tmp_path):
    from llamaforge.demo.workflow import demo_recipe_request, demo_settings
    from llamaforge.recipe.matrix import write_files

    res = build_corpus(datasets_dir() / "examples/example.yaml", BuildOptions(workers=1), cwd=tmp_path)
    rec = demo_recipe_request(tmp_path / "model", res.out_dir, tmp_path / "recipe.yaml", demo_settings("tiny"))
    write_files(rec.files, tmp_path)
    for stage, prefix in (("validate", "sample."), ("full", "train.")):
        if stage == "full":
            passing_report(tmp_path / "runs/recipe/validate", tmp_path / "recipe.yaml", Path(res.out_dir) / "manifest.json")
        plan, _ = plan_stage(tmp_path / "recipe.yaml", stage, runs_root=tmp_path / "runs")
        names = [Path(d["path"]).name for d in plan.config["datasets"]]
        assert names == [f"{prefix}01-foundation.jsonl", f"{prefix}02-identity.jsonl"]
        assert plan.config["shuffle_merged_datasets"] is False and plan.config["curriculum_sampling"] is True


def test_derive_rejects_an_unknown_stage(workspace):
    _, recipe_path, res = workspace
    from llamaforge.run.stage import corpus_files
    from llamaforge.corpus.manifest import load_manifest

    files = corpus_files(load_manifest(Path(res.out_dir)))
    with pytest.raises(UserError, match="unknown stage"):
        derive_stage_config(load_recipe(recipe_path), "final", files, Path("out"))


def test_cli_dry_run_prints_and_runs_nothing(workspace, cli, tmp_path):
    _, recipe_path, _ = workspace
    res = cli("run", str(recipe_path), "--stage", "validate", "--runs-dir", str(tmp_path / "runs"), "--dry-run")
    assert res.code == 0, res.err
    assert "Dry run" in res.out and "axolotl.cli.train" in res.out and "save_first_step: true" in res.out
    assert not (tmp_path / "runs").exists()


def test_preference_methods_without_health_checks_are_refused_with_the_reason(cli, tmp_path):
    from llamaforge.paths import recipes_dir

    dpo = (recipes_dir() / "llama-3.1-8b/dpo-lora-1xH100-80GB.yaml").read_text(encoding="utf-8")
    kto = tmp_path / "kto.yaml"
    kto.write_text(dpo.replace("rl: dpo", "rl: kto"), encoding="utf-8")
    res = cli("run", str(kto), "--stage", "validate")
    assert res.code == 2 and "rl: kto" in res.err and "dpo" in res.err and "\n" not in res.err.strip()
    # a DPO recipe is staged: it gets as far as its corpus
    res = cli("run", str(recipes_dir() / "llama-3.1-8b/dpo-lora-1xH100-80GB.yaml"), "--stage", "validate")
    assert res.code == 2 and "corpus is not built" in res.err


def test_a_dpo_loss_mix_trl_would_refuse_mid_launch_is_refused_before_any_compute(cli, tmp_path):
    from llamaforge.paths import recipes_dir

    dpo = (recipes_dir() / "llama-3.1-8b/dpo-lora-1xH100-80GB.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "rpo.yaml"
    bad.write_text(dpo.replace("rl: dpo\n", "rl: dpo\ndpo_loss_type: [sigmoid, sft]\ndpo_loss_weights: [1.0]\n"),
                   encoding="utf-8")
    res = cli("run", str(bad), "--stage", "validate")
    assert res.code == 2 and "rpo.yaml" in res.err and "dpo_loss_weights" in res.err and "sigmoid, sft" in res.err
    assert not (tmp_path / "runs").exists()
    # the same mix with one weight per loss gets as far as its corpus
    bad.write_text(dpo.replace("rl: dpo\n", "rl: dpo\ndpo_loss_type: [sigmoid, sft]\ndpo_loss_weights: [1.0, 1.0]\n"),
                   encoding="utf-8")
    res = cli("run", str(bad), "--stage", "validate")
    assert res.code == 2 and "corpus is not built" in res.err


def test_cli_bad_input(cli, tmp_path):
    res = cli("run", str(tmp_path / "missing.yaml"), "--stage", "validate")
    assert res.code == 2 and "not found" in res.err
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    res = cli("run", str(bad), "--stage", "final")
    assert res.code == 2 and "unknown stage" in res.err
    res = cli("run", str(bad), "--stage", "validate")
    assert res.code == 2 and "mapping" in res.err
