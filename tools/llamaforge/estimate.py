"""Per-GPU peak memory, host RAM, throughput, hours and cost of one `TrainSetup`.

The estimate is arithmetic over the model's architecture constants, the training setup and the
assumption constants in facts/estimator.yaml (what the training stack keeps in memory, allocator
and CUDA overheads, utilisation). It is calibrated against published measurements kept in
tests/calibration/cases.yaml; docs/hardware.md explains every term.

Peak memory is the largest of three moments of a training step, each the sum of what is resident
then:
  loss      end of forward: every layer's saved activations + the logits and their cross-entropy
  backward  the first decoder layer to run backward: saved activations + that layer's recomputed
            working set + gathered (ZeRO-3/FSDP) parameters + dequantized weights
  step      end of backward / optimizer step: gradients + optimizer temporaries
on top of what stays resident (weights, adapters, optimizer states, master weights, buffers).

Pure: no I/O beyond reading the packaged YAML facts once; no torch."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from functools import lru_cache


from .catalog import ModelSpec
from .errors import UserError
from .paths import read_facts
from .training import OPTIMIZER_STATE_BYTES, TrainSetup

GIB = float(2**30)


# ---- facts ---------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def estimator_facts() -> dict:
    return read_facts("estimator.yaml")


@lru_cache(maxsize=1)
def parallelism_facts() -> dict:
    return read_facts("parallelism.yaml")


@dataclass(frozen=True)
class StackFacts:
    """What the training stack keeps in memory where stacks differ. The defaults describe Axolotl
    0.19 (transformers 5, PEFT 0.20) and come from facts/estimator.yaml `stack:`; calibration cases
    measured on other stacks override them."""

    loss: str = "hf_upcast"
    adapter_dtype: str = "fp32"
    kbit_embeddings_fp32: bool = False
    lora_dropout: bool = True
    embedding_cast_at_load: bool = True
    fsdp_root_gathered: bool = True

    @classmethod
    def axolotl(cls) -> StackFacts:
        return cls(**estimator_facts()["stack"])

    def with_overrides(self, overrides: dict | None) -> StackFacts:
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UserError(f"unknown stack fact(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return replace(self, **overrides)


# ---- the estimate ----------------------------------------------------------------------------------


@dataclass
class Estimate:
    setup: TrainSetup
    breakdown: dict[str, float]      # GiB per GPU at the peak moment, by component
    peak_gpu_gib: float
    usable_gpu_gib: float
    fits: bool
    host_ram_gib: float
    host_breakdown: dict[str, float]
    tokens_per_s: float
    mfu: float
    tokens: int | None
    epochs: float
    hours: float | None
    cost_usd: float | None
    assumptions: list[str]
    peak_phase: str = "loss"
    allocated_gib: float = 0.0       # what torch.cuda.max_memory_allocated would report
    reserved_gib: float = 0.0        # what torch.cuda.max_memory_reserved would report, memory plentiful
    device_gib: float = 0.0          # what nvidia-smi would show, memory plentiful
    paged_optimizer_gib: float = 0.0  # paged optimizer states in unified memory (evictable, not in peak)
    phases_gib: dict[str, float] = field(default_factory=dict)  # allocated GiB at each moment
    flops_per_token: float = 0.0

    def measured_as(self, metric: str) -> float:
        """The estimate in the unit a measurement reports: `allocated` (torch max allocated or
        torchtune's active), `reserved` (torch max reserved), `device` (nvidia-smi, whole GPU),
        `required` (the GPU memory the run needs: what `peak_gpu_gib` is)."""
        if metric == "allocated":
            return self.allocated_gib
        if metric == "reserved":
            return self.reserved_gib
        if metric == "device":
            return self.device_gib
        if metric == "required":
            return self.peak_gpu_gib
        raise ValueError(f"unknown memory metric {metric!r}")

    def to_dict(self) -> dict:
        r = lambda x: None if x is None else round(float(x), 3)  # noqa: E731
        return {
            "setup": self.setup.to_dict(),
            "peak_gpu_gib": r(self.peak_gpu_gib),
            "usable_gpu_gib": r(self.usable_gpu_gib),
            "fits": self.fits,
            "peak_phase": self.peak_phase,
            "allocated_gib": r(self.allocated_gib),
            "reserved_gib": r(self.reserved_gib),
            "device_gib": r(self.device_gib),
            "paged_optimizer_gib": r(self.paged_optimizer_gib),
            "breakdown": {k: r(v) for k, v in self.breakdown.items()},
            "phases_gib": {k: r(v) for k, v in self.phases_gib.items()},
            "host_ram_gib": r(self.host_ram_gib),
            "host_breakdown": {k: r(v) for k, v in self.host_breakdown.items()},
            "tokens_per_s": r(self.tokens_per_s),
            "mfu": r(self.mfu),
            "flops_per_token": float(self.flops_per_token),
            "tokens": self.tokens,
            "epochs": self.epochs,
            "hours": r(self.hours),
            "cost_usd": r(self.cost_usd),
            "assumptions": list(self.assumptions),
        }


# ---- validation ---------------------------------------------------------------------------------

WEIGHT_FORMATS_BY_METHOD = {
    "full": ("bf16", "fp32"),
    "lora": ("bf16", "fp32", "int8"),
    "qlora": ("nf4", "nf4_dq"),
}


def validate_setup(setup: TrainSetup) -> None:
    """Raise UserError when Axolotl 0.19 would refuse, or could not run, this combination."""
    modes = parallelism_facts()["modes"]
    mode = modes[setup.parallel]
    ws = setup.world_size
    if ws > mode.get("max_world_size", 10**9):
        raise UserError(f"--parallel {setup.parallel} runs on one GPU, but the hardware has {ws}; use ddp, zero1/2/3 or fsdp")
    if setup.offload not in mode["offload"]:
        why = {
            "fsdp": "FSDP's CPU offload moves parameters, gradients and the optimizer step together; use --offload all",
            "zero1": "only ZeRO-3 can offload parameters",
            "zero2": "only ZeRO-3 can offload parameters",
        }.get(setup.parallel, "it shards nothing to offload; use zero2/zero3 or fsdp")
        raise UserError(
            f"--offload {setup.offload} does not work with --parallel {setup.parallel} ({why}); "
            f"allowed: {', '.join(mode['offload'])}"
        )
    allowed_formats = WEIGHT_FORMATS_BY_METHOD[setup.method]
    if setup.weight_format not in allowed_formats:
        raise UserError(
            f"weight format {setup.weight_format} does not go with method {setup.method}; use one of {', '.join(allowed_formats)}"
        )
    if "weight_formats" in mode and setup.weight_format not in mode["weight_formats"]:
        raise UserError(
            f"{setup.weight_format} weights cannot be sharded by --parallel {setup.parallel} "
            f"(bitsandbytes int8 does not work with ZeRO-3 or FSDP); use qlora, or zero2/ddp"
        )
    if setup.fsdp_version == 1 and (setup.parallel != "fsdp" or not setup.is_quantized):
        raise UserError("FSDP1 is planned only for sharded loading of a 4/8-bit base (qlora with --parallel fsdp); "
                        "use FSDP2 otherwise")
    if setup.optimizer not in OPTIMIZER_STATE_BYTES:
        raise UserError(f"unknown optimizer {setup.optimizer!r}; use one of {', '.join(OPTIMIZER_STATE_BYTES)}")
    if setup.optimizer in mode.get("refused_optimizers", ()) and setup.fsdp_version == 2:
        raise UserError(
            f"Axolotl 0.19 refuses {setup.optimizer} with FSDP2; use adamw_torch_fused or paged_adamw_8bit"
        )


# ---- sizes --------------------------------------------------------------------------------------


def _bytes_per_linear(n_in: int, n_out: int, fmt: str) -> float:
    q = estimator_facts()["quantization"]
    n = n_in * n_out
    if fmt == "fp32":
        return 4.0 * n
    if fmt == "bf16":
        return 2.0 * n
    if fmt == "int8":
        return n + q["int8_row_scale_bytes"] * n_out
    blocks = n / q["nf4_block"]
    if fmt == "nf4":
        return n / 2 + blocks * q["nf4_absmax_bytes"]
    if fmt == "nf4_dq":
        return n / 2 + blocks * q["nf4_dq_absmax_bytes"] + blocks / q["nf4_dq_block2"] * q["nf4_dq_block2_bytes"]
    raise UserError(f"unknown weight format {fmt!r}; use fp32, bf16, int8, nf4 or nf4_dq")


def _layer_linear_bytes(model: ModelSpec, fmt: str) -> float:
    return sum(_bytes_per_linear(i, o, fmt) for i, o in model.linear_shapes().values())


def layer_weight_bytes(model: ModelSpec, fmt: str) -> float:
    """One decoder layer's linear weights in `fmt` plus its norms in 16-bit (fp32 for fp32)."""
    return _layer_linear_bytes(model, fmt) + model.params_per_layer_norm * (4 if fmt == "fp32" else 2)


def base_weight_bytes(model: ModelSpec, fmt: str, *, embeddings_fp32: bool = False) -> dict[str, float]:
    """Weights by part: decoder linears in `fmt`; embeddings, lm_head and norms 16-bit (bitsandbytes
    leaves them unquantized), or fp32 for an fp32 model or when prepare_model_for_kbit_training
    left them upcast."""
    linear = model.num_layers * _layer_linear_bytes(model, fmt)
    other_b = 4 if fmt == "fp32" else 2
    emb_b = 4 if (fmt == "fp32" or embeddings_fp32) else 2
    return {
        "linear": linear,
        "embeddings": (model.embedding_params + model.lm_head_params) * emb_b,
        "norms": model.norm_params * other_b,
    }


def matmul_params(model: ModelSpec) -> int:
    """Parameters that take part in matrix multiplications: decoder linears and the output head."""
    return model.linear_params + model.vocab_size * model.hidden_size


def _max_linear_params(model: ModelSpec) -> int:
    return max(i * o for i, o in model.linear_shapes().values())


def layer_activation_bytes_per_token(setup: TrainSetup, stack: StackFacts) -> float:
    """What autograd keeps for backward in one decoder layer, per token."""
    m, f = setup.model, estimator_facts()
    c = f["layer_activation_bytes"]
    per = c["h"] * m.hidden_size + c["q"] * m.q_dim + c["kv"] * m.kv_dim + c["i"] * m.intermediate_size
    if setup.attn == "eager":
        # eager attention materialises the scores and the softmax (bf16) per head: O(seq^2)
        per += f["eager_attention_bytes"] * m.num_heads * setup.seq_len
    if setup.is_adapter and stack.lora_dropout:
        shapes = m.linear_shapes()
        per += f["lora_dropout_bytes_per_input_feature"] * sum(shapes[t][0] for t in setup.lora_targets)
    return per


# ---- the memory model ---------------------------------------------------------------------------


@dataclass
class _Memory:
    paged: float                        # paged optimizer states (CUDA unified memory)
    resident: dict[str, float]          # bytes present at every moment
    phases: dict[str, dict[str, float]]  # extra bytes per moment
    gradients_at: dict[str, float]      # gradient bytes present at each moment
    host: dict[str, float]
    assumptions: list[str]
    load: float = 0.0                   # bytes while loading (before adapters and optimizer exist)


def _trainable_bytes_per_param(setup: TrainSetup, stack: StackFacts, engine: str) -> float:
    """Storage of one trainable parameter on the GPU (before sharding)."""
    if engine == "fsdp2":
        return 4.0                      # accelerate upcasts trainable parameters to fp32 under FSDP2
    if setup.is_adapter:
        if engine == "deepspeed":
            return 2.0                  # the DeepSpeed engine casts the module, adapters included, to bf16
        return 4.0 if stack.adapter_dtype == "fp32" else 2.0
    return 4.0 if setup.weight_format == "fp32" else 2.0


def _memory(setup: TrainSetup, stack: StackFacts) -> _Memory:
    f = estimator_facts()
    pf = parallelism_facts()
    mode = pf["modes"][setup.parallel]
    engine = mode["engine"]
    shards = set(mode["shards"])
    m = setup.model
    W = setup.world_size
    gpn = setup.hardware.gpus_per_node
    h, V, L = m.hidden_size, m.vocab_size, m.num_layers
    opt = setup.optimizer
    off_params = setup.offload in ("params", "all")
    off_opt = setup.offload in ("optimizer", "all")
    notes: list[str] = []

    resident: dict[str, float] = {}
    host: dict[str, float] = {}

    # -- weights ---------------------------------------------------------------------------------
    kbit = setup.weight_format in ("int8", "nf4", "nf4_dq")
    emb_fp32 = setup.is_adapter and kbit and stack.kbit_embeddings_fp32 and "parameters" not in shards
    parts = base_weight_bytes(m, setup.weight_format, embeddings_fp32=emb_fp32)
    base = sum(parts.values())
    T = setup.trainable_params()
    tb = _trainable_bytes_per_param(setup, stack, engine)
    if setup.method == "full":
        # the model's own weights are the trainable parameters
        weights = m.parameter_count() * tb
    else:
        weights = base
    param_shard = W if "parameters" in shards else 1
    if off_params:
        host["offloaded_parameters"] = weights / W * gpn
        resident["weights"] = 0.0
    else:
        resident["weights"] = weights / param_shard
    if setup.is_adapter:
        adapters = T * tb / param_shard
        if off_params and engine == "fsdp2":
            host["offloaded_parameters"] = host.get("offloaded_parameters", 0.0) + T * tb / W * gpn
            adapters = 0.0
        resident["lora_weights"] = adapters

    # -- gradients (trainable parameters only) ------------------------------------------------------
    if engine == "fsdp2":
        grads = T * 4.0 / W             # sharded fp32 gradients
    elif engine == "deepspeed":
        grads = T * 2.0 / (W if "gradients" in shards else 1)
    else:
        grads = T * tb
    if off_opt:
        # FSDP's CPU offload keeps the sharded gradients on the host; DeepSpeed's optimizer offload
        # moves each reduced gradient partition to the host (fp32, counted with the optimizer there)
        if engine == "fsdp2":
            host["offloaded_gradients"] = grads * gpn
        grads = 0.0

    # -- optimizer states and master weights ----------------------------------------------------------
    state_fp32 = OPTIMIZER_STATE_BYTES[opt]
    ofacts = f["optimizers"]
    if engine in ("none", "ddp") and opt in ofacts["states_in_param_dtype"] and tb == 2.0:
        state = state_fp32 / 2           # bf16 states for bf16 parameters
        if setup.method == "full":
            notes.append(f"full fine-tune without sharding runs in pure bf16 (Axolotl loads the model in bf16): "
                         f"{opt} keeps bf16 states and there are no fp32 master weights")
    else:
        state = state_fp32
    opt_shard = W if "optimizer" in shards else 1
    optimizer = T * state / opt_shard
    master = T * 4.0 / opt_shard if engine == "deepspeed" else 0.0
    if off_opt:
        host["offloaded_optimizer"] = (optimizer + master) * gpn
        if engine == "deepspeed":
            host["offloaded_optimizer"] += T * 4.0 / opt_shard * gpn   # fp32 gradient partition
        optimizer = master = 0.0
    paged = 0.0
    if opt in ofacts["paged"]:
        paged, optimizer = optimizer, 0.0   # unified memory: outside torch's allocator, evictable
    resident["optimizer"] = optimizer
    resident["master_weights"] = master
    step_temp = 0.0 if off_opt else T * state * ofacts["step_temporary_state_fraction"].get(opt, 0.0) / opt_shard

    # -- communication buffers -----------------------------------------------------------------------
    ds = f["deepspeed"]
    comm = 0.0
    if engine == "ddp":
        comm = T * tb                    # DDP's reducer keeps bucket copies of every gradient
    elif setup.parallel == "zero1":
        comm = ds["overlap_comm_buffers"] * ds["zero1_reduce_bucket_elements"] * 2.0
    elif setup.parallel in ("zero2", "zero3"):
        comm = ds["overlap_comm_buffers"] * h * h * 2.0
    resident["comm_buffers"] = comm
    allgather = 0.0
    if setup.parallel in ("zero1", "zero2"):
        allgather = min(ds["allgather_bucket_elements"], T) * 2.0

    # -- gathered parameters (ZeRO-3 / FSDP) and dequantized weights ---------------------------------------
    layer_store = layer_weight_bytes(m, setup.weight_format if setup.is_adapter else "bf16")
    head_bf16 = (m.lm_head_params or m.embedding_params) * 2.0
    root_bf16 = (m.embedding_params + m.lm_head_params) * 2.0
    gathered_loss = gathered_layer = 0.0
    if setup.parallel == "zero3":
        live = min(ds["zero3_max_live_elements"] * 2.0, layer_store)
        prefetch = ds["zero3_prefetch_h2"] * h * h * 2.0
        gathered_layer = live + prefetch
        gathered_loss = head_bf16 + prefetch
    elif setup.parallel == "fsdp":
        root = root_bf16 if stack.fsdp_root_gathered else 0.0
        per_layer = layer_store + (setup.lora_param_count() / L) * 2.0
        gathered_layer = root + f["fsdp"]["gathered_layers"] * per_layer
        if setup.method == "full":
            gathered_layer += layer_weight_bytes(m, "bf16")   # the layer's unsharded gradient
        gathered_loss = max(root, head_bf16) + per_layer
    dequant = _max_linear_params(m) * 2.0 if kbit else 0.0

    # -- activations ------------------------------------------------------------------------------------
    tokens = setup.micro_batch * setup.seq_len
    A = layer_activation_bytes_per_token(setup, stack)
    bt = f["backward_temporary_bytes"]
    B = bt["h"] * h + bt["i"] * m.intermediate_size
    head_act = f["head_activation_bytes"]["h"] * h * tokens
    if setup.grad_ckpt:
        saved = L * f["checkpoint_bytes_per_token"]["h"] * h * tokens
        working = (A + B) * tokens
    else:
        saved = L * A * tokens
        working = B * tokens
    try:
        per_logit = f["loss_bytes_per_logit"][stack.loss]
    except KeyError:
        raise UserError(f"unknown loss implementation {stack.loss!r}; known: {', '.join(f['loss_bytes_per_logit'])}") from None
    logits = per_logit * V * tokens

    # loading: embeddings/lm_head are cast one matrix at a time (Axolotl: to fp32 around
    # prepare_model_for_kbit_training and back to bf16; plain PEFT: to fp32), so the old and the
    # new copy of the largest matrix coexist; nothing else (adapters, optimizer) exists yet
    load = 0.0
    casts_embeddings = stack.embedding_cast_at_load and engine != "fsdp2" and "parameters" not in shards and (
        (setup.is_adapter and kbit) or stack.kbit_embeddings_fp32 or setup.method == "full")
    if casts_embeddings and not off_params:
        emb_params = m.embedding_params + m.lm_head_params
        largest = max(m.embedding_params, m.lm_head_params)
        steady_emb = parts["embeddings"] if setup.is_adapter else emb_params * tb
        load = resident["weights"] - steady_emb + 4.0 * emb_params + 2.0 * largest

    # loading a 4/8-bit base: bitsandbytes quantizes it on the GPU it is placed on, and Axolotl 0.19
    # places it whole on every rank before ZeRO-3/FSDP2 shard it (facts/parallelism.yaml
    # `quantized_loading`); each bf16 tensor is briefly on the GPU next to its quantized form
    if setup.is_adapter and setup.loads_whole_base_per_gpu and (param_shard > 1 or off_params):
        whole = sum(base_weight_bytes(m, setup.weight_format).values())
        load = max(load, whole + _max_linear_params(m) * 2.0)
        notes.append("loading: Axolotl 0.19 quantizes the whole 4/8-bit base onto every GPU before "
                     f"{'ZeRO-3' if setup.parallel == 'zero3' else 'FSDP2'} shards it "
                     f"({whole / GIB:,.1f} GiB per GPU at load)")
    elif setup.parallel == "fsdp" and setup.fsdp_version == 1 and setup.is_quantized:
        notes.append("loading: FSDP1 sharded quantized loading (cpu_ram_efficient_loading + "
                     "qlora_sharded_model_loading): rank 0 quantizes layer by layer into CPU RAM")

    # gradients exist during forward only when accumulating (HF zeroes them to None after each step)
    grads_fwd = grads if setup.grad_accum > 1 else 0.0
    phases = {
        "loss": {"activations": saved + head_act, "logits": logits, "gathered_params": gathered_loss},
        "backward": {"activations": saved + working, "gathered_params": gathered_layer, "dequantized_weights": dequant},
        "step": {"optimizer_temporaries": step_temp + allgather},
    }
    gradients_at = {"loss": grads_fwd, "backward": grads_fwd, "step": grads}
    return _Memory(paged, resident, phases, gradients_at, host, notes, load)


# ---- host RAM ------------------------------------------------------------------------------------------


def _host_ram(setup: TrainSetup, mem: _Memory) -> dict[str, float]:
    """Host RAM per node: the training processes, plus the larger of loading and offloaded state."""
    hf = estimator_facts()["host"]
    gpn = setup.hardware.gpus_per_node
    out = {"processes": gpn * hf["per_process_gib"] * GIB}
    out.update(mem.host)
    kbit = setup.weight_format in ("int8", "nf4", "nf4_dq")
    if setup.parallel == "fsdp" and not kbit:
        # cpu_ram_efficient_loading: rank 0 of each node holds the whole bf16 model before sharding
        loading = sum(base_weight_bytes(setup.model, "bf16").values())
    elif setup.parallel == "fsdp" and setup.fsdp_version == 1:
        # sharded quantized loading: rank 0 quantizes layer by layer into CPU RAM
        loading = sum(base_weight_bytes(setup.model, setup.weight_format).values()) + gpn * hf["loading_shard_gib"] * GIB
    else:
        # safetensors shards stream onto each process's GPU (quantized there for 4/8-bit)
        loading = gpn * hf["loading_shard_gib"] * GIB
    if setup.offload in ("params", "all") and setup.parallel == "fsdp":
        # FSDP flattening the CPU shards briefly holds a second copy of them
        loading = max(loading, hf["offload_flatten_copies"] * mem.host.get("offloaded_parameters", 0.0))
    out["loading"] = loading
    return out


# ---- throughput -------------------------------------------------------------------------------------------


def flops_per_token(setup: TrainSetup) -> float:
    """FLOPs executed per trained token: 2N forward, 2N backward to the activations, 2N to the
    weights (full fine-tune only), 2N again when gradient checkpointing recomputes the forward, plus
    causal attention (4 x L x q x S/2 per forward) and the adapters' own matmuls."""
    m = setup.model
    n = matmul_params(m)
    attn_fwd = 4.0 * m.num_layers * m.q_dim * setup.seq_len / 2
    fwd = 2.0 * n + attn_fwd
    bwd_act = 2.0 * n + 2 * attn_fwd
    bwd_w = 2.0 * n if setup.method == "full" else 0.0
    recompute = fwd if setup.grad_ckpt else 0.0
    adapters = 6.0 * setup.lora_param_count() + (2.0 * setup.lora_param_count() if setup.grad_ckpt else 0.0)
    return fwd + bwd_act + bwd_w + recompute + adapters


def compute_utilisation(setup: TrainSetup) -> tuple[float, str]:
    """Fraction of the bf16 peak the GPU's own compute reaches (before communication)."""
    t = estimator_facts()["throughput"]
    gpu = setup.hardware.gpu
    base = t["base_utilisation"].get(gpu.id, t["base_utilisation"]["default"])
    tokens = setup.micro_batch * setup.seq_len
    pts = t["tokens_per_microbatch"]
    fb = pts[0][1] if tokens <= pts[0][0] else pts[-1][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 < tokens <= x1:
            fb = y0 + (y1 - y0) * (tokens - x0) / (x1 - x0)
    u = base * t["method"][setup.method] * fb
    return u, (f"{gpu.id} {base}, {setup.method} x{t['method'][setup.method]}, "
               f"{tokens:,} tokens per micro-batch x{fb:.2f}")


def _communication(setup: TrainSetup) -> tuple[float, float, str]:
    """(seconds hidden behind compute, seconds not hidden) per micro-batch, and what they are."""
    t = estimator_facts()["throughput"]
    bw = t["link_gbps"]
    s, m, W = setup, setup.model, setup.world_size
    link = (bw["inter_node"] if s.hardware.nodes > 1 else bw[s.hardware.gpu.interconnect]) * 1e9
    h2d = bw["host_to_gpu"] * 1e9
    passes = 3 if s.grad_ckpt else 2            # forward, (recomputation,) backward
    T = s.trainable_params()
    fmt = s.weight_format if s.is_adapter else "bf16"
    weights = sum(base_weight_bytes(m, fmt).values())
    hidden = exposed = 0.0
    parts = []
    if W > 1 and s.parallel in ("zero3", "fsdp"):
        vol = weights * passes * (W - 1) / W + (2.0 * T * (W - 1) / W if s.method == "full" else 0.0)
        hidden += vol / link
        parts.append(f"all-gathers {vol / 1e9:,.1f} GB")
    elif W > 1:
        # gradients are reduced (and ZeRO-1/2 re-gather parameters) once per optimizer step
        vol = 2.0 * T * 2 * (W - 1) / W / s.grad_accum
        if s.parallel in ("zero1", "zero2"):
            vol += 2.0 * T * (W - 1) / W / s.grad_accum
        hidden += vol / link
        parts.append(f"gradient reduction {vol / 1e9:,.2f} GB")
    if s.offload in ("params", "all"):
        vol = weights / W * passes
        hidden += vol / h2d
        parts.append(f"parameters from host {vol / 1e9:,.1f} GB")
    if s.offload in ("optimizer", "all"):
        vol = 4.0 * T / W / s.grad_accum     # bf16 gradients out, bf16 parameters back
        step = T * s.hardware.gpus_per_node / W / t["cpu_optimizer_params_per_s"] / s.grad_accum
        hidden += vol / h2d
        exposed += step
        parts.append(f"CPU optimizer step {step:,.2f} s")
    return hidden, exposed, ", ".join(parts) or "no communication"


def throughput(setup: TrainSetup) -> tuple[float, float, list[str]]:
    """(tokens/s for the whole job, effective utilisation, the sentence stating it)."""
    t = estimator_facts()["throughput"]
    gpu = setup.hardware.gpu
    u, why = compute_utilisation(setup)
    tokens = setup.micro_batch * setup.seq_len
    fpt = flops_per_token(setup)
    compute = tokens * fpt / (gpu.bf16_tflops * 1e12 * u)
    hidden, exposed, comm_why = _communication(setup)
    step = max(compute, hidden) + t["exposed_overlap"] * min(compute, hidden) + exposed
    tps = setup.world_size * tokens / step
    eff = u * compute / step
    return tps, eff, [
        f"utilisation {eff:.2f} of the {gpu.bf16_tflops:.0f} TFLOP/s dense bf16 peak: compute {u:.2f} ({why}); "
        f"per micro-batch {compute:,.2f} s of compute against {comm_why}"
    ]


# ---- entry point ---------------------------------------------------------------------------------------


def usable_gpu_gib(memory_gib: float) -> float:
    r = estimator_facts()["usable_reserve"]
    return memory_gib - max(r["min_gib"], r["fraction"] * memory_gib)


def estimate(setup: TrainSetup, *, tokens: int | None = None, epochs: float = 1.0,
             stack: StackFacts | None = None) -> Estimate:
    """Estimate one configuration. `tokens`: training tokens per epoch (for hours and cost)."""
    validate_setup(setup)
    if tokens is not None and tokens < 0:
        raise UserError("--tokens must be >= 0")
    if epochs <= 0:
        raise UserError("--epochs must be > 0")
    stack = stack or StackFacts.axolotl()
    f = estimator_facts()
    mem = _memory(setup, stack)
    static = sum(mem.resident.values())
    totals = {p: static + mem.gradients_at[p] + sum(extra.values()) for p, extra in mem.phases.items()}
    if mem.load:
        totals["load"] = mem.load
    peak_phase = max(totals, key=totals.get)
    allocated = totals[peak_phase]
    frag = f["allocator_fragmentation"]
    if setup.offload in ("params", "all"):
        typical_frag = frag["offloaded_parameters"]
    elif setup.parallel in ("zero3", "fsdp"):
        typical_frag = frag["sharded_parameters"]
    else:
        typical_frag = frag["typical"]
    context = f["cuda_context_gib"] * GIB + (f["nccl_buffers_gib"] * GIB if setup.world_size > 1 else 0.0)
    needed_frag = allocated * frag["under_pressure"]

    if peak_phase == "load" and setup.is_adapter and setup.loads_whole_base_per_gpu and mem.load > mem.resident["weights"] * 1.5:
        breakdown = {"whole_base_at_load": mem.load}
    elif peak_phase == "load":
        breakdown = {"weights": mem.resident["weights"], "embedding_dtype_cast": mem.load - mem.resident["weights"]}
    else:
        breakdown = {k: v for k, v in mem.resident.items()}
        breakdown["gradients"] = mem.gradients_at[peak_phase]
        for k, v in mem.phases[peak_phase].items():
            breakdown[k] = breakdown.get(k, 0.0) + v
    breakdown["allocator_fragmentation"] = needed_frag
    breakdown["cuda_context"] = context
    breakdown = {k: v / GIB for k, v in breakdown.items() if v > 0}
    peak = (allocated + needed_frag + context) / GIB
    # the cache cannot grow past the card: near the limit PyTorch frees it and retries instead
    room = setup.hardware.gpu.memory_gib * GIB - context
    reserved = max(allocated + needed_frag, min(allocated * (1 + typical_frag), room))
    device = min(reserved + context + mem.paged, max(setup.hardware.gpu.memory_gib * GIB, reserved + context))
    usable = usable_gpu_gib(setup.hardware.gpu.memory_gib)

    host = {k: v / GIB for k, v in _host_ram(setup, mem).items() if v > 0}
    steady = sum(v for k, v in host.items() if k not in ("loading", "processes"))
    host_total = host.get("processes", 0.0) + max(host.get("loading", 0.0), steady)

    tps, u, why_u = throughput(setup)
    fpt = flops_per_token(setup)
    hours = cost = None
    if tokens is not None:
        hours = tokens * epochs / tps / 3600.0
        cost = hours * setup.hardware.usd_per_hour

    assumptions = _assumptions(setup, stack, peak_phase) + mem.assumptions + why_u
    return Estimate(
        setup=setup, breakdown=breakdown, peak_gpu_gib=peak, usable_gpu_gib=usable, fits=peak <= usable,
        host_ram_gib=host_total, host_breakdown=host, tokens_per_s=tps, mfu=u, tokens=tokens, epochs=epochs,
        hours=hours, cost_usd=cost, assumptions=assumptions, peak_phase=peak_phase,
        allocated_gib=allocated / GIB, reserved_gib=reserved / GIB, device_gib=device / GIB,
        paged_optimizer_gib=mem.paged / GIB,
        phases_gib={k: v / GIB for k, v in totals.items()}, flops_per_token=fpt,
    )


def _assumptions(setup: TrainSetup, stack: StackFacts, peak_phase: str) -> list[str]:
    f = estimator_facts()
    s = setup
    out = [
        "memory per GPU at the peak of a training step (peak moment: "
        + {"loss": "end of forward, logits and cross-entropy", "backward": "first layer's backward",
           "step": "optimizer step",
           "load": ("loading, before the base is sharded" if s.is_adapter and s.loads_whole_base_per_gpu
                    and s.parallel in ("zero3", "fsdp") else "loading, while embeddings are cast between dtypes")}[peak_phase] + ")",
        f"weights: decoder linears in {s.weight_format}; embeddings, lm_head and norms in 16-bit"
        + (" (fp32: prepare_model_for_kbit_training left them upcast)" if stack.kbit_embeddings_fp32 and s.is_adapter else ""),
        f"{s.micro_batch} x {s.seq_len} tokens per micro-batch per GPU"
        + (" (sample packing fills every row)" if s.sample_packing else " (every row padded to the sequence length)"),
        ("gradient checkpointing: each layer keeps its input; one layer is recomputed at a time"
         if s.grad_ckpt else "no gradient checkpointing: every layer keeps its full activations"),
        f"attention via {s.attn}: memory linear in the sequence length",
        f"cross-entropy '{stack.loss}': {f['loss_bytes_per_logit'][stack.loss]} bytes per logit "
        f"({s.model.vocab_size:,} x tokens)",
        f"CUDA context {f['cuda_context_gib']} GiB"
        + (f" + NCCL {f['nccl_buffers_gib']} GiB" if s.world_size > 1 else "")
        + f"; the run needs its allocated memory + {f['allocator_fragmentation']['under_pressure']:.0%} "
        f"(nvidia-smi typically shows {f['allocator_fragmentation']['typical']:.0%} more than allocated, "
        f"{f['allocator_fragmentation']['sharded_parameters']:.0%} under ZeRO-3/FSDP, while memory is plentiful)",
        f"host RAM per node: {f['host']['per_process_gib']} GiB per training process, plus loading and offloaded state",
    ]
    if s.is_adapter:
        out.append(
            f"LoRA r={s.lora_r} on {', '.join(s.lora_targets)}: {s.lora_param_count():,} trainable parameters "
            f"({'bf16 under DeepSpeed' if s.deepspeed_stage else stack.adapter_dtype}), "
            + ("dropout > 0 keeps a mask and a dropped copy of each adapted input" if stack.lora_dropout else "no dropout")
        )
    if s.optimizer in f["optimizers"]["paged"]:
        out.append(f"{s.optimizer} states live in CUDA unified memory: outside the peak (evicted to host RAM under pressure)")
    return out
