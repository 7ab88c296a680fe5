"""The serving planner: the configuration of vLLM or Ollama / llama.cpp that serves a model on given
hardware at the asked context, and the flags that say so.

vLLM: formats from the most precise (bf16, fp8, int8, AWQ; or only the one asked), and within a
format the first that fits of: the LoRA slots asked (then fewer, the rest kept in CPU memory with
--max-cpu-loras), the model-dtype KV cache (then fp8 on GPUs that run it), vLLM's default
gpu_memory_utilization 0.9 (then 0.95 with --enforce-eager, so no CUDA graphs need the rest) and
max_num_seqs from vLLM's default down (fewer sequences shrink the profiling pass's sampler peak).
A configuration fits when vLLM starts (one sequence of the context fits in the KV cache, the share
outside vLLM holds the CUDA context, NCCL and graphs) and the KV cache holds `min_concurrency`
sequences.
Ollama / llama.cpp: GGUF types from the most precise (for Ollama the ones `ollama create -q` makes,
plus f16), f16 KV cache, then q8_0 and q4_0 (with flash attention).
When nothing fits, the refusal names the longest context that does and the cheapest catalog
hardware that serves the request.

Pure: plain data in and out."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Infeasible, UserError
from .catalog import AppleMachine, GpuSpec, ModelSpec, apple_machines, gpus
from .serve_estimate import ServeEstimate, ServeSetup, estimate_serving, serving_facts, validate


@dataclass
class ServePlan:
    estimate: ServeEstimate
    reasons: list[str]
    rejected: list[dict] = field(default_factory=list)
    max_cpu_loras: int | None = None     # vLLM: adapters kept in CPU memory beyond the GPU slots
    longest_context: int | None = None   # the longest --max-model-len / num_ctx this configuration holds

    @property
    def setup(self) -> ServeSetup:
        return self.estimate.setup

    def to_dict(self) -> dict:
        return {"setup": self.setup.to_dict(), "estimate": self.estimate.to_dict(), "reasons": list(self.reasons),
                "rejected": list(self.rejected), "max_cpu_loras": self.max_cpu_loras,
                "longest_context": self.longest_context}


@dataclass(frozen=True)
class ServeRequest:
    """What to serve, and what the user pinned (None: the planner chooses)."""

    model: ModelSpec
    device: GpuSpec | AppleMachine
    count: int = 1
    engine: str = "vllm"
    context: int = 4096
    weights: str | None = None
    kv_dtype: str | None = None
    max_loras: int = 0
    max_lora_rank: int = 0
    min_concurrency: int = 1
    gpu_memory_utilization: float | None = None
    max_num_seqs: int | None = None
    enforce_eager: bool | None = None
    num_parallel: int = 1
    reserve_gib: float = 0.0
    wired_limit_gib: float | None = None
    in_flight_only: bool = False         # vLLM: only formats it quantizes while loading (a fine-tune
                                         # has no pre-quantized checkpoint)

    @property
    def label(self) -> str:
        return f"{self.count}x{self.device.id}"


def _base_setup(req: ServeRequest, weights: str) -> ServeSetup:
    return ServeSetup(model=req.model, device=req.device, count=req.count, engine=req.engine, weights=weights,
                      context=req.context, num_parallel=req.num_parallel, reserve_gib=req.reserve_gib,
                      wired_limit_gib=req.wired_limit_gib, kv_dtype="auto" if req.engine == "vllm" else "f16")


def _formats(req: ServeRequest) -> list[str]:
    f = serving_facts()
    if req.weights:
        return [req.weights]
    if req.engine == "vllm":
        cc = float(req.device.compute_capability)
        formats = f["planner"]["vllm_formats"] + (["bnb_nf4"] if req.in_flight_only else [])
        return [w for w in formats
                if cc >= float(f["vllm_weight_formats"][w]["min_compute_capability"])
                and not (req.in_flight_only and f["vllm_weight_formats"][w]["checkpoint"] != "in_flight")]
    return list(f["planner"]["ollama_types" if req.engine == "ollama" else "llama_cpp_types"])


def _vllm_candidates(req: ServeRequest, weights: str):
    """Setups of one format in the planner's order of preference."""
    f = serving_facts()
    v = f["vllm"]
    base = _base_setup(req, weights)
    slots = [req.max_loras] if not req.max_loras else list(range(req.max_loras, 0, -1))
    if req.kv_dtype:
        kvs = [req.kv_dtype]
    else:
        kvs = ["auto"] + (["fp8"] if float(req.device.compute_capability) >= f["fp8_kv_min_compute_capability"] else [])
    if req.gpu_memory_utilization is not None:
        utils = [(req.gpu_memory_utilization, bool(req.enforce_eager))]
    else:
        utils = [(u, req.enforce_eager if req.enforce_eager is not None else u > v["planner_eager_above_utilization"])
                 for u in v["planner_utilization"]]
    seqs = [req.max_num_seqs] if req.max_num_seqs else [None] + [n for n in v["planner_max_num_seqs"]]
    for loras in slots:
        for kv in kvs:
            for util, eager in utils:
                for n in seqs:
                    yield base.with_(max_loras=loras, max_lora_rank=req.max_lora_rank if loras else 0, kv_dtype=kv,
                                     gpu_memory_utilization=util, enforce_eager=eager, max_num_seqs=n)


def _llama_candidates(req: ServeRequest, weights: str):
    base = _base_setup(req, weights)
    kvs = [req.kv_dtype] if req.kv_dtype else ["f16", "q8_0", "q4_0"]
    for kv in kvs:
        yield base.with_(kv_dtype=kv, flash_attention=kv != "f16")


def _fits(est: ServeEstimate, req: ServeRequest) -> bool:
    if not est.fits:
        return False
    return req.engine != "vllm" or est.concurrency >= req.min_concurrency


def _describe(s: ServeSetup) -> str:
    if s.engine == "vllm":
        return (f"{s.weights}, KV {s.kv_dtype}, utilization {s.gpu_memory_utilization:g}"
                + (" eager" if s.enforce_eager else "") + f", max_num_seqs {s.max_num_seqs or 'default'}"
                + (f", {s.max_loras} LoRA slot(s) r{s.max_lora_rank}" if s.max_loras else ""))
    return f"{s.weights}, KV {s.kv_dtype}" + (" (flash attention)" if s.flash_attention else "")


def longest_context(est: ServeEstimate) -> int:
    """The longest context this configuration holds for one sequence (multiple of 256)."""
    s = est.setup
    if s.engine == "vllm":
        return est.kv_tokens // 256 * 256
    lo, hi = 0, max(s.context, 1) * 64
    while hi - lo > 256:
        mid = (lo + hi) // 2 // 256 * 256 or 256
        if estimate_serving(s.with_(context=mid)).fits:
            lo = mid
        else:
            hi = mid
    return lo


def plan_serving(req: ServeRequest, *, suggest: bool = True) -> ServePlan:
    """The first configuration (in the order of the module docstring) that serves the request; raises
    Infeasible with the longest context that fits and the cheapest catalog hardware that would."""
    validate(_base_setup(req, req.weights or _formats(req)[0]))
    formats = _formats(req)
    if not formats:
        raise UserError(f"no weight format vLLM runs on {req.device.id} (compute capability {req.device.compute_capability})")
    rejected: list[dict] = []
    for weights in formats:
        candidates = _vllm_candidates(req, weights) if req.engine == "vllm" else _llama_candidates(req, weights)
        last = None
        for s in candidates:
            est = estimate_serving(s)
            last = est
            if _fits(est, req):
                return _chosen(req, est, rejected)
        if last is not None:
            why = "; ".join(last.problems) or (f"the KV cache holds {last.concurrency:.1f} sequences of {req.context:,} tokens, "
                                               f"fewer than the {req.min_concurrency} asked")
            rejected.append({"setup": f"{weights} (every option tried, the last: {_describe(last.setup)})", "why": why})
    raise _infeasible(req, rejected, suggest)


def _chosen(req: ServeRequest, est: ServeEstimate, rejected: list[dict]) -> ServePlan:
    f = serving_facts()
    s = est.setup
    reasons = []
    if s.engine == "vllm":
        fmt = f["vllm_weight_formats"][s.weights]
        reasons.append(f"weights {s.weights}: {fmt['describe']}" + (", as asked" if req.weights else
                       ": the most precise format that fits" + (" (more precise ones did not: see refused)" if rejected else "")))
        if fmt["checkpoint"] == "prequantized":
            repo = f.get("prequantized_checkpoints", {}).get(req.model.id, {}).get(s.weights)
            reasons.append(f"{s.weights} needs a checkpoint quantized beforehand" + (f" ({repo} for the base)" if repo else ""))
        reasons.append(f"tensor parallelism {s.count}: the weights split over {s.count} {req.device.id}"
                       if s.count > 1 else "one GPU: no tensor parallelism")
        if req.max_loras:
            reasons.append(f"{s.max_loras} LoRA slot(s) of rank {s.max_lora_rank} on the GPU"
                           + (f", the other {req.max_loras - s.max_loras} adapter(s) in CPU memory (--max-cpu-loras "
                              f"{req.max_loras}): a batch uses at most {s.max_loras} at once and swaps the rest in"
                              if s.max_loras < req.max_loras else ": every adapter can be in the same batch"))
        reasons.append(f"KV cache {s.kv_dtype}: {est.kv_tokens:,} tokens, {est.concurrency:.1f} sequences of {s.context:,} at once")
        reasons.append(f"gpu_memory_utilization {s.gpu_memory_utilization:g}"
                       + (" with --enforce-eager (no CUDA graphs to fit outside vLLM's share; decoding is slower)"
                          if s.enforce_eager else "") + f": {est.headroom_gib:.2f} GiB per GPU left outside vLLM's share")
        defaults = est.flags["max_num_seqs"] if s.max_num_seqs is None else None
        reasons.append(f"max_num_seqs {est.flags['max_num_seqs']}"
                       + (": vLLM's default" if defaults else ": fewer sequences in flight shrink the profiling pass's "
                          "sampler peak, leaving memory to the KV cache"))
    else:
        reasons.append(f"GGUF {s.weights}" + (", as asked" if req.weights else ": the most precise type that fits"
                       + (" (more precise ones did not: see refused)" if rejected else "")))
        if s.engine == "ollama" and s.weights not in f["ollama"]["create_quantizations"] and s.weights != "f16":
            reasons.append(f"`ollama create -q` cannot make {s.weights}: quantize with llama.cpp's llama-quantize and import the GGUF")
        reasons.append(f"KV cache {s.kv_dtype} for {s.context * s.num_parallel:,} tokens"
                       + (" (needs OLLAMA_FLASH_ATTENTION=1 and OLLAMA_KV_CACHE_TYPE)" if s.engine == "ollama" and s.flash_attention
                          else " (llama.cpp -fa -ctk/-ctv)" if s.flash_attention else ""))
        reasons.append(f"all {s.model.num_layers} layers on the GPU: {sum(est.breakdown.values()):.2f} of {est.budget_gib:.2f} GiB")
    reasons.append(f"one sequence decodes at ~{est.decode_tokens_per_s:,.0f} tokens/s (memory-bandwidth bound)")
    return ServePlan(estimate=est, reasons=reasons, rejected=rejected,
                     max_cpu_loras=req.max_loras if s.engine == "vllm" and 0 < s.max_loras < req.max_loras else None,
                     longest_context=longest_context(est))


def _infeasible(req: ServeRequest, rejected: list[dict], suggest: bool) -> Infeasible:
    reason = (f"{req.model.id} cannot be served by {req.engine} on {req.label} at {req.context:,} tokens"
              + (f" with {req.max_loras} LoRA adapter(s) of rank <= {req.max_lora_rank}" if req.max_loras else "")
              + (f" in {req.weights}" if req.weights else ""))
    if rejected:
        reason += f": {rejected[-1]['setup'].split(' (')[0]} {rejected[-1]['why']}"
    details: dict = {"rejected": rejected}
    suggestion = None
    if suggest:
        shorter = _longest_fitting_context(req)
        if shorter:
            details["longest_context"] = shorter
            reason += f"; on {req.label} it serves {shorter:,} tokens"
        hw = smallest_serving_hardware(req)
        if hw:
            suggestion = hw
            reason += f"; the cheapest catalog hardware that serves it: {hw}"
    return Infeasible(reason, suggestion=suggestion, details=details)


def _longest_fitting_context(req: ServeRequest) -> int | None:
    c = req.context // 2
    while c >= 512:
        try:
            plan_serving(_with(req, context=c), suggest=False)
            return c
        except Infeasible:
            c //= 2
    return None


def _with(req: ServeRequest, **changes) -> ServeRequest:
    from dataclasses import replace

    return replace(req, **changes)


def smallest_serving_hardware(req: ServeRequest) -> str | None:
    """The catalog hardware with the lowest $/hour (then fewest GPUs) that serves the request; for
    Ollama/llama.cpp a Mac is tried after the GPUs (it has no rental price)."""
    sizes = serving_facts()["vllm"]["tensor_parallel_sizes"]
    options = []
    for g in gpus().values():
        for n in sizes:
            options.append((g.usd_per_hour * n, n, g))
    for _, n, g in sorted(options, key=lambda o: (o[0], o[1])):
        if req.engine == "vllm" and req.model.num_heads % n:
            continue
        try:
            plan_serving(_with(req, device=g, count=n, reserve_gib=0.0), suggest=False)
            return f"{n}x{g.id}"
        except UserError:
            continue
    if req.engine != "vllm":
        for mac in sorted(apple_machines().values(), key=lambda m: m.memory_gib):
            try:
                plan_serving(_with(req, device=mac, count=1, reserve_gib=0.0), suggest=False)
                return f"1x{mac.id}"
            except UserError:
                continue
    return None




# ---- what the serving files write ------------------------------------------------------------------


def vllm_arguments(plan: ServePlan) -> list[tuple[str, str | None]]:
    """The plan's `vllm serve` flags, in the order the serve scripts write them: (flag, value or None
    for a switch). Values are the plan's numbers and vLLM's own names; scripts still shell-quote them."""
    s, fl = plan.setup, plan.estimate.flags
    fmt = serving_facts()["vllm_weight_formats"][s.weights]
    args: list[tuple[str, str | None]] = [
        ("--dtype", fmt["dtype"]),
        ("--max-model-len", str(fl["max_model_len"])),
        ("--gpu-memory-utilization", f"{fl['gpu_memory_utilization']:g}"),
        ("--tensor-parallel-size", str(fl["tensor_parallel_size"])),
    ]
    if fl["quantization"]:
        args.append(("--quantization", fl["quantization"]))
    args.append(("--kv-cache-dtype", fl["kv_cache_dtype"]))
    args.append(("--max-num-seqs", str(fl["max_num_seqs"])))
    if fl["enforce_eager"]:
        args.append(("--enforce-eager", None))
    if fl["max_loras"]:
        args += [("--enable-lora", None), ("--max-loras", str(fl["max_loras"])), ("--max-lora-rank", str(fl["max_lora_rank"]))]
        if plan.max_cpu_loras:
            args.append(("--max-cpu-loras", str(plan.max_cpu_loras)))
    return args


def served_checkpoint(plan: ServePlan, default: str) -> str:
    """What vLLM loads: `default` (the bf16 checkpoint) for formats it quantizes while loading, the
    public pre-quantized checkpoint of the base for the others; UserError when none is known."""
    f = serving_facts()
    s = plan.setup
    if f["vllm_weight_formats"][s.weights]["checkpoint"] == "in_flight":
        return default
    repo = f.get("prequantized_checkpoints", {}).get(s.model.id, {}).get(s.weights)
    if not repo:
        raise UserError(f"the plan serves {s.model.id} in {s.weights}, which needs a checkpoint quantized beforehand, and "
                        f"facts/serving.yaml knows none for it: pin an in-flight format (bf16, fp8, bnb_nf4) or add one "
                        f"under prequantized_checkpoints")
    return repo


def plan_summary(plan: ServePlan) -> list[str]:
    """The plan's figures as short lines for a generated file's header."""
    s, est = plan.setup, plan.estimate
    lines = [f"{s.model.id} served by {s.engine} on {s.label}: "
             + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in est.breakdown.items())
             + f" GiB {'per GPU' if not s.is_mac else ''} of {est.budget_gib:.2f}".replace("  ", " ")]
    if s.engine == "vllm":
        lines.append(f"KV cache {est.kv_tokens:,} tokens: {est.concurrency:.1f} sequences of {s.context:,} at once; "
                     f"one sequence decodes at ~{est.decode_tokens_per_s:,.0f} tokens/s")
    else:
        lines.append(f"num_ctx {s.context:,} x {s.num_parallel} sequence(s), KV cache {s.kv_dtype}; "
                     f"one sequence decodes at ~{est.decode_tokens_per_s:,.0f} tokens/s")
    return lines


__all__ = ["ServePlan", "ServeRequest", "plan_serving", "smallest_serving_hardware", "longest_context",
           "vllm_arguments", "served_checkpoint", "plan_summary"]
