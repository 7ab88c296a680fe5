"""Merge a LoRA adapter into its base model (PEFT's merge_and_unload) and prove the merge is right:
the merged model's logits on a few prompts must match base + adapter (unmerged) within a stated
tolerance. torch/transformers/peft are imported inside the functions."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import UserError

VERIFY_PROMPTS = (
    "Who are you?",
    "Write a Python function that adds two numbers.",
    "What is the capital of France?",
)
# Merging adds B@A into W: in fp32 the two paths differ only by summation order (~1e-6 relative);
# bf16 weights round the merged sum to 8 bits of mantissa, so allow ~2e-2 absolute on logits there.
TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2, "float16": 1e-2}


@dataclass
class MergeReport:
    base: str
    adapter: str
    output: str
    dtype: str
    prompts: int
    max_abs_logit_diff: float
    tolerance: float
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def adapter_base_name(adapter_dir: Path) -> str | None:
    cfg = Path(adapter_dir) / "adapter_config.json"
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError):
        return None


def check_adapter(adapter_dir: Path) -> None:
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise UserError(f"{adapter_dir} holds no LoRA adapter (adapter_config.json missing)")
    if not any((adapter_dir / n).is_file() for n in ("adapter_model.safetensors", "adapter_model.bin")):
        raise UserError(f"{adapter_dir}: adapter_config.json without adapter weights (adapter_model.safetensors)")


def _chat_inputs(tokenizer, prompt: str):
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             return_tensors="pt", return_dict=True)
    return tokenizer(prompt, return_tensors="pt")


def merge_adapter(base: str | Path, adapter: str | Path, output: str | Path, *, dtype: str = "float32",
                  prompts: tuple[str, ...] = VERIFY_PROMPTS) -> MergeReport:
    """Write base + adapter merged into `output` (model + tokenizer) and verify the logits."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, output = Path(adapter), Path(output)
    check_adapter(adapter)
    torch_dtype = getattr(torch, dtype)
    tok_src = adapter if (adapter / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(str(tok_src))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch_dtype)
    peft_model = PeftModel.from_pretrained(model, str(adapter))
    peft_model.eval()
    batches = [_chat_inputs(tokenizer, p) for p in prompts]
    with torch.no_grad():
        reference = [peft_model(**b).logits.float() for b in batches]
        merged = peft_model.merge_and_unload()
        merged.eval()
        after = [merged(**b).logits.float() for b in batches]
    diff = max(float((a - r).abs().max()) for a, r in zip(after, reference))
    tolerance = TOLERANCE.get(dtype, 1e-2)
    output.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(output), safe_serialization=True)
    tokenizer.save_pretrained(str(output))
    report = MergeReport(str(base), str(adapter), str(output), dtype, len(prompts), diff, tolerance, diff <= tolerance)
    (output / "merge_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report
