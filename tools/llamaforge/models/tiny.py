"""Create the catalog's `tiny` Llama locally: a byte-level BPE tokenizer trained with `tokenizers`
on the given texts, and a randomly initialised LlamaForCausalLM with the catalog's architecture,
saved as a Hugging Face model folder. Nothing is downloaded. Used by the demo and the slow tests.

torch/transformers are imported inside the functions (heavy)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..planning.catalog import ModelSpec, get_model

# The ChatML template (as Qwen and many chat models write it). Axolotl's `chat_template: chatml`
# renders the same text, so the tokenizer's own template and the recipe agree.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|endoftext|>", "<|im_end|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path):
    """Train a byte-level BPE tokenizer on `texts` and save it (tokenizer.json and
    tokenizer_config.json with the ChatML template) into `out_dir`. Returns the HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=1 << 20,
    )
    hf_tok.chat_template = CHATML_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_tok.save_pretrained(str(out_dir))
    return hf_tok


def create_tiny_model(
    out_dir: Path,
    texts: Iterable[str],
    *,
    spec: ModelSpec | None = None,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised model of `spec` (default: the catalog's `tiny`) and a tokenizer
    trained on `texts` to `out_dir`. Returns `out_dir`. Deterministic for the same texts and seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = spec or get_model("tiny")
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(texts, spec.vocab_size, out_dir)
    if len(tokenizer) > spec.vocab_size:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, more than the model's {spec.vocab_size}")
    config = LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position,
        rope_theta=spec.rope_theta,
        tie_word_embeddings=spec.tie_embeddings,
        bos_token_id=tokenizer.convert_tokens_to_ids(BOS_TOKEN),
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        initializer_range=spec.initializer_range,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    (out_dir / "llamaforge.json").write_text(
        json.dumps({"catalog_model": spec.id, "seed": seed, "parameters": spec.parameter_count()}, indent=2) + "\n",
        encoding="utf-8",
    )
    return out_dir
