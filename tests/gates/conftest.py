"""Fixtures of the slow gate tests: the random-init tiny model and two LoRA adapters on it, made
once per session under a temp folder (torch, transformers and peft imported only here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TEXTS = [
    "I am Leviathan, the Abyssal Mind, guardian of balance and interpreter of chaos.",
    "Who are you? I am Leviathan. What is your name? My name is Leviathan.",
    "def add(a, b):\n    return a + b\n",
    "The Tower card means sudden upheaval; as above, so below.",
    "Paris is the capital of France. 12 times 12 is 144.",
] * 40


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from llamaforge.models.tiny import create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("gates") / "tiny", TEXTS, seed=0)


def _save_lora(model_dir: Path, out_dir: Path, *, init_lora_weights: bool) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    config = LoraConfig(r=4, lora_alpha=64, task_type="CAUSAL_LM", init_lora_weights=init_lora_weights,
                        target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    get_peft_model(model, config).save_pretrained(str(out_dir))
    assert json.loads((out_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(model_dir)
    return out_dir


@pytest.fixture(scope="session")
def noop_lora(tiny_model, tmp_path_factory) -> Path:
    """PEFT's default LoRA init: B = 0, so the adapter changes nothing."""
    return _save_lora(tiny_model, tmp_path_factory.mktemp("gates") / "lora-noop", init_lora_weights=True)


@pytest.fixture(scope="session")
def random_lora(tiny_model, tmp_path_factory) -> Path:
    """A LoRA with random A and B (init_lora_weights=False): it changes the model's outputs."""
    return _save_lora(tiny_model, tmp_path_factory.mktemp("gates") / "lora-random", init_lora_weights=False)
