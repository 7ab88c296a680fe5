"""4-bit NF4 export of a merged model through bitsandbytes: load it with a BitsAndBytesConfig
(NF4, double quantization, bf16 compute), save the quantized weights, load them back and run a
forward pass. `llamaforge export --quantize nf4` runs it only where a CUDA GPU is present (the
brief's rule: NF4 models are made where they are served); without one, `nf4_unavailable_reason`
says so and the export refuses before writing anything. The function itself also runs on a CPU
with bitsandbytes 0.50 (the slow test does that on the tiny model). torch/transformers are
imported inside."""

from __future__ import annotations

from pathlib import Path

NO_CUDA = ("--quantize nf4 needs a CUDA GPU and this machine has none (torch.cuda.is_available() is false): "
           "LlamaForge makes NF4 exports with bitsandbytes on the GPU machine that serves them; run the export "
           "there, serve the merged model, or let Ollama quantize it (`ollama create -q q4_K_M`)")


def nf4_unavailable_reason() -> str | None:
    """Why NF4 cannot be made here (no CUDA, no bitsandbytes), or None."""
    try:
        import torch
    except ImportError:
        return "--quantize nf4 needs torch and bitsandbytes (the training stack): run scripts/setup.sh"
    if not torch.cuda.is_available():
        return NO_CUDA
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "--quantize nf4 needs bitsandbytes: pip install bitsandbytes"
    return None


def quantize_nf4(model_dir: Path, output: Path, *, prompt: str = "Who are you?") -> dict:
    """Write `model_dir` quantized to NF4 into `output` (model + tokenizer); return what was done."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), quantization_config=config, device_map="auto",
                                                 dtype=torch.bfloat16)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output), safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(output))
    del model
    reloaded = AutoModelForCausalLM.from_pretrained(str(output), device_map="auto")
    batch = tokenizer(prompt, return_tensors="pt").to(reloaded.device)
    with torch.no_grad():
        logits = reloaded(**batch).logits
    finite = bool(torch.isfinite(logits).all())
    if not finite:
        raise RuntimeError(f"the NF4 model in {output} gives non-finite logits after reloading")
    return {"quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16", "reloaded": True,
            "finite_logits": finite, "bytes": sum(p.stat().st_size for p in output.rglob("*") if p.is_file())}
