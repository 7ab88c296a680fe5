"""Merge a LoRA adapter into its base model (PEFT's merge_and_unload) and prove the merge is right:
the merged model, as saved and loaded back from disk, must give the same logits on a few prompts
as base + adapter (unmerged), within a stated tolerance. The report also records how far the
adapter moves the base's logits (0 means the adapter does nothing). torch/transformers/peft are
imported inside the functions."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from ..files import write_bytes_atomic
from ..errors import UserError, exception_line
from ..libraries import quiet_optional_kernels
from ..paths import read_facts

VERIFY_PROMPTS = (
    "Who are you?",
    "Write a Python function that adds two numbers.",
    "What is the capital of France?",
)
EXPORT_FACTS = "export.yaml"   # merge.tolerance: how close merged and unmerged logits must be, and why


@lru_cache(maxsize=1)
def _tolerances() -> dict:
    data = read_facts(EXPORT_FACTS)
    return data["merge"]["tolerance"]


def verification_tolerance(dtype: str, max_abs_logit: float) -> float:
    """The largest |logit difference| a correct merge in `dtype` may show: max(absolute, relative x
    the largest |logit| of the reference), from facts/export.yaml."""
    tol = _tolerances()[dtype]
    return max(float(tol["absolute"]), float(tol["relative"]) * max_abs_logit)


@dataclass
class MergeReport:
    base: str
    adapter: str
    output: str
    dtype: str
    prompts: int
    max_abs_logit_diff: float        # merged (reloaded from output) vs base + adapter; inf if not finite
    tolerance: float
    passed: bool
    adapter_effect: float | None = None   # max |logit(base + adapter) - logit(base)|
    verified: str = "the merged model reloaded from the output folder"

    def to_dict(self) -> dict:
        """JSON-safe: a non-finite difference (NaN/inf logits) is null, with passed false."""
        d = asdict(self)
        for key in ("max_abs_logit_diff", "adapter_effect"):
            if d[key] is not None and not math.isfinite(d[key]):
                d[key] = None
        return d


def merge_dtype(stage_config: dict) -> str:
    """The dtype to merge in: the one the run trained in (Axolotl's bf16 / fp16 keys), else float32."""
    bf16, fp16 = stage_config.get("bf16"), stage_config.get("fp16")
    if bf16 is True or str(bf16).lower() in ("true", "auto"):
        return "bfloat16"
    if fp16 is True or str(fp16).lower() == "true":
        return "float16"
    return "float32"


def _max_abs_diff(a_list, b_list) -> float:
    """max |a - b| over every logit; inf when any value is not finite (a broken merge must not pass)."""
    worst = 0.0
    for a, b in zip(a_list, b_list):
        d = (a - b).abs()
        if not bool(d.isfinite().all()):
            return float("inf")
        worst = max(worst, float(d.max()))
    return worst


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
    """Write base + adapter merged into `output` (model + tokenizer + merge_report.json), load it
    back and verify its logits against base + adapter. An adapter that does not load onto `base`
    (other shapes, a corrupted file) is a UserError."""
    import gc

    quiet_optional_kernels()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, output = Path(adapter), Path(output)
    check_adapter(adapter)
    torch_dtype = getattr(torch, dtype)
    tok_src = adapter if (adapter / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(str(tok_src))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch_dtype)
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter))
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        first = exception_line(exc)
        raise UserError(f"adapter {adapter} does not load onto base {base} ({first}); "
                        "it was made for another base or is corrupted") from None
    peft_model.eval()
    batches = [_chat_inputs(tokenizer, p) for p in prompts]
    with torch.no_grad():
        reference = [peft_model(**b).logits.float() for b in batches]
        with peft_model.disable_adapter():
            base_logits = [peft_model(**b).logits.float() for b in batches]
        merged = peft_model.merge_and_unload()
        output.mkdir(parents=True, exist_ok=True)
        merged.save_pretrained(str(output), safe_serialization=True)
        tokenizer.save_pretrained(str(output))
        del merged, peft_model, model
        gc.collect()
        reloaded = AutoModelForCausalLM.from_pretrained(str(output), dtype=torch_dtype)
        reloaded.eval()
        after = [reloaded(**b).logits.float() for b in batches]
        del reloaded
    diff = _max_abs_diff(after, reference)
    effect = _max_abs_diff(reference, base_logits)
    largest = max(float(r.abs().max()) for r in reference)
    tolerance = verification_tolerance(dtype, largest if math.isfinite(largest) else 0.0)
    report = MergeReport(str(base), str(adapter), str(output), dtype, len(prompts), diff, tolerance, diff <= tolerance,
                         adapter_effect=effect)
    text = json.dumps(report.to_dict(), indent=2) + "\n"
    write_bytes_atomic(output / "merge_report.json", text.encode("utf-8"))
    return report
