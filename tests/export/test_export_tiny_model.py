"""Slow: real torch/peft on the catalog's tiny Llama. A random LoRA (A and B both random, so it
changes the outputs) is saved where `llamaforge run` leaves an adapter; export merges it, verifies
the merged model against base + adapter, and writes serving files that agree with the run. A
corrupted adapter (another base, rescaled weights with a config to match, a config PEFT cannot
load) is refused, and a failed verification fails the export with nothing written."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from .run_folder import PERSONA_PROMPT, make_run, record_output
from .test_export_serving import read_modelfile

pytestmark = pytest.mark.slow

TEXTS = [
    "I am Leviathan, the Abyssal Mind, guardian of balance and interpreter of chaos.",
    "Who are you? I am Leviathan. What is your name? My name is Leviathan.",
    "def add(a, b):\n    return a + b\n",
    "Paris is the capital of France. 12 times 12 is 144.",
] * 40
RANK, ALPHA = 8, 16


def save_random_lora(base: str, out: Path, *, seed: int = 1) -> None:
    """Save a LoRA on every linear layer of `base` with random A and B, plus the base's tokenizer,
    the way Axolotl leaves its output_dir."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, task_type="CAUSAL_LM", init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    get_peft_model(model, config).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(base).save_pretrained(str(out))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A launch folder with the tiny base (build/model) and a wider tiny base (build/wide)."""
    from llamaforge.planning.catalog import get_model
    from llamaforge.models.tiny import create_tiny_model

    root = tmp_path_factory.mktemp("export-tiny")
    create_tiny_model(root / "build/model", TEXTS, seed=0)
    spec = get_model("tiny")
    wide = dataclasses.replace(spec, hidden_size=96, head_dim=24, intermediate_size=192)
    create_tiny_model(root / "build/wide", TEXTS, spec=wide, seed=0)
    return root


@pytest.fixture
def trained(tiny, monkeypatch):
    """A fresh run folder whose adapter is a real PEFT LoRA on build/model."""
    monkeypatch.chdir(tiny)
    shutil.rmtree(tiny / "runs", ignore_errors=True)

    def make(**kwargs) -> Path:
        run = make_run(tiny, rank=RANK, alpha=ALPHA, write_weights=False, **kwargs)
        save_random_lora(kwargs.get("base_model", "build/model"), run / "full/out")
        record_output(run / "full")
        return run
    return make


def logits(model_or_path, prompt="Who are you?"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_or_path) if isinstance(model_or_path, str) else model_or_path
    tok = AutoTokenizer.from_pretrained("build/model")
    with torch.no_grad():
        return model(**tok(prompt, return_tensors="pt")).logits


def test_merge_is_verified_and_the_serving_files_agree_with_the_run(cli, trained, tiny):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = trained()
    res = cli("export", run, "--merge", "--ollama", "--vllm")
    assert res.code == 0, res.err
    out = run / "export"
    report = json.loads((out / "export_report.json").read_text())
    merge = report["merge"]
    assert merge["passed"] and merge["dtype"] == "float32"
    assert merge["max_abs_logit_diff"] <= merge["tolerance"] == 1e-4
    assert merge["adapter_effect"] > 100 * merge["tolerance"]          # the adapter really changes the model
    assert merge["output"] == str(out / "merged")                       # not the temporary folder
    assert json.loads((out / "merged/merge_report.json").read_text()) == merge

    # independently of the export's own check: merged == base + adapter, and != base
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("build/model"), str(out / "adapter"))
    reference.eval()
    want, got, base = logits(reference), logits(str(out / "merged")), logits("build/model")
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, base, atol=1e-2)

    stage_seq = 256
    modelfile = dict(read_modelfile((out / "Modelfile").read_text()))
    assert modelfile["FROM"] == "./merged" and "ADAPTER" not in modelfile
    assert modelfile["SYSTEM"] == PERSONA_PROMPT
    assert modelfile["PARAMETER num_ctx"] == str(stage_seq)
    script = (out / "serve_vllm.sh").read_text()
    assert 'vllm serve "$HERE/merged"' in script and f"--max-model-len {stage_seq} " in script
    assert "--enable-lora" not in script
    card = (out / "README.md").read_text()
    assert "Merge verification" in card and "**passed**" in card

    # unmerged, the same run serves the adapter with a rank vLLM accepts
    assert cli("export", run, "--vllm", "--ollama").code == 0
    script = (out / "serve_vllm.sh").read_text()
    assert f"--max-lora-rank {RANK} " in script and '--lora-modules leviathan-tiny="$HERE/adapter"' in script
    assert dict(read_modelfile((out / "Modelfile").read_text()))["ADAPTER"] == "./adapter"
    assert not (out / "merged").exists()


def test_a_bf16_run_merges_in_bf16_within_its_tolerance(cli, trained):
    """bf16 rounds the merged weights: the tolerance is relative to the logits' size (facts/export.yaml)."""
    run = trained(stage_overrides={"bf16": True})
    res = cli("export", run, "--merge", "--json")
    assert res.code == 0, res.err
    merge = res.json()["report"]["merge"]
    assert merge["dtype"] == "bfloat16" and merge["passed"]
    assert 2e-2 < merge["tolerance"] < 1.0                    # 5% of logits of a few units
    assert 1e-3 < merge["max_abs_logit_diff"] <= merge["tolerance"] < merge["adapter_effect"] / 10


def test_an_adapter_for_another_base_is_refused(cli, trained, tiny):
    """The adapter was trained on build/wide; its config is edited to claim build/model."""
    run = trained(base_model="build/wide")
    stage = run / "full/stage.yaml"
    stage.write_text(stage.read_text().replace("base_model: build/wide", "base_model: build/model"))
    cfg = run / "full/out/adapter_config.json"
    cfg.write_text(cfg.read_text().replace('"build/wide"', '"build/model"'))
    record_output(run / "full")   # as if the run had written it: the semantic check, not the hash check
    res = cli("export", run, "--merge")
    assert res.code == 2 and "do not fit the base" in res.err, res.err
    assert not (run / "export").exists()


def test_rescaled_weights_with_a_config_to_match_are_refused(cli, trained):
    """B doubled and lora_alpha halved: the same adapter in effect, but not the one the run trained."""
    from safetensors.torch import load_file, save_file

    run = trained()
    weights = run / "full/out/adapter_model.safetensors"
    tensors = {k: (v * 2 if ".lora_B." in k else v) for k, v in load_file(str(weights)).items()}
    save_file(tensors, str(weights))
    cfg_path = run / "full/out/adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["lora_alpha"] = ALPHA // 2
    cfg_path.write_text(json.dumps(cfg))
    record_output(run / "full")
    res = cli("export", run, "--merge")
    assert res.code == 2 and f"lora_alpha={ALPHA // 2}" in res.err and f"lora_alpha={ALPHA}" in res.err
    assert not (run / "export").exists()


def test_an_adapter_peft_cannot_load_is_one_line(cli, trained):
    """rank_pattern turns off the tensor-rank check; PEFT's own load then fails on the shapes."""
    run = trained(stage_overrides={"lora_r": 4})
    cfg_path = run / "full/out/adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(r=4, rank_pattern={"nothing_matches": 4})
    cfg_path.write_text(json.dumps(cfg))
    record_output(run / "full")
    res = cli("export", run, "--merge")
    assert res.code == 2, res.err
    assert "does not load onto base" in res.err and "Traceback" not in res.err
    assert not (run / "export").exists()


def test_a_failed_verification_fails_the_export_and_writes_nothing(cli, trained, monkeypatch):
    import llamaforge.export.merge as merge_module

    monkeypatch.setattr(merge_module, "verification_tolerance", lambda dtype, largest: -1.0)  # nothing is within it
    run = trained()
    res = cli("export", run, "--merge", "--ollama")
    assert res.code == 1, res.err
    assert "merge verification failed" in res.err and "nothing was written" in res.err
    assert sorted(p.name for p in run.iterdir()) == ["full", "run.json"]


def test_nf4_quantization_writes_a_4bit_model_that_loads_back(tmp_path):
    """quantize_nf4 itself, on the CPU (bitsandbytes 0.50 quantizes there too): the export command
    only calls it where CUDA is present, so this is where its code runs in CI."""
    from llamaforge.export.nf4 import quantize_nf4
    from llamaforge.models.tiny import create_tiny_model

    model = create_tiny_model(tmp_path / "model", TEXTS, seed=0)
    try:
        info = quantize_nf4(model, tmp_path / "nf4")
    except (RuntimeError, NotImplementedError, ValueError) as exc:   # a bitsandbytes without a CPU backend
        pytest.skip(f"bitsandbytes cannot quantize on this CPU: {exc}")
    cfg = json.loads((tmp_path / "nf4/config.json").read_text())["quantization_config"]
    assert cfg["bnb_4bit_quant_type"] == "nf4" and cfg["bnb_4bit_use_double_quant"] and cfg["load_in_4bit"]
    assert info["reloaded"] and info["finite_logits"]
    full = (model / "model.safetensors").stat().st_size
    assert (tmp_path / "nf4/model.safetensors").stat().st_size < full / 2


def test_json_output_stays_one_document_when_the_libraries_talk(trained, tiny):
    """A fresh process: torch/peft/deepspeed print while loading; --json stdout must still parse."""
    import os
    import subprocess
    import sys

    run = trained()
    env = dict(os.environ, HF_HUB_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1")
    proc = subprocess.run([sys.executable, "-m", "llamaforge", "export", str(run), "--merge", "--vllm", "--json"],
                          cwd=tiny, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert data["report"]["merge"]["passed"] and data["push"] is None
