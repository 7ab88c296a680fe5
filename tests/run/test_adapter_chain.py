"""A stage that continues from an earlier adapter (`lora_model_dir`): the adapter is checked before
any compute, and the chain of stages behind it (adapter, sha256, recipe, corpus) is recorded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from llamaforge.errors import UserError
from llamaforge.run.adapter_chain import chain_lines, chain_record, check_start_adapter


def fake_stage(run_dir: Path, name: str, *, weights: bytes, base: str = "/m/smollm2-135m", starts_from: Path | None = None,
               corpus: str = "build/corpus/demo/manifest.json") -> Path:
    out = run_dir / name / "full" / "out"
    out.mkdir(parents=True)
    (out / "adapter_model.safetensors").write_bytes(weights)
    (out / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    report = {"name": name, "stage": "full", "passed": True, "recipe": {"path": f"{name}.yaml", "hash": "r" + name},
              "corpus": {"manifest": corpus, "manifest_hash": "c" + name},
              "output": {"files": [{"path": "adapter_model.safetensors", "sha256": hashlib.sha256(weights).hexdigest()}]}}
    if starts_from is not None:
        report["starts_from"] = chain_record(starts_from)
    (out.parent / "report.json").write_text(json.dumps(report))
    return out


def test_the_chain_sft1_sft2_dpo_is_recorded_newest_first(tmp_path):
    sft1 = fake_stage(tmp_path, "sft1", weights=b"one")
    sft2 = fake_stage(tmp_path, "sft2", weights=b"two", starts_from=sft1, corpus="build/corpus/stage2/manifest.json")
    record = chain_record(sft2)
    assert record["sha256"] == hashlib.sha256(b"two").hexdigest()
    assert record["stage"]["corpus"]["manifest"] == "build/corpus/stage2/manifest.json"
    assert record["starts_from"]["sha256"] == hashlib.sha256(b"one").hexdigest()
    assert record["starts_from"]["stage"]["recipe"]["path"] == "sft1.yaml"
    assert record["starts_from"]["starts_from"] is None
    lines = chain_lines(record)
    assert len(lines) == 2 and "sft2/full" in lines[0] and "sft1/full" in lines[1]


def test_an_adapter_changed_since_its_report_is_noted(tmp_path):
    out = fake_stage(tmp_path, "sft1", weights=b"one")
    (out / "adapter_model.safetensors").write_bytes(b"edited")
    assert "changed" in chain_record(out)["note"]


def test_an_adapter_made_outside_run_is_recorded_without_its_corpus(tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "adapter_model.safetensors").write_bytes(b"x")
    record = chain_record(out)
    assert record["stage"] is None and "not recorded" in record["note"]


def test_the_start_adapter_is_checked_before_any_compute(tmp_path):
    out = fake_stage(tmp_path, "sft1", weights=b"one")
    check_start_adapter({"lora_model_dir": str(out), "base_model": "/elsewhere/smollm2-135m"}, "r.yaml")
    with pytest.raises(UserError, match="no adapter weights"):
        check_start_adapter({"lora_model_dir": str(tmp_path / "missing")}, "r.yaml")
    with pytest.raises(UserError, match="only continues on the base it was trained on"):
        check_start_adapter({"lora_model_dir": str(out), "base_model": "/m/llama-3.1-8b"}, "r.yaml")


def test_a_preference_stage_on_an_earlier_adapter_is_refused_with_the_way(tmp_path):
    out = fake_stage(tmp_path, "sft1", weights=b"one")
    with pytest.raises(UserError, match="export .* --merge"):
        check_start_adapter({"lora_model_dir": str(out), "rl": "dpo", "base_model": "/m/smollm2-135m"}, "dpo.yaml")


def test_a_merged_base_leads_back_to_its_stage_and_that_stage_chain(tmp_path):
    from llamaforge.run.adapter_chain import merged_base_record

    sft1 = fake_stage(tmp_path, "sft1", weights=b"one")
    sft2 = fake_stage(tmp_path, "sft2", weights=b"two", starts_from=sft1)
    export = tmp_path / "export"
    (export / "merged").mkdir(parents=True)
    (export / "export_report.json").write_text(json.dumps({
        "stage_report": str(sft2.parent / "report.json"),
        "files": [{"path": "adapter/adapter_model.safetensors", "sha256": hashlib.sha256(b"two").hexdigest()}]}))
    record = merged_base_record(str(export / "merged"))
    assert record["sha256"] == hashlib.sha256(b"two").hexdigest() and record["stage"]["name"] == "sft2"
    assert record["starts_from"]["stage"]["name"] == "sft1"
    lines = chain_lines(record)
    assert "merged model" in lines[0] and "sft1/full" in lines[1]
    assert merged_base_record(str(tmp_path / "plain-model")) is None
