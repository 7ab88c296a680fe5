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

from dataclasses import dataclass, field

from ..errors import UserError
from .memory import (
    GIB, MOMENTS, MemoryTerms, StackFacts, base_weight_bytes, estimator_facts, layer_activation_bytes_per_token,
    layer_weight_bytes, matmul_params, memory_terms, parallelism_facts, tiled_mlp_shards,
)
from .train_setup import OPTIMIZER_STATE_BYTES, TrainSetup


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

    @property
    def margin_gib(self) -> float:
        """Usable GPU memory left at the peak (negative: short by that much)."""
        return self.usable_gpu_gib - self.peak_gpu_gib

    @property
    def verdict(self) -> str:
        """`fits`, `tight` (fits with less than `tight_margin` of the usable memory to spare: the
        estimator's own error could tip it) or `does not fit`."""
        if not self.fits:
            return "does not fit"
        return "tight" if self.margin_gib < estimator_facts()["tight_margin"] * self.usable_gpu_gib else "fits"

    def verdict_text(self) -> str:
        """The verdict with its margin, as the table and `check` print it."""
        if self.verdict == "does not fit":
            return f"does not fit: {-self.margin_gib:,.1f} GiB short"
        share = self.margin_gib / self.usable_gpu_gib
        return f"{self.verdict}: {self.margin_gib:,.1f} GiB ({share:.1%}) to spare"

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
            "verdict": self.verdict,
            "margin_gib": r(self.margin_gib),
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
    if setup.fsdp_version == 1 and setup.parallel != "fsdp":
        raise UserError(f"--fsdp-version 1 goes with --parallel fsdp, not {setup.parallel}")
    if setup.optimizer not in OPTIMIZER_STATE_BYTES:
        raise UserError(f"unknown optimizer {setup.optimizer!r}; use one of {', '.join(OPTIMIZER_STATE_BYTES)}")
    if setup.optimizer in mode.get("refused_optimizers", ()) and setup.fsdp_version == 2:
        raise UserError(
            f"Axolotl 0.19 refuses {setup.optimizer} with FSDP2; use adamw_torch_fused or paged_adamw_8bit"
        )
    _validate_long_context(setup)


def _validate_long_context(setup: TrainSetup) -> None:
    """Context/tensor/expert parallelism and the memory savers, as Axolotl 0.19 accepts them
    (axolotl/utils/schemas/validation.py: check_context_parallel_size, check_activation_offloading_wo_gc,
    check_tensor_parallel_size optimizers; integrations/liger/args.py; integrations/expert_parallel)."""
    s, ws = setup, setup.world_size
    cp, tp, rep, ep = s.context_parallel, s.tensor_parallel, s.dp_replicate, s.expert_parallel
    if ws % (cp * tp * rep):
        raise UserError(f"context parallel {cp} x tensor parallel {tp} x replicas {rep} must divide the "
                        f"{ws} GPUs of {s.hardware.label}")
    if rep > 1 and s.parallel != "fsdp":
        raise UserError("--dp-replicate (HSDP) goes with --parallel fsdp")
    if cp > 1 and s.attn != "flash_attention_2":
        raise UserError(f"context parallelism needs flash_attention_2 (ring attention), not {s.attn}")
    if cp > 1 and s.sample_packing and s.micro_batch > 1:
        raise UserError("context parallelism with sample packing needs micro-batch 1 (a ring-flash-attn requirement)")
    if tp > 1 and s.optimizer in ("paged_adamw_8bit", "adamw_8bit", "adamw_bnb_8bit"):
        raise UserError(f"Axolotl 0.19 refuses {s.optimizer} with tensor parallelism; use adamw_torch_fused")
    if tp > 1 and s.loss == "liger":
        raise UserError("Axolotl 0.19 refuses Liger's fused linear cross-entropy with tensor parallelism; use --loss cce")
    if ep > 1 and (not s.model.is_moe or ws % ep):
        raise UserError(f"--expert-parallel {ep} needs a mixture-of-experts model and a GPU count it divides "
                        f"({s.model.id} on {ws} GPUs)")
    if s.activation_offload != "none" and not s.grad_ckpt:
        raise UserError("activation offloading needs gradient checkpointing (Axolotl refuses it without)")
    if s.lora_expert_targets and (not s.is_adapter or not s.model.is_moe):
        raise UserError("LoRA on routed experts needs --method lora/qlora and a mixture-of-experts model")
    if s.quantize_experts and not (s.is_adapter and s.is_quantized and s.model.is_moe):
        raise UserError("quantize_moe_experts needs a 4/8-bit LoRA/QLoRA of a mixture-of-experts model")


# ---- host RAM ------------------------------------------------------------------------------------------


def _host_ram(setup: TrainSetup, mem: MemoryTerms) -> dict[str, float]:
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
    weights (full fine-tune only), 2N again when gradient checkpointing recomputes the forward (and a
    tiled MLP's backward its MLP), plus causal attention (4 x L x q x S/2 per forward) and the adapters'
    own matmuls. N: the matrices a token is multiplied with; a mixture of experts only its routed ones."""
    m = setup.model
    n = matmul_params(m, setup.head)
    attn_fwd = 4.0 * m.num_layers * m.q_dim * setup.seq_len / 2
    fwd = 2.0 * n + attn_fwd
    bwd_act = 2.0 * n + 2 * attn_fwd
    bwd_w = 2.0 * n if setup.method == "full" else 0.0
    recompute = fwd if setup.grad_ckpt else 0.0
    if setup.tiled_mlp and not setup.grad_ckpt:
        mlp = m.active_linear_params - m.num_layers * sum(a * b for a, b in m.attention_shapes().values())
        recompute = 2.0 * mlp
    lora = setup.lora_dense_param_count() + (setup.lora_expert_param_count() * m.experts_per_token / m.num_experts
                                             if m.is_moe else 0)
    adapters = 6.0 * lora + (2.0 * lora if setup.grad_ckpt else 0.0)
    return fwd + bwd_act + bwd_w + recompute + adapters


def compute_utilisation(setup: TrainSetup) -> tuple[float, str]:
    """Fraction of the bf16 peak the GPU's own compute reaches (before communication)."""
    t = estimator_facts()["throughput"]
    gpu = setup.hardware.gpu
    base = t["base_utilisation"].get(gpu.id, t["base_utilisation"]["default"])
    tokens = setup.tokens_per_gpu
    pts = t["tokens_per_microbatch"]
    fb = pts[0][1] if tokens <= pts[0][0] else pts[-1][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 < tokens <= x1:
            fb = y0 + (y1 - y0) * (tokens - x0) / (x1 - x0)
    compiled = t["torch_compile"] if setup.torch_compile else 1.0
    u = base * t["method"][setup.method] * fb * compiled
    return u, (f"{gpu.id} {base}, {setup.method} x{t['method'][setup.method]}, "
               f"{tokens:,} tokens per micro-batch x{fb:.2f}" + (f", torch.compile x{compiled}" if setup.torch_compile else ""))


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
    if s.context_parallel > 1:
        # ring attention: each layer's keys and values of the other ranks, forward and recomputation,
        # and back with their fp32 gradients in backward
        kv = 2.0 * s.micro_batch * s.seq_len * m.kv_dim * (s.context_parallel - 1) / s.context_parallel
        vol = m.num_layers * kv * (2.0 * (passes - 1) + 6.0)
        hidden += vol / link
        parts.append(f"ring attention {vol / 1e9:,.1f} GB")
    if s.tensor_parallel > 1:
        # two all-reduces of the layer's output per layer, forward (and recomputation) and backward
        tp = s.tensor_parallel
        vol = m.num_layers * 2 * passes * 2.0 * s.tokens_per_gpu * m.hidden_size * 2 * (tp - 1) / tp
        hidden += vol / link
        parts.append(f"tensor-parallel all-reduces {vol / 1e9:,.1f} GB")
    if s.expert_parallel > 1:
        # all-to-all dispatch and combine of each token's routed copies, every MoE layer and pass
        ep = s.expert_parallel
        vol = m.num_layers * passes * 2 * 2.0 * s.tokens_per_gpu * m.experts_per_token * m.hidden_size * (ep - 1) / ep
        hidden += vol / link
        parts.append(f"expert all-to-all {vol / 1e9:,.1f} GB")
    if s.activation_offload in ("cpu", "legacy", "disk"):
        vol = 2.0 * m.num_layers * 2.0 * s.tokens_per_gpu * m.hidden_size   # out in forward, back in backward
        if s.activation_offload == "legacy":
            exposed += vol / h2d
        else:
            hidden += vol / h2d
        parts.append(f"activations to host and back {vol / 1e9:,.1f} GB")
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
    tokens = setup.tokens_per_gpu
    fpt = flops_per_token(setup)
    compute = tokens * fpt / setup.tensor_parallel / (gpu.bf16_tflops * 1e12 * u)
    hidden, exposed, comm_why = _communication(setup)
    step = max(compute, hidden) + t["exposed_overlap"] * min(compute, hidden) + exposed
    tps = setup.data_parallel * setup.micro_batch * setup.seq_len / step
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
    mem = memory_terms(setup, stack)
    totals = {moment: mem.total(moment) for moment in MOMENTS}
    if mem.load:
        totals["load"] = sum(mem.load.values())
    peak_phase = max(totals, key=totals.get)
    allocated = totals[peak_phase]
    frag = f["allocator_fragmentation"]
    if setup.offload in ("params", "all"):
        typical_frag = frag["offloaded_parameters"]
    elif setup.parallel in ("zero3", "fsdp"):
        typical_frag = frag["sharded_parameters"]
    else:
        dequantizes = setup.is_quantized and stack.kbit_backend == "bitsandbytes"
        typical_frag = frag["typical"] + (frag["dequantized_weights"] if dequantizes else 0.0)
    context = f["cuda_context_gib"] * GIB + (f["nccl_buffers_gib"] * GIB if setup.world_size > 1 else 0.0)
    needed_frag = allocated * frag["under_pressure"]
    # batches of varying length leave cached blocks sized for earlier lengths that later, longer
    # batches cannot reuse: the cache holds more per token of the micro-batch (docs/hardware.md)
    varying = 0.0 if setup.fixed_length_batches else frag["variable_length"] * max(mem.token_bytes(m) for m in MOMENTS)

    breakdown = dict(mem.load) if peak_phase == "load" else mem.at(peak_phase)
    breakdown["allocator_fragmentation"] = needed_frag
    breakdown["cuda_context"] = context
    breakdown = {k: v / GIB for k, v in breakdown.items() if v > 0}
    peak = (allocated + needed_frag + context) / GIB
    # the cache cannot grow past the card: near the limit PyTorch frees it and retries instead
    room = setup.hardware.gpu.memory_gib * GIB - context
    reserved = max(allocated + needed_frag, min(allocated * (1 + typical_frag) + varying, room))
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

    assumptions = _assumptions(setup, stack, peak_phase) + mem.notes + why_u
    return Estimate(
        setup=setup, breakdown=breakdown, peak_gpu_gib=peak, usable_gpu_gib=usable, fits=peak <= usable,
        host_ram_gib=host_total, host_breakdown=host, tokens_per_s=tps, mfu=u, tokens=tokens, epochs=epochs,
        hours=hours, cost_usd=cost, assumptions=assumptions, peak_phase=peak_phase,
        allocated_gib=allocated / GIB, reserved_gib=reserved / GIB, device_gib=device / GIB,
        paged_optimizer_gib=mem.paged / GIB,
        phases_gib={k: v / GIB for k, v in totals.items()}, flops_per_token=fpt,
    )


def _loss_text(s: TrainSetup, stack: StackFacts) -> str:
    f = estimator_facts()
    loss = stack.loss if s.loss == "default" else s.loss
    if s.head == "score":
        return "a reward model's score head: one logit per token, no vocabulary-sized logits"
    if loss in f["fused_loss_hidden_bytes"]:
        name = {"cce": "Cut Cross Entropy", "liger": "Liger's fused linear cross-entropy"}[loss]
        return (f"{name}: the {s.model.vocab_size:,}-entry logits are never materialised "
                f"({f['fused_loss_hidden_bytes'][loss]} bytes per hidden element per token instead)")
    return f"cross-entropy '{loss}': {f['loss_bytes_per_logit'][loss]} bytes per logit ({s.model.vocab_size:,} x tokens)"


def _long_context_assumptions(s: TrainSetup) -> list[str]:
    """What the mixture of experts, the N-D parallelism and the memory savers mean for this estimate."""
    m, out = s.model, []
    if m.is_moe:
        from .memory import expert_format

        efmt = expert_format(s.weight_format if s.is_adapter else "bf16", s.quantize_experts)
        out.append(f"mixture of experts: all {m.num_experts} experts of each layer resident ({efmt}"
                   + (", transformers 5 keeps them as 3D parameters bitsandbytes does not quantize; "
                      "quantize_moe_experts would" if s.is_quantized and not s.quantize_experts else "")
                   + f"), {m.experts_per_token} computing each token ({m.active_parameter_count() / 1e9:,.1f}B of "
                   f"{m.parameter_count() / 1e9:,.1f}B parameters per token)"
                   + (f"; LoRA on the experts' {', '.join(s.lora_expert_targets)}" if s.lora_expert_targets else ""))
    if s.context_parallel > 1:
        out.append(f"context parallelism {s.context_parallel}: each sequence split over {s.context_parallel} GPUs "
                   f"({s.tokens_per_gpu:,} tokens of a micro-batch per GPU), ring attention "
                   + ("varlen_llama3 (K/V all-gathered one KV head at a time)" if s.sample_packing else "batch_ring"))
    if s.tensor_parallel > 1:
        out.append(f"tensor parallelism {s.tensor_parallel}: attention heads and MLP columns (and the lm_head) split over "
                   f"{s.tensor_parallel} GPUs; embeddings, norms and the residual stream whole on each")
    if s.expert_parallel > 1:
        out.append(f"expert parallelism {s.expert_parallel}: the routed experts split over {s.expert_parallel} GPUs")
    if s.dp_replicate > 1:
        out.append(f"HSDP: FSDP shards within groups of {s.world_size // (s.dp_replicate * s.tensor_parallel)} GPUs, "
                   f"replicated {s.dp_replicate} times")
    if s.tiled_mlp:
        out.append(f"tiled MLP: the MLP runs on {tiled_mlp_shards(s)} shard(s) of the sequence and keeps only its input; "
                   "backward recomputes it shard by shard")
    if s.activation_offload != "none":
        where = "disk" if s.activation_offload == "disk" else "host RAM"
        out.append(f"activation offloading ({s.activation_offload}): each checkpointed layer input goes to {where}; "
                   "a few layers' stay on the GPU in flight")
    return out


def _assumptions(setup: TrainSetup, stack: StackFacts, peak_phase: str) -> list[str]:
    f = estimator_facts()
    s = setup
    out = [
        "memory per GPU at the peak of a training step (peak moment: "
        + {"loss": "end of forward, logits and cross-entropy", "backward": "first layer's backward",
           "step": "optimizer step",
           "load": ("loading, before the base is sharded" if s.is_adapter and s.loads_whole_base_per_gpu
                    and s.parallel in ("zero3", "fsdp") else "loading, while embeddings are cast between dtypes")}[peak_phase] + ")",
        f"weights: decoder linears in {s.weight_format}; "
        + ("lm_head too; embeddings and norms in 16-bit" if stack.kbit_head and s.is_quantized and s.model.lm_head_params
           else "embeddings, lm_head and norms in 16-bit")
        + (" (fp32: prepare_model_for_kbit_training left them upcast)" if stack.kbit_embeddings_fp32 and s.is_adapter else ""),
        f"{s.micro_batch} x {s.seq_len} tokens per micro-batch per GPU"
        + (" (sample packing fills every row)" if s.sample_packing else
           " (every row padded to the sequence length)" if s.pad_to_sequence_len else
           " (the longest batch; batches vary in length, which fragments the cache: reserved and nvidia-smi "
           f"grow by {f['allocator_fragmentation']['variable_length']:.0%} more of the per-token memory)"),
        ("gradient checkpointing: each layer keeps its input; one layer is recomputed at a time"
         if s.grad_ckpt else "no gradient checkpointing: every layer keeps its full activations"),
        f"attention via {s.attn}: memory linear in the sequence length",
        _loss_text(s, stack),
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
    if s.deepspeed_stage and s.deepspeed.optimizer_block:
        out.append("the DeepSpeed config has an `optimizer` block: DeepSpeed builds its own fused Adam "
                   "(fp32 moments, no step temporaries) in place of the recipe's optimizer")
    elif s.optimizer in f["optimizers"]["paged"]:
        out.append(f"{s.optimizer} states live in CUDA unified memory: outside the peak (evicted to host RAM under pressure)")
    if s.torch_compile:
        out.append("torch_compile: Inductor recomputes pointwise intermediates (norm upcasts, SiLU) in backward "
                   "instead of keeping them, and runs faster")
    out += _long_context_assumptions(s)
    if s.parallel == "fsdp" and not stack.fsdp_fp32_trainable:
        out.append("FSDP in pure bf16: trainable parameters, gradients and optimizer states stay bf16 (no fp32 master)")
    return out
