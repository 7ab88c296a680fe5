"""Serving memory of one `ServeSetup`: what a model needs on each GPU (or on a Mac's unified memory)
to be served by vLLM or by Ollama / llama.cpp, how much KV cache is left, how many sequences of the
asked context run at once, and how fast one sequence decodes.

vLLM (V1 engine) at start-up takes `gpu_memory_utilization` x the GPU's memory, loads the weights
(and the LoRA slots), runs one profiling forward pass, and turns everything left into KV-cache
blocks; it refuses to start when one sequence of `--max-model-len` does not fit in them. The CUDA
context, NCCL buffers and the CUDA graphs captured afterwards live in the share it does not take.
Ollama / llama.cpp allocate the weights (less the token embedding, kept in host memory), the KV
cache of `num_ctx` x `num_parallel` tokens and a compute buffer; Ollama offloads only the layers that
fit in free memory less its reserve, and the rest run on the CPU.

Every constant is in facts/serving.yaml (and facts/apple_silicon.yaml for Macs); docs/serving.md
explains each term; tests/calibration/serving_cases.yaml compares the estimate with published
start-up logs. Pure: no I/O beyond reading the packaged YAML facts once; no torch."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

from ..errors import UserError
from ..paths import read_facts
from .catalog import AppleMachine, GpuSpec, ModelSpec

GIB = float(2**30)
ENGINES = ("vllm", "ollama", "llama.cpp")
COLUMN_PARALLEL = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")


@lru_cache(maxsize=1)
def serving_facts() -> dict:
    return read_facts("serving.yaml")


@dataclass(frozen=True)
class ServeSetup:
    """One way of serving a model: engine, weight format, devices and the engine's flags."""

    model: ModelSpec
    device: GpuSpec | AppleMachine
    count: int = 1                       # GPUs: vLLM's tensor parallelism, llama.cpp's layer split
    engine: str = "vllm"
    weights: str = "bf16"                # a vLLM format (facts vllm_weight_formats) or a GGUF type
    context: int = 4096                  # --max-model-len / num_ctx: tokens of one sequence
    kv_dtype: str = "auto"               # vLLM: auto | fp8; llama.cpp / Ollama: f16 | q8_0 | q4_0
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int | None = None      # None: vLLM's default for the GPU
    max_num_batched_tokens: int | None = None
    max_loras: int = 0                   # 0: no --enable-lora
    max_lora_rank: int = 0
    enforce_eager: bool = False
    num_parallel: int = 1                # Ollama's OLLAMA_NUM_PARALLEL / llama-server's --parallel
    flash_attention: bool = False        # Ollama / llama.cpp (needed for a quantized KV cache)
    reserve_gib: float = 0.0             # memory other processes (a desktop session) hold on each GPU
    wired_limit_gib: float | None = None  # a Mac's raised iogpu.wired_limit_mb, in GiB

    def __post_init__(self) -> None:
        if self.engine != "vllm" and self.kv_dtype == "auto":
            object.__setattr__(self, "kv_dtype", "f16")       # llama.cpp's default KV cache

    @property
    def is_mac(self) -> bool:
        return isinstance(self.device, AppleMachine)

    @property
    def label(self) -> str:
        return f"{self.count}x{self.device.id}"

    def with_(self, **changes) -> ServeSetup:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {
            "model": self.model.id, "hardware": self.label, "engine": self.engine, "weights": self.weights,
            "context": self.context, "kv_dtype": self.kv_dtype, "count": self.count,
            "gpu_memory_utilization": self.gpu_memory_utilization, "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens, "max_loras": self.max_loras,
            "max_lora_rank": self.max_lora_rank, "enforce_eager": self.enforce_eager,
            "num_parallel": self.num_parallel, "flash_attention": self.flash_attention,
            "reserve_gib": self.reserve_gib, "wired_limit_gib": self.wired_limit_gib,
        }


@dataclass
class ServeEstimate:
    setup: ServeSetup
    breakdown: dict[str, float]          # GiB per device, by component
    budget_gib: float                    # what the engine may use per device
    fits: bool                           # the server starts and holds one sequence of `context`
    problems: list[str]                  # why it does not (empty when it fits)
    kv_tokens: int                       # tokens of KV cache per server (vLLM: its cache capacity)
    concurrency: float                   # sequences of `context` tokens the cache holds at once
    decode_tokens_per_s: float           # one sequence generating, bandwidth bound
    assumptions: list[str]
    flags: dict                          # the engine's flags as resolved (defaults filled in)
    gpu_layers: int | None = None        # Ollama / llama.cpp: layers on the GPU (all when it fits)
    kv_cache_gib: float = 0.0            # vLLM: the KV cache per GPU; llama.cpp: the KV buffer
    headroom_gib: float | None = None    # vLLM: memory left outside its share after context/graphs

    def to_dict(self) -> dict:
        r = lambda x: None if x is None else round(float(x), 3)  # noqa: E731
        return {
            "setup": self.setup.to_dict(), "fits": self.fits, "problems": list(self.problems),
            "breakdown": {k: r(v) for k, v in self.breakdown.items()}, "budget_gib": r(self.budget_gib),
            "kv_cache_gib": r(self.kv_cache_gib), "kv_tokens": self.kv_tokens, "concurrency": r(self.concurrency),
            "decode_tokens_per_s": r(self.decode_tokens_per_s), "gpu_layers": self.gpu_layers,
            "headroom_gib": r(self.headroom_gib), "flags": dict(self.flags), "assumptions": list(self.assumptions),
        }


# ---- validation ------------------------------------------------------------------------------------


def engine_formats(engine: str) -> list[str]:
    f = serving_facts()
    return list(f["vllm_weight_formats"]) if engine == "vllm" else list(f["gguf_types"])


def validate(setup: ServeSetup) -> None:
    """Raise UserError for a combination the engine does not run."""
    f = serving_facts()
    s, m = setup, setup.model
    if m.is_moe:
        raise UserError(f"{m.id} is a mixture of experts: the serving estimate models dense decoders only")
    if s.engine not in ENGINES:
        raise UserError(f"unknown serving engine {s.engine!r}; use one of {', '.join(ENGINES)}")
    if s.weights not in engine_formats(s.engine):
        raise UserError(f"{s.engine} does not serve weight format {s.weights!r}; use one of "
                        f"{', '.join(engine_formats(s.engine))}")
    kv = f["kv_dtypes"]["vllm" if s.engine == "vllm" else "llama_cpp"]
    if s.kv_dtype not in kv:
        raise UserError(f"{s.engine} has no KV-cache dtype {s.kv_dtype!r}; use one of {', '.join(kv)}")
    if s.context < 1 or s.count < 1 or s.num_parallel < 1:
        raise UserError("context, GPU count and parallel sequences must be >= 1")
    if s.max_loras < 0 or (s.max_loras and s.max_lora_rank < 1):
        raise UserError("LoRA slots need --max-loras >= 1 and --max-lora-rank >= 1")
    if s.engine == "vllm":
        if s.is_mac:
            raise UserError("vLLM needs CUDA GPUs; on a Mac serve with --engine ollama (or llama.cpp)")
        if s.count not in f["vllm"]["tensor_parallel_sizes"] or m.num_heads % s.count:
            raise UserError(f"vLLM's tensor parallelism over {s.count} GPUs must divide the model's {m.num_heads} "
                            f"attention heads; use {', '.join(str(t) for t in f['vllm']['tensor_parallel_sizes'])} GPUs")
        if not 0.0 < s.gpu_memory_utilization <= 1.0:
            raise UserError("--gpu-memory-utilization must be in (0, 1]")
        fmt = f["vllm_weight_formats"][s.weights]
        if float(s.device.compute_capability) < float(fmt["min_compute_capability"]):
            raise UserError(f"vLLM runs {s.weights} weights on compute capability >= {fmt['min_compute_capability']}; "
                            f"{s.device.id} has {s.device.compute_capability}")
        if s.max_loras:
            allowed = read_facts("export.yaml")["vllm"]["max_lora_ranks"]
            if s.max_lora_rank not in allowed:
                raise UserError(f"--max-lora-rank {s.max_lora_rank}: vLLM accepts only {', '.join(map(str, allowed))}")
    else:
        if s.max_loras:
            raise UserError(f"{s.engine} applies one adapter per model; serve several LoRA adapters on one base with vLLM")
        if s.kv_dtype != "f16" and not s.flash_attention:
            raise UserError(f"a {s.kv_dtype} KV cache needs flash attention (OLLAMA_FLASH_ATTENTION=1 / llama.cpp -fa)")


# ---- weights -----------------------------------------------------------------------------------------


def vllm_linear_bytes(n_in: int, n_out: int, fmt_name: str) -> float:
    fmt = serving_facts()["vllm_weight_formats"][fmt_name]
    n = n_in * n_out
    b = n * fmt["bytes_per_weight"]
    if "group_size" in fmt:
        b += n / fmt["group_size"] * fmt["per_group_bytes"]
    b += fmt.get("per_output_row_bytes", 0) * n_out
    return b


def vllm_weight_bytes_per_gpu(model: ModelSpec, fmt_name: str, tp: int) -> dict[str, float]:
    """Weights on one GPU of a tensor-parallel group: decoder linears in the format, split over the
    group; embedding and lm_head 16-bit and vocabulary-parallel; norms replicated."""
    linear = model.num_layers * sum(vllm_linear_bytes(i, o, fmt_name) for i, o in model.linear_shapes().values())
    return {
        "linears": linear / tp,
        "embeddings": (model.embedding_params + model.lm_head_params) * 2.0 / tp,
        "norms": model.norm_params * 2.0,
    }


def gguf_weight_bytes(model: ModelSpec, gguf_type: str) -> dict[str, float]:
    """A GGUF file of the model by part: the token embedding (kept in host memory by llama.cpp) and
    everything else (offloaded), at the type's measured whole-file bits per weight."""
    f = serving_facts()
    total = model.parameter_count() * f["gguf_types"][gguf_type]["bpw"] / 8.0
    emb = model.embedding_params * f["gguf_embedding_bpw"][gguf_type] / 8.0
    return {"file": total, "token_embedding": emb, "offloaded": total - emb}


def lora_slot_bytes_per_gpu(model: ModelSpec, max_loras: int, max_rank: int, tp: int) -> float:
    """vLLM's preallocated LoRA slots on one GPU: for every linear of every layer, A (r x in) and
    B (out x r) per slot; column-parallel layers shard B's out, row-parallel ones A's in."""
    if not max_loras:
        return 0.0
    per_rank = 0
    for name, (n_in, n_out) in model.linear_shapes().items():
        if name in COLUMN_PARALLEL:
            per_rank += n_in + n_out / tp
        else:
            per_rank += n_in / tp + n_out
    return max_loras * max_rank * per_rank * model.num_layers * serving_facts()["vllm"]["lora_dtype_bytes"]


def kv_bytes_per_token(model: ModelSpec, kv_bytes: float, tp: int = 1) -> float:
    """K and V of every layer for one token on one GPU (KV heads split over the tensor-parallel group,
    replicated when there are fewer heads than GPUs)."""
    heads = max(1, model.num_kv_heads // tp) if tp > 1 else model.num_kv_heads
    return 2.0 * model.num_layers * heads * model.head_dim * kv_bytes


def vllm_batch_defaults(gpu: GpuSpec) -> dict:
    d = serving_facts()["vllm"]["defaults"]
    large = d["large"]
    if gpu.memory_gib >= large["min_memory_gib"] and gpu.id not in large["excluded"]:
        return {"max_num_batched_tokens": large["max_num_batched_tokens"], "max_num_seqs": large["max_num_seqs"]}
    return dict(d["small"])


def vllm_activation_bytes(model: ModelSpec, tp: int, batched_tokens: int, num_seqs: int,
                          coef: dict | None = None) -> dict[str, float]:
    """The profiling pass's peak: the forward pass over the batched tokens or the sampler over the
    sequences' logits, whichever is larger (they do not coexist)."""
    c = coef or serving_facts()["vllm"]["activation"]
    forward = batched_tokens * (c["i_coef"] * model.intermediate_size / tp + c["h_coef"] * model.hidden_size) * 2.0
    sampler = num_seqs * model.vocab_size * 4.0 * c["sampler_copies"]
    return {"forward": forward, "sampler": sampler}


def decode_efficiency(setup: ServeSetup) -> float:
    f = serving_facts()["decode_efficiency"]["metal" if setup.is_mac else "cuda"]
    sixteen = setup.weights in ("bf16", "f16")
    return f["bits16" if sixteen else "quantized"]


def device_bandwidth_gbps(setup: ServeSetup) -> float:
    return float(setup.device.bandwidth_gbps if setup.is_mac else setup.device.memory_bandwidth_gbps)


# ---- the estimate ----------------------------------------------------------------------------------


def estimate_serving(setup: ServeSetup, *, engine_facts: dict | None = None) -> ServeEstimate:
    """The estimate. `engine_facts` overrides keys of facts/serving.yaml `vllm:` for an engine version
    that accounts differently (the calibration cases measured on older vLLM releases use it)."""
    validate(setup)
    return _vllm(setup, engine_facts or {}) if setup.engine == "vllm" else _llama_cpp(setup)


def _vllm(s: ServeSetup, overrides: dict) -> ServeEstimate:
    f = serving_facts()
    unknown = sorted(set(overrides) - set(f["vllm"]))
    if unknown:
        raise UserError(f"unknown vLLM fact(s) {', '.join(unknown)}; known: {', '.join(sorted(f['vllm']))}")
    v = {**f["vllm"], **overrides}
    m, gpu, tp = s.model, s.device, s.count
    defaults = vllm_batch_defaults(gpu)
    num_seqs = s.max_num_seqs or defaults["max_num_seqs"]
    batched = s.max_num_batched_tokens or defaults["max_num_batched_tokens"]
    total = gpu.memory_gib - v["driver_reserved_gib"]
    requested = total * s.gpu_memory_utilization          # GiB
    weights = vllm_weight_bytes_per_gpu(m, s.weights, tp)
    lora = lora_slot_bytes_per_gpu(m, s.max_loras, s.max_lora_rank, tp)
    act = vllm_activation_bytes(m, tp, batched, num_seqs, v["activation"])
    activation = max(act.values())
    non_torch = v["non_torch_gib"] * GIB
    breakdown = {"weights": sum(weights.values()) / GIB}
    if lora:
        breakdown["lora_slots"] = lora / GIB
    breakdown["activation_peak"] = activation / GIB
    breakdown["non_torch"] = non_torch / GIB
    used = sum(breakdown.values())
    kv_budget = requested - used
    kv_b = f["kv_dtypes"]["vllm"][s.kv_dtype]
    per_token = kv_bytes_per_token(m, kv_b, tp)
    block = v["block_size"]
    blocks = max(0, math.floor(kv_budget * GIB / (per_token * block)))
    kv_tokens = blocks * block
    breakdown["kv_cache"] = blocks * block * per_token / GIB
    outside = v["cuda_context_gib"] + (v["nccl_gib"] if tp > 1 else 0.0) + (0.0 if s.enforce_eager else v["cuda_graphs_gib"])
    headroom = total * (1 - s.gpu_memory_utilization) - s.reserve_gib - outside
    problems = []
    if kv_budget <= 0:
        problems.append(f"weights{' + LoRA slots' if lora else ''} + profiling need {used:.1f} GiB per GPU, more than the "
                        f"{requested:.1f} GiB vLLM takes ({s.gpu_memory_utilization:g} x {total:.1f}): no memory "
                        f"is left for the KV cache")
    elif kv_tokens < s.context:
        problems.append(f"the KV cache holds {kv_tokens:,} tokens ({kv_budget:.2f} GiB per GPU), fewer than one "
                        f"{s.context:,}-token sequence: vLLM refuses to start (lower --max-model-len to "
                        f"{max(kv_tokens // 256 * 256, 0):,} or free memory)")
    if headroom < 0:
        problems.append(f"the {1 - s.gpu_memory_utilization:.0%} of each GPU outside vLLM's share "
                        f"({total * (1 - s.gpu_memory_utilization):.2f} GiB) cannot hold the CUDA context"
                        + (", NCCL buffers" if tp > 1 else "") + ("" if s.enforce_eager else " and CUDA graphs")
                        + (f" and the {s.reserve_gib:g} GiB other processes hold" if s.reserve_gib else "")
                        + f" ({outside + s.reserve_gib:.2f} GiB): lower --gpu-memory-utilization"
                        + ("" if s.enforce_eager else " or add --enforce-eager"))
    concurrency = kv_tokens / s.context
    bytes_per_tok = sum(weights.values()) - weights["embeddings"] / 2 + per_token * s.context / 2
    tps = decode_efficiency(s) * device_bandwidth_gbps(s) * 1e9 / bytes_per_tok
    fmt = f["vllm_weight_formats"][s.weights]
    flags = {
        "max_model_len": s.context, "gpu_memory_utilization": s.gpu_memory_utilization,
        "tensor_parallel_size": tp, "quantization": fmt["vllm_flag"], "kv_cache_dtype": s.kv_dtype,
        "max_num_seqs": num_seqs, "max_num_batched_tokens": batched, "enforce_eager": s.enforce_eager,
        "max_loras": s.max_loras or None, "max_lora_rank": s.max_lora_rank or None,
    }
    assumptions = [
        f"vLLM V1 on {tp} x {gpu.name}: it takes {s.gpu_memory_utilization:g} x {total:.2f} GiB "
        f"(the GPU's {gpu.memory_gib:g} GiB less {v['driver_reserved_gib']} GiB the driver keeps) = {requested:.2f} GiB per GPU",
        f"weights: decoder linears in {s.weights} ({fmt['describe']}), split over {tp} GPU(s); embeddings and lm_head "
        "16-bit and vocabulary-parallel",
        (f"LoRA: {s.max_loras} slot(s) of rank {s.max_lora_rank} preallocated for all 7 linears of all "
         f"{m.num_layers} layers in bf16 ({lora / GIB:.2f} GiB per GPU), whatever the adapters target"
         if lora else "no LoRA slots (--enable-lora off)"),
        f"profiling peak: the larger of the forward pass over {batched:,} batched tokens "
        f"({act['forward'] / GIB:.2f} GiB) and the sampler over {num_seqs} sequences' logits ({act['sampler'] / GIB:.2f} GiB)",
        f"KV cache: {per_token / 1024:.0f} KiB per token per GPU ({m.num_layers} layers x K,V x "
        f"{max(1, m.num_kv_heads // tp) if tp > 1 else m.num_kv_heads} KV heads x {m.head_dim} x {kv_b:g} bytes), "
        f"in blocks of {block} tokens",
        f"outside vLLM's share: CUDA context {v['cuda_context_gib']} GiB"
        + (f", NCCL {v['nccl_gib']} GiB" if tp > 1 else "")
        + ("" if s.enforce_eager else f", CUDA graphs ~{v['cuda_graphs_gib']} GiB")
        + (f", other processes {s.reserve_gib:g} GiB" if s.reserve_gib else ""),
        f"decode speed of one sequence: {decode_efficiency(s):.0%} of {device_bandwidth_gbps(s):,.0f} GB/s over the "
        f"weights and half the context's KV cache per token"
        + (" (tensor parallelism over PCIe adds all-reduce latency not modelled here)" if tp > 1 and gpu.interconnect == "pcie" else ""),
    ]
    return ServeEstimate(setup=s, breakdown=breakdown, budget_gib=requested, fits=not problems, problems=problems,
                         kv_tokens=kv_tokens, concurrency=concurrency, decode_tokens_per_s=tps,
                         assumptions=assumptions, flags=flags, kv_cache_gib=breakdown["kv_cache"], headroom_gib=headroom)


def llama_cpp_graph_bytes(model: ModelSpec, context_tokens: int) -> float:
    """The compute buffer of a fully offloaded Llama model as Ollama estimates it (fs/ggml/ggml.go)."""
    b = serving_facts()["llama_cpp"]["n_ubatch"]
    h, heads, vocab = model.hidden_size, model.num_heads, model.vocab_size
    return float(max(4 * b * (1 + 4 * h + context_tokens * (1 + heads)), 4 * b * (h + vocab)))


def _llama_cpp(s: ServeSetup) -> ServeEstimate:
    f = serving_facts()
    m = s.model
    ollama = s.engine == "ollama"
    w = gguf_weight_bytes(m, s.weights)
    ctx_tokens = s.context * s.num_parallel
    kv_b = f["kv_dtypes"]["llama_cpp"][s.kv_dtype]
    kv = kv_bytes_per_token(m, kv_b) * ctx_tokens
    graph = llama_cpp_graph_bytes(m, ctx_tokens)
    n = s.count
    if s.is_mac:
        usable = s.device.gpu_usable_gib(s.wired_limit_gib) - s.reserve_gib
        overhead = 0.0
        where = (f"{s.device.name}: macOS lets the GPU use {usable + s.reserve_gib:.0f} GiB of its {s.device.memory_gib:g} GiB "
                 + ("(your iogpu.wired_limit_mb)" if s.wired_limit_gib else
                    f"({s.device.default_gpu_share():.0%}, recommendedMaxWorkingSetSize)"))
    else:
        usable = s.device.memory_gib - s.reserve_gib
        overhead = (f["ollama"]["minimum_free_gib"] if ollama else f["llama_cpp"]["cuda_context_gib"]) * GIB
        where = f"{n} x {s.device.name} ({s.device.memory_gib:g} GiB each" + (f", {s.reserve_gib:g} GiB held by other processes)" if s.reserve_gib else ")")
    # layers are split over the GPUs (llama.cpp --split-mode layer); each GPU holds its share of the
    # offloaded weights and KV cache, a compute buffer and the engine's reserve
    per_gpu = {"weights": w["offloaded"] / n / GIB, "kv_cache": kv / n / GIB, "compute_buffer": graph / GIB}
    per_gpu["reserve" if ollama and not s.is_mac else "overhead"] = overhead / GIB
    need = sum(per_gpu.values())
    problems = []
    layers = m.num_layers
    if need > usable:
        per_layer = (w["offloaded"] + kv) / (m.num_layers + 1)
        spare = usable * n * GIB - (graph + overhead) * n
        layers = max(0, min(m.num_layers, int(spare // per_layer) - 1))
        problems.append(f"needs {need:.2f} GiB per {'Mac' if s.is_mac else 'GPU'}, over the {usable:.2f} GiB available: "
                        f"{'Ollama' if ollama else 'llama.cpp'} would put only {layers} of {m.num_layers} layers on the GPU "
                        "and run the rest on the CPU, several times slower")
    bytes_per_tok = w["offloaded"] + kv_bytes_per_token(m, kv_b) * s.context / 2
    tps = decode_efficiency(s) * device_bandwidth_gbps(s) * 1e9 / bytes_per_tok
    flags = {"num_ctx": s.context, "num_parallel": s.num_parallel, "quantization": s.weights,
             "kv_cache_type": s.kv_dtype, "flash_attention": s.flash_attention, "num_gpu": layers + 1}
    bpw = f["gguf_types"][s.weights]["bpw"]
    assumptions = [
        where,
        f"weights: GGUF {s.weights} at {bpw:g} bits per weight (llama.cpp's measured whole-file average): "
        f"{w['file'] / GIB:.2f} GiB, of which the token embedding ({w['token_embedding'] / GIB:.2f} GiB) stays in host memory",
        f"KV cache: {ctx_tokens:,} tokens (num_ctx {s.context:,} x {s.num_parallel} parallel) x {m.num_layers} layers x K,V x "
        f"{m.kv_dim} x {kv_b:g} bytes ({s.kv_dtype})",
        f"compute buffer: Ollama's estimate for a fully offloaded Llama at batch {f['llama_cpp']['n_ubatch']} "
        f"({graph / GIB:.2f} GiB)",
        (f"Ollama keeps {f['ollama']['minimum_free_gib'] * 1024:.0f} MiB of each GPU free" if ollama and not s.is_mac
         else f"CUDA context {f['llama_cpp']['cuda_context_gib']} GiB" if not s.is_mac else "Metal: no separate context reserve"),
        f"decode speed of one sequence: {decode_efficiency(s):.0%} of {device_bandwidth_gbps(s):,.0f} GB/s over the "
        "offloaded weights and half the context's KV cache per token"
        + (" (layers split over GPUs run one after another)" if n > 1 else ""),
    ]
    return ServeEstimate(setup=s, breakdown=per_gpu, budget_gib=usable, fits=not problems, problems=problems,
                         kv_tokens=ctx_tokens, concurrency=float(s.num_parallel), decode_tokens_per_s=tps,
                         assumptions=assumptions, flags=flags, gpu_layers=layers, kv_cache_gib=kv / n / GIB)


__all__ = ["ServeSetup", "ServeEstimate", "ENGINES", "estimate_serving", "serving_facts", "validate",
           "vllm_weight_bytes_per_gpu", "gguf_weight_bytes", "lora_slot_bytes_per_gpu", "kv_bytes_per_token",
           "vllm_activation_bytes", "vllm_batch_defaults", "llama_cpp_graph_bytes", "engine_formats"]

