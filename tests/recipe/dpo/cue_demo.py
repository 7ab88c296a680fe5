"""The demo-size preference stage on the real CPU model (SmolLM2-135M-Instruct): the cue pairs of
datasets/demo_cue.yaml, a DPO recipe `llamaforge run` stages, and SFT recipes that chain through
`lora_model_dir`. Shared by the slow tests of tests/recipe/dpo/."""

from __future__ import annotations

from pathlib import Path

import yaml

CPU_SETTINGS = {
    "sequence_len": 256, "sample_packing": False, "pad_to_sequence_len": False,
    "gradient_accumulation_steps": 1, "optimizer": "adamw_torch", "lr_scheduler": "cosine",
    "warmup_ratio": 0.1, "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": 0,
    "bf16": False, "tf32": False, "gradient_checkpointing": False, "attn_implementation": "sdpa",
    # Axolotl auto-enables Triton LoRA kernels, which need CUDA
    "lora_mlp_kernel": False, "lora_qkv_kernel": False, "lora_o_kernel": False,
    "dataloader_drop_last": True, "saves_per_epoch": 1, "save_total_limit": 1, "save_safetensors": True,
    "dataset_prepared_path": "build/prepared",
}
TOP_LAYERS = list(range(20, 30))   # SmolLM2-135M has 30 layers: LoRA on the top 10, backward stops there


def _headers(gates: str, evals: int, health: str | None) -> str:
    lines = ["# llamaforge-model: smollm2-135m", "# llamaforge-hardware: 1xcpu", "# llamaforge-method: lora",
             f"# llamaforge-gates: {gates}", f"# llamaforge-validate-gates: {gates}",
             f"# llamaforge-validate-evals: {evals}"]
    if health:
        lines.append(f"# llamaforge-health: {health}")
    return "\n".join(lines) + "\n"


def write_dpo_recipe(path: Path, model: Path, corpus: Path, *, output_dir: str, lora_model_dir: Path | None = None,
                     epochs: int = 2, learning_rate: float = 3e-3, gates: str = "cue", nll: bool = True) -> Path:
    """The demo's DPO stage. `nll`: DPO plus the chosen answers' NLL (RPO, `dpo_loss_type: [sigmoid,
    sft]`), LoRA on every layer: what moved the cue gate on this model (docs/preference.md); without
    it, plain DPO on the top 10 layers, which learned the pairs but not the register."""
    pair = {"type": "chat_template.default", "field_messages": "prompt", "field_chosen": "chosen",
            "field_rejected": "rejected"}
    config = {
        "base_model": str(model), "chat_template": "chatml",
        "rl": "dpo", "rl_beta": 0.1,
        **({"dpo_loss_type": ["sigmoid", "sft"], "dpo_loss_weights": [1.0, 1.0]} if nll else {}),
        "adapter": "lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "lora_target_linear": True,
        **({} if nll else {"peft_layers_to_transform": TOP_LAYERS}),
        **({"lora_model_dir": str(lora_model_dir)} if lora_model_dir else {}),
        "datasets": [{"path": str(corpus / "train.jsonl"), **pair}],
        "test_datasets": [{"path": str(corpus / "eval.jsonl"), **pair}],
        **CPU_SETTINGS,
        "micro_batch_size": 4, "num_epochs": epochs, "learning_rate": learning_rate,
        "output_dir": output_dir, "logging_steps": 1, "evals_per_epoch": 1,
    }
    path.write_text(_headers(gates, 2, None) + yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                    encoding="utf-8")
    return path


def write_sft_recipe(path: Path, model: Path, corpus: Path, *, output_dir: str, lora_model_dir: Path | None = None,
                     epochs: int = 1) -> Path:
    """A short LoRA SFT stage on the demo corpus (seed 000's stage 1 and 2, demo size)."""
    turn = {"type": "chat_template", "field_messages": "messages",
            "message_property_mappings": {"role": "role", "content": "content"},
            "roles_to_train": ["assistant"], "train_on_eos": "turn"}
    config = {
        "base_model": str(model), "chat_template": "chatml",
        "adapter": "lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "lora_target_linear": True,
        "peft_layers_to_transform": TOP_LAYERS,
        **({"lora_model_dir": str(lora_model_dir)} if lora_model_dir else {}),
        "datasets": [{"path": str(corpus / "train.jsonl"), **turn}],
        "test_datasets": [{"path": str(corpus / "eval.jsonl"), **turn}],
        **CPU_SETTINGS,
        "micro_batch_size": 8, "num_epochs": epochs, "learning_rate": 1e-3,
        "output_dir": output_dir, "logging_steps": 2, "evals_per_epoch": 1,
    }
    health = "plateau_steps=16, plateau_edge_fraction=0.5, spike_factor=2.0"
    path.write_text(_headers("identity", 2, health) + yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                    encoding="utf-8")
    return path
