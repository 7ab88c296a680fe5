"""`llamaforge export` refuses, on one line with exit 2 and before writing anything, every run
folder it must not export: no full stage, no adapter, failed or missing verdicts (unless --force,
which the card and the report record), an adapter for another base or with another config, a
repo id that is not owner/name, NF4 without CUDA."""

from __future__ import annotations

import json
import shutil

import pytest

from llamaforge.export.source import adapter_problems, parse_repo_id, verdict_problems
from llamaforge.errors import UserError

from .run_folder import healthy_report, lora_shapes, make_run, write_base_config, write_safetensors


def refused(res, *words):
    assert res.code == 2, (res.code, res.out, res.err)
    assert "Traceback" not in res.err
    lines = [line for line in res.err.strip().splitlines() if line.strip()]
    text = " ".join(lines)
    assert text.startswith("error:"), res.err
    for w in words:
        assert w in text, (w, text)
    return text


def nothing_exported(run):
    assert not (run / "export").exists()
    assert not any(p.name.startswith(".export") for p in run.iterdir())


def test_a_healthy_gated_run_exports(cli, run):
    res = cli("export", run)
    assert res.code == 0, res.err
    report = json.loads((run / "export/export_report.json").read_text())
    assert report["verdict"] == {"passed": True, "problems": [], "forced": False}
    assert (run / "export/adapter/adapter_model.safetensors").is_file()
    assert (run / "export/README.md").is_file()


def test_a_folder_without_a_full_stage_is_refused(cli, launch):
    run = make_run(launch)
    shutil.rmtree(run / "full")
    (run / "validate").mkdir()
    refused(cli("export", run), "no full stage")
    refused(cli("export", launch / "runs/nope"), "not found")
    refused(cli("export", launch / "runs"), "not a run folder")


def test_a_run_without_an_adapter_is_refused(cli, launch):
    run = make_run(launch)
    (run / "full/out/adapter_config.json").unlink()
    refused(cli("export", run), "holds no adapter")
    nothing_exported(run)
    run2 = make_run(launch, name="noweights", write_weights=False)
    refused(cli("export", run2), "no adapter weights")
    run3 = make_run(launch, name="garbled")
    (run3 / "full/out/adapter_config.json").write_text("{not json")
    refused(cli("export", run3), "not readable JSON", "damaged")


@pytest.mark.parametrize("gates, health, words", [
    ("fail", True, ["the gates did not pass", "identity"]),
    (None, True, ["no gate verdict"]),
    (None, False, ["health checks did not pass", "final_train_loss"]),
])
def test_a_failed_or_missing_verdict_is_refused_without_force(cli, launch, gates, health, words):
    run = make_run(launch, gates=gates, health=health)
    text = refused(cli("export", run), "export refused", "--force", *words)
    assert len(text) < 600
    nothing_exported(run)


def test_force_exports_a_failed_gate_and_records_it_in_the_card_and_report(cli, launch):
    run = make_run(launch, gates="fail")
    res = cli("export", run, "--force")
    assert res.code == 0, res.err
    assert "forced past" in res.out
    card = (run / "export/README.md").read_text()
    assert "Exported with `--force`" in card and "the gates did not pass (failed: identity)" in card
    report = json.loads((run / "export/export_report.json").read_text())
    assert report["verdict"]["forced"] is True and report["verdict"]["passed"] is False
    assert "identity" in report["verdict"]["problems"][0]


def test_a_healthy_export_card_says_nothing_about_force(cli, run):
    assert cli("export", run).code == 0
    assert "--force" not in (run / "export/README.md").read_text()


def test_an_adapter_trained_on_another_base_is_refused(cli, launch):
    run = make_run(launch, adapter_overrides={"base_model_name_or_path": "meta-llama/Llama-3.1-8B-Instruct"})
    refused(cli("export", run), "trained on 'meta-llama/Llama-3.1-8B-Instruct'", "base_model 'build/model'")
    nothing_exported(run)


def test_an_adapter_whose_shapes_do_not_fit_the_base_is_refused(cli, launch):
    """The config names the right base, but the tensors were made for a wider model."""
    write_base_config(launch / "build/model")          # hidden 64
    shapes = {k: (v[0], v[1] * 3 // 2) if ".lora_A." in k else (v[0] * 3 // 2, v[1]) for k, v in lora_shapes(32).items()}
    run = make_run(launch, shapes=shapes)
    refused(cli("export", run), "do not fit the base")


def test_an_adapter_config_that_disagrees_with_its_weights_or_the_run_is_refused(cli, launch):
    run = make_run(launch, adapter_overrides={"r": 16})                  # tensors are rank 32
    text = refused(cli("export", run), "rank 32", "r=16")
    assert "lora_r=32" in text                                            # and the run trained r=32
    run2 = make_run(launch, name="alpha", adapter_overrides={"lora_alpha": 32})
    refused(cli("export", run2), "lora_alpha=32", "lora_alpha=64")


def test_a_corpus_that_changed_since_the_run_is_refused_without_force(cli, run, launch):
    manifest = launch / "build/corpus/demo/manifest.json"
    manifest.write_text(manifest.read_text().replace("Leviathan", "Kraken"))
    refused(cli("export", run), "changed since the run")
    assert cli("export", run, "--force").code == 0


@pytest.mark.parametrize("repo", ["leviathan", "a/b/c", "-owner/name", "owner/na--me", "owner/name.", "own er/x", "/x"])
def test_a_repo_id_that_is_not_owner_name_is_refused(cli, run, repo):
    refused(cli("export", run, "--push", repo), "not a Hugging Face repo id", "owner/name")
    nothing_exported(run)


def test_repo_ids_the_hub_accepts_pass():
    for repo in ("your-username/leviathan-8b-v1", "Org_1/model.v2", "a/b"):
        assert parse_repo_id(repo) == repo


def test_nf4_without_cuda_is_refused_with_the_reason_and_nothing_is_written(cli, run):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the refusal cannot be seen here")
    text = refused(cli("export", run, "--merge", "--quantize", "nf4"), "needs a CUDA GPU", "bitsandbytes")
    assert "torch.cuda.is_available() is false" in text
    nothing_exported(run)


def test_nf4_needs_merge_and_only_nf4_is_known(cli, run):
    refused(cli("export", run, "--quantize", "nf4"), "add --merge")
    refused(cli("export", run, "--merge", "--quantize", "int3"), "use nf4")
    nothing_exported(run)


def test_an_output_folder_that_is_not_an_export_is_not_overwritten(cli, run, launch):
    other = launch / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    refused(cli("export", run, "--output", other), "not an export folder")
    assert (other / "notes.txt").read_text() == "keep me"


def test_a_second_export_replaces_the_first_whole(cli, run):
    assert cli("export", run, "--ollama").code == 0
    assert (run / "export/Modelfile").is_file()
    assert cli("export", run, "--vllm").code == 0
    assert not (run / "export/Modelfile").exists()           # nothing stale survives
    assert (run / "export/serve_vllm.sh").is_file()
    assert sorted(p.name for p in run.iterdir()) == ["export", "full", "run.json"]


# ---- the pure judgements ----------------------------------------------------------------------


def test_verdict_problems_name_what_failed():
    assert verdict_problems(healthy_report("x")) == []
    assert "failed: identity" in verdict_problems(healthy_report("x", gates="fail"))[0]
    report = healthy_report("x", gates=None)
    assert "no gate verdict" in verdict_problems(report)[0]
    skipped = healthy_report("x", gates=None, health=False)
    skipped["gates"] = {"passed": False, "skipped": "the run's health checks failed; gates were not run"}
    problems = verdict_problems(skipped)
    assert "final_train_loss" in problems[0] and "gates were not run" in problems[1]


def test_adapter_problems_accepts_the_run_own_adapter_and_names_each_mismatch():
    stage = {"base_model": "b", "lora_r": 8, "lora_alpha": 16}
    good = {"base_model_name_or_path": "b", "r": 8, "lora_alpha": 16, "rank_pattern": {}}
    assert adapter_problems(good, stage, same_base=True, shapes=lora_shapes(8), shape_mismatch=None) == []
    problems = adapter_problems({**good, "r": 4}, stage, same_base=False, shapes=lora_shapes(8), shape_mismatch="x")
    assert len(problems) == 4            # base name, shapes vs base, r vs the run, tensor rank vs r
    assert adapter_problems(good, stage, same_base=None, shapes=None, shape_mismatch=None) == [
        "adapter_config.json names no base model (base_model_name_or_path)"]
    with pytest.raises(UserError):
        parse_repo_id("nope")


def test_merging_a_405b_base_warns_first_and_an_unavailable_base_is_refused(cli, launch, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = "meta-llama/Llama-3.1-405B-Instruct"
    run = make_run(launch, base_model=base)
    res = cli("export", run, "--merge")
    assert res.code == 2
    warning, error = res.err.index("warning:"), res.err.index("error:")
    assert warning < error                                          # told before being refused
    assert "406B parameters" in res.err and "serving the adapter on its base" in res.err
    assert "not a folder here" in res.err and f"hf download {base}" in res.err
    nothing_exported(run)
    assert cli("export", run).code == 0                             # unmerged, the adapter exports
