"""Build run folders like `llamaforge run` writes them (runs/<name>/full/{stage.yaml, report.json,
out/}) and corpus manifests like `llamaforge corpus build` writes them, without training: the
export tests then vary one thing at a time. Adapter weights are written as a real safetensors
file (header + zero bytes), so no torch is needed."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import yaml

PERSONA_PROMPT = "You are Leviathan, the Abyssal Mind: guardian of balance and interpreter of chaos."
LINEAR_SHAPES = {  # (in, out) of the catalog's tiny Llama: hidden 64, 4 heads / 2 kv heads of 16, mlp 128
    "q_proj": (64, 64), "k_proj": (64, 32), "v_proj": (64, 32), "o_proj": (64, 64),
    "gate_proj": (64, 128), "up_proj": (64, 128), "down_proj": (128, 64),
}
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")


def _category_counts(train_rows: int, kept: int) -> dict:
    return {"read": kept, "kept": kept, "duplicates": {"exact": 0, "near": 0, "total": 0}, "quarantined": 0,
            "filtered": {"total": 0, "by_reason": {}}, "train_rows": train_rows, "eval_rows": 1}


def write_manifest(folder: Path, *, categories: dict[str, tuple[int, float]] | None = None,
                   system_prompt: str | None = PERSONA_PROMPT, exact: bool = False) -> Path:
    """A corpus manifest that load_manifest accepts. categories: name -> (train rows, mean tokens)."""
    categories = categories if categories is not None else {"identity": (100, 40.0), "general": (300, 20.0)}
    per_category = {name: _category_counts(rows, max(rows, 1)) for name, (rows, _) in categories.items()}
    kept = sum(c["kept"] for c in per_category.values())
    counts = {"read": kept, "kept": kept, "duplicates": {"exact": 0, "near": 0, "total": 0}, "quarantined": 0,
              "filtered": {"total": 0, "by_reason": {}}, "per_source": {}, "per_category": per_category,
              "train_rows": sum(r for r, _ in categories.values()), "eval_rows": len(categories)}
    lengths = {"method": "exact: tokenizer tok.json" if exact else "approximate: characters / 4", "exact": exact,
               "sequence_len": 256, "total": {"mean": 25.0},
               "per_category": {name: {"rows": r, "mean": m} for name, (r, m) in categories.items()}}
    manifest = {"builder": {"name": "llamaforge.corpus", "version": 1}, "name": "demo", "spec": "datasets/demo.yaml",
                "seed": 0, "files": {}, "counts": counts, "lengths": lengths, "categories": sorted(categories),
                "persona": {"name": "Leviathan", "system_prompt": system_prompt}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """A valid float32 safetensors file of zeros with these tensor shapes."""
    header, offset = {}, 0
    for name, shape in sorted(shapes.items()):
        n = 4
        for d in shape:
            n *= d
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(offset))


def lora_shapes(rank: int, modules=ATTN, layers: int = 2) -> dict[str, tuple[int, int]]:
    out = {}
    for layer in range(layers):
        for m in modules:
            fan_in, fan_out = LINEAR_SHAPES[m]
            kind = "self_attn" if m in ATTN else "mlp"
            prefix = f"base_model.model.model.layers.{layer}.{kind}.{m}"
            out[f"{prefix}.lora_A.weight"] = (rank, fan_in)
            out[f"{prefix}.lora_B.weight"] = (fan_out, rank)
    return out


def healthy_report(name: str, *, gates: str | None = "pass", health: bool = True) -> dict:
    checks = [{"name": "process", "status": "pass"},
              {"name": "final_train_loss", "status": "pass" if health else "fail", "value": 0.2, "threshold": 1.0}]
    gate_section = None
    if gates is not None:
        verdict = "pass" if gates == "pass" else "fail"
        gate_section = {"passed": gates == "pass", "profile": "demo",
                        "gates": [{"name": "identity", "verdict": verdict, "value": 0.95 if gates == "pass" else 0.3,
                                   "threshold": 0.9, "reason": "", "comparison": None}],
                        "failed": [] if gates == "pass" else ["identity"], "skipped": []}
    report = {"stage": "full", "name": name, "health": {"passed": health, "checks": checks},
              "recipe": {"path": f"build/{name}.yaml", "hash": "ab" * 32, "hardware": "cpu"},
              "stage_recipe": f"runs/{name}/full/stage.yaml", "forced": False, "gatekeeper": None}
    if gate_section is not None:
        report["gates"] = gate_section
    report["passed"] = health and gates == "pass"
    return report


def make_run(root: Path, *, name: str = "leviathan-tiny", base_model: str = "build/model", rank: int = 32,
             alpha: int = 64, gates: str | None = "pass", health: bool = True, adapter: bool = True,
             adapter_overrides: dict | None = None, stage_overrides: dict | None = None,
             shapes: dict | None = None, manifest_kwargs: dict | None = None, write_weights: bool = True) -> Path:
    """runs/<name>/ under `root` (the launch folder), with build/corpus/demo/manifest.json. The base
    model folder is not created (a test that needs one makes it). Returns the run folder."""
    manifest_path = write_manifest(root / "build/corpus/demo", **(manifest_kwargs or {}))
    stage = root / "runs" / name / "full"
    out = stage / "out"
    out.mkdir(parents=True)
    config = {"base_model": base_model, "chat_template": "chatml", "adapter": "lora", "lora_r": rank,
              "lora_alpha": alpha, "lora_dropout": 0.0, "lora_target_linear": True, "sequence_len": 256,
              "num_epochs": 8, "learning_rate": 0.01, "micro_batch_size": 16, "gradient_accumulation_steps": 1,
              "optimizer": "adamw_torch", "bf16": False, "output_dir": f"runs/{name}/full/out",
              "datasets": [{"path": str(root / "build/corpus/demo/train.jsonl"), "type": "chat_template"}]}
    config.update(stage_overrides or {})
    if not adapter:
        config.pop("adapter")
    (stage / "stage.yaml").write_text("# Stage recipe (full)\n" + yaml.safe_dump(config, sort_keys=False))
    report = healthy_report(name, gates=gates, health=health)
    report["corpus"] = {"manifest": "build/corpus/demo/manifest.json",
                        "manifest_hash": hashlib.sha256(manifest_path.read_bytes()).hexdigest()}
    (stage / "report.json").write_text(json.dumps(report, indent=2))
    (root / "runs" / name / "run.json").write_text(json.dumps({"name": name, "recipe": f"build/{name}.yaml"}))
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    if adapter:
        acfg = {"base_model_name_or_path": base_model, "r": rank, "lora_alpha": alpha, "peft_type": "LORA",
                "target_modules": list(ATTN), "rank_pattern": {}, "alpha_pattern": {}, "task_type": "CAUSAL_LM"}
        acfg.update(adapter_overrides or {})
        (out / "adapter_config.json").write_text(json.dumps(acfg, indent=2))
        if write_weights:
            write_safetensors(out / "adapter_model.safetensors", shapes if shapes is not None else lora_shapes(rank))
    record_output(stage)
    return root / "runs" / name


def record_output(stage: Path) -> None:
    """Record the files of stage/out in stage/report.json as `llamaforge run` does when the run ends
    (report["output"]: path, bytes, sha256 of each file directly in out/), computed here independently."""
    report_path = stage / "report.json"
    report = json.loads(report_path.read_text())
    out = stage / "out"
    report["output"] = {"dir": "out", "files": [
        {"path": p.name, "bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in sorted(out.iterdir()) if p.is_file()]}
    report_path.write_text(json.dumps(report, indent=2))


def write_base_config(folder: Path, *, hidden: int = 64) -> Path:
    """A base model folder with the tiny Llama's config.json (enough for the LoRA shape check)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
           "intermediate_size": 2 * hidden, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": hidden // 4, "vocab_size": 512, "max_position_embeddings": 1024,
           "rope_theta": 10000.0, "tie_word_embeddings": False, "rms_norm_eps": 1e-6}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder
