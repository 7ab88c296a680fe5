"""Seed 000's chain through `llamaforge run`'s own planner and reports, training replaced by
tests/run/fake_chain_trainer.py: SFT stage 1 -> SFT stage 2 continuing its adapter
(`lora_model_dir`) -> a DPO stage on the merged stage-2 model. The last report holds the chain:
each adapter, its sha256, each stage's recipe and corpus. (The real-model DPO stage is
tests/recipe/dpo/test_dpo_staged.py; merging is `llamaforge export --merge`'s, stood in here by its record.)"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

import llamaforge.run.runner as runner
from llamaforge.corpus.build import BuildOptions, build_corpus
from llamaforge.errors import UserError
from llamaforge.paths import datasets_dir

FAKE = Path(__file__).with_name("fake_chain_trainer.py")


def _recipe(path: Path, corpus: Path, base: str, *, rl: bool = False, start: Path | None = None) -> Path:
    if rl:
        ds = {"path": str(corpus / "train.jsonl"), "type": "chat_template.default", "field_messages": "prompt",
              "field_chosen": "chosen", "field_rejected": "rejected"}
    else:
        ds = {"path": str(corpus / "train.jsonl"), "type": "chat_template", "field_messages": "messages"}
    config = {"base_model": base, "adapter": "lora", **({"rl": "dpo", "rl_beta": 0.1} if rl else {}),
              **({"lora_model_dir": str(start)} if start else {}), "datasets": [ds], "micro_batch_size": 1,
              "num_epochs": 1, "output_dir": "out"}
    path.write_text("# llamaforge-hardware: 1xcpu\n" + yaml.safe_dump(config), encoding="utf-8")
    return path


def _stage(recipe: Path, root: Path) -> dict:
    res = runner.run_stage(recipe, "full", runs_root=root / "runs", force=True, gates=False,
                           console=Console(file=io.StringIO()), live=False)
    return res.report


@pytest.fixture()
def fake_training(monkeypatch):
    monkeypatch.setattr(runner, "launch_command",
                        lambda recipe, stage_recipe, hw: ([sys.executable, str(FAKE), str(stage_recipe)], "accelerate", {}))


def test_sft1_sft2_dpo_chain_is_recorded_end_to_end(tmp_path, monkeypatch, fake_training):
    monkeypatch.chdir(tmp_path)
    sft_corpus = build_corpus(datasets_dir() / "demo.yaml", BuildOptions(workers=1)).out_dir
    pairs = build_corpus(datasets_dir() / "demo_cue.yaml", BuildOptions(workers=1)).out_dir
    base = str(tmp_path / "smollm2-135m")

    s1 = _stage(_recipe(tmp_path / "sft1.yaml", sft_corpus, base), tmp_path)
    out1 = tmp_path / "runs/sft1/full/out"
    s2 = _stage(_recipe(tmp_path / "sft2.yaml", sft_corpus, base, start=out1), tmp_path)
    out2 = tmp_path / "runs/sft2/full/out"
    sha1 = hashlib.sha256((out1 / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert s1.get("starts_from") is None
    assert s2["starts_from"]["sha256"] == sha1 and s2["starts_from"]["stage"]["name"] == "sft1"

    # DPO may not continue the adapter itself (Axolotl 0.19 would start a fresh one): refused before compute
    with pytest.raises(UserError, match="--merge"):
        _stage(_recipe(tmp_path / "dpo-bad.yaml", pairs, base, rl=True, start=out2), tmp_path)

    # the merged stage-2 model, as `llamaforge export runs/sft2 --merge` leaves it (its record only)
    export = tmp_path / "runs/sft2/export"
    (export / "merged").mkdir(parents=True)
    sha2 = hashlib.sha256((out2 / "adapter_model.safetensors").read_bytes()).hexdigest()
    (export / "export_report.json").write_text(json.dumps({
        "stage_report": str(tmp_path / "runs/sft2/full/report.json"),
        "files": [{"path": "adapter/adapter_model.safetensors", "sha256": sha2}]}))
    dpo = _stage(_recipe(tmp_path / "dpo.yaml", pairs, str(export / "merged"), rl=True), tmp_path)

    chain = dpo["starts_from"]
    assert dpo["preference"]["method"] == "dpo"
    assert chain["merged_model"] == str(export / "merged") and chain["sha256"] == sha2
    assert chain["stage"]["name"] == "sft2" and chain["stage"]["corpus"]["manifest"].endswith("demo/manifest.json")
    assert chain["starts_from"]["sha256"] == sha1 and chain["starts_from"]["stage"]["recipe"]["path"].endswith("sft1.yaml")
    md = (tmp_path / "runs/dpo/full/report.md").read_text()
    assert "## Starts from" in md and "sft2/full" in md and "sft1/full" in md
    # the DPO stage is judged by the preference checks, which had one logged step: not measured
    checks = {c["name"]: c["status"] for c in dpo["health"]["checks"]}
    assert checks["margins_positive"] == "not_measured" and "loss_falls" not in checks
