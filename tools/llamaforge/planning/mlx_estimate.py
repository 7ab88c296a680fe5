"""MLX-LM fine-tuning on an Apple-Silicon Mac: memory, speed and time of one `MlxSetup`, and the
plan that picks the method, batch and gradient checkpointing that fit.

Memory (unified memory the GPU may use, facts/apple_silicon.yaml `gpu_share`):
  weights      16-bit for LoRA; for QLoRA every Linear and Embedding in `bits` bits plus a 16-bit
               scale and bias per group of 64 (mlx_lm.convert -q), norms 16-bit
  adapters     float32 LoRA weights + their gradients + Adam's two moments: 16 bytes per parameter
  activations  what autograd keeps for backward in each LoRA-adapted layer, for the longest batch
               (batch x max_seq_length tokens: MLX-LM pads a batch to its longest row); with
               grad_checkpoint only each layer's input, plus one layer recomputed
  logits       the batch's logits and cross-entropy's float32 working copies
  process      Python, Metal, the allocator
Speed: compute bound. FLOPs per trained token (forward through every layer, backward down to the
first adapted layer, the recomputation of grad_checkpoint) over the chip's measured matrix-multiply
rate (llama.cpp prompt processing on that chip) times MLX-LM's training efficiency, calibrated on
MLX-LM's published speeds (tests/calibration/serving_cases.yaml, kind mlx_train).

Pure: no I/O beyond reading the packaged YAML facts once; no mlx import."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache

from ..errors import Infeasible, UserError
from .catalog import AppleMachine, ModelSpec, apple_facts, get_model
from .train_setup import ALL_LINEAR

GIB = float(2**30)
MLX_METHODS = ("lora", "qlora")


@lru_cache(maxsize=1)
def mlx_facts() -> dict:
    return apple_facts()["mlx"]


@dataclass(frozen=True)
class MlxSetup:
    model: ModelSpec
    machine: AppleMachine
    method: str = "lora"                 # lora: 16-bit base; qlora: an mlx_lm.convert -q base
    bits: int = 16                       # 16 for lora; 4 or 8 for qlora
    lora_rank: int = 16
    lora_layers: int = -1                # MLX-LM's --num-layers: the last N layers (-1: all)
    lora_keys: tuple[str, ...] = ALL_LINEAR
    batch_size: int = 4
    seq_len: int = 2048                  # max_seq_length: the longest batch the run meets
    tokens_per_row: int | None = None    # mean tokens of a row (speed); None: seq_len
    grad_checkpoint: bool = False
    wired_limit_gib: float | None = None

    def __post_init__(self) -> None:
        if self.method not in MLX_METHODS:
            raise UserError(f"unknown MLX method {self.method!r}; use lora or qlora")
        if self.method == "lora" and self.bits != 16:
            object.__setattr__(self, "bits", 16)
        if self.method == "qlora" and self.bits not in (4, 8):
            raise UserError(f"QLoRA on MLX quantizes the base to 4 or 8 bits, not {self.bits}")
        if self.lora_rank < 1 or self.batch_size < 1 or self.seq_len < 1:
            raise UserError("LoRA rank, batch size and sequence length must be >= 1")
        if self.lora_layers == 0 or self.lora_layers > self.model.num_layers:
            raise UserError(f"--num-layers {self.lora_layers}: {self.model.id} has {self.model.num_layers} layers (-1: all)")

    @property
    def trained_layers(self) -> int:
        return self.model.num_layers if self.lora_layers < 0 else self.lora_layers

    @property
    def method_label(self) -> str:
        return "LoRA (16-bit base)" if self.method == "lora" else f"QLoRA ({self.bits}-bit MLX base)"

    def with_(self, **changes) -> MlxSetup:
        return replace(self, **changes)

    def lora_params(self) -> int:
        shapes = self.model.linear_shapes()
        return self.trained_layers * sum(self.lora_rank * (shapes[k][0] + shapes[k][1]) for k in self.lora_keys)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.id
        d["machine"] = self.machine.label
        d["lora_keys"] = list(self.lora_keys)
        d["trainable_params"] = self.lora_params()
        return d


@dataclass
class MlxEstimate:
    setup: MlxSetup
    breakdown: dict[str, float]          # GiB by component
    peak_gib: float
    usable_gib: float
    fits: bool
    tokens_per_s: float
    flops_per_token: float
    tokens: int | None
    epochs: float
    hours: float | None
    assumptions: list[str]

    def to_dict(self) -> dict:
        r = lambda x: None if x is None else round(float(x), 3)  # noqa: E731
        return {"setup": self.setup.to_dict(), "breakdown": {k: r(v) for k, v in self.breakdown.items()},
                "peak_gib": r(self.peak_gib), "usable_gib": r(self.usable_gib), "fits": self.fits,
                "tokens_per_s": r(self.tokens_per_s), "flops_per_token": float(self.flops_per_token),
                "tokens": self.tokens, "epochs": self.epochs, "hours": r(self.hours),
                "assumptions": list(self.assumptions)}


# ---- the machine's speed -----------------------------------------------------------------------------


def forward_flops_per_token(model: ModelSpec, context: int) -> float:
    """One forward pass: 2 x (decoder linears + lm_head) plus causal attention at `context` tokens."""
    matmul = model.linear_params + model.vocab_size * model.hidden_size
    return 2.0 * matmul + 4.0 * model.num_layers * model.q_dim * context / 2


def machine_matmul_flops(machine: AppleMachine) -> float:
    """The chip's effective matrix-multiply rate: its measured prompt-processing speed (llama.cpp,
    512-token prompt) times the FLOPs of that forward pass."""
    rate = machine.prompt_rate
    return float(rate["tokens_per_s"]) * forward_flops_per_token(get_model(rate["model"]), 512)


def training_flops_per_token(s: MlxSetup) -> float:
    m = s.model
    row = s.tokens_per_row or s.seq_len
    per_layer_linear = m.params_per_layer_linear
    attn_per_layer = 4.0 * m.q_dim * row / 2
    forward = forward_flops_per_token(m, row)
    k = s.trained_layers
    # backward: activation gradients from the head down to the first adapted layer (the frozen
    # layers below it need none), the lm_head's input gradient, the adapters' weight gradients
    backward = k * (2.0 * per_layer_linear + 2 * attn_per_layer) + 2.0 * m.vocab_size * m.hidden_size + 4.0 * s.lora_params()
    recompute = k * (2.0 * per_layer_linear + attn_per_layer) if s.grad_checkpoint else 0.0
    return forward + backward + recompute


# ---- the estimate -------------------------------------------------------------------------------------


def weight_bytes(s: MlxSetup) -> float:
    m = s.model
    quantizable = m.linear_params + m.embedding_params + m.lm_head_params
    if s.bits == 16:
        return (quantizable + m.norm_params) * 2.0
    q = mlx_facts()["quantization"]
    per_weight = s.bits / 8.0 + q["scale_bias_bytes"] / q["group_size"]
    return quantizable * per_weight + m.norm_params * 2.0


def estimate_mlx(s: MlxSetup, *, tokens: int | None = None, epochs: float = 1.0) -> MlxEstimate:
    f = mlx_facts()
    m = s.model
    batch_tokens = s.batch_size * s.seq_len
    a = f["layer_activation_bytes"]
    per_layer_token = a["h"] * m.hidden_size + a["q"] * m.q_dim + a["kv"] * m.kv_dim + a["i"] * m.intermediate_size
    if s.grad_checkpoint:
        activations = (s.trained_layers * 2.0 * m.hidden_size + per_layer_token) * batch_tokens
    else:
        activations = s.trained_layers * per_layer_token * batch_tokens
    breakdown = {
        "weights": weight_bytes(s) / GIB,
        "adapters_and_optimizer": s.lora_params() * f["trainable_bytes_per_param"] / GIB,
        "activations": activations / GIB,
        "logits": batch_tokens * m.vocab_size * f["logit_bytes"] / GIB,
        "process": float(f["process_overhead_gib"]),
    }
    peak = sum(breakdown.values())
    usable = s.machine.gpu_usable_gib(s.wired_limit_gib)
    fpt = training_flops_per_token(s)
    rate = machine_matmul_flops(s.machine) * f["training_efficiency"] * (f["quantized_speed_factor"] if s.bits < 16 else 1.0)
    tps = rate / fpt
    hours = tokens * epochs / tps / 3600 if tokens is not None else None
    row = s.tokens_per_row or s.seq_len
    share = (f"{s.wired_limit_gib:g} GiB (your iogpu.wired_limit_mb)" if s.wired_limit_gib is not None else
             f"{usable:.0f} GiB: macOS's default {s.machine.default_gpu_share():.0%} of {s.machine.memory_gib:g} GiB "
             f"(raise it with `sudo sysctl iogpu.wired_limit_mb={int((s.machine.memory_gib - apple_facts()['gpu_share']['os_reserve_gib']) * 1024)}`)")
    assumptions = [
        f"MLX-LM on {s.machine.name}: the GPU may use {share}",
        f"{s.method_label}: " + ("16-bit weights" if s.bits == 16 else
                                 f"every Linear and Embedding in {s.bits} bits + a 16-bit scale and bias per 64 weights "
                                 "(mlx_lm.convert -q)"),
        f"LoRA r={s.lora_rank} on {', '.join(s.lora_keys)} of the last {s.trained_layers} of {m.num_layers} layers: "
        f"{s.lora_params():,} float32 parameters, 16 bytes each with gradients and Adam",
        f"batch {s.batch_size} x {s.seq_len} tokens at the longest (MLX-LM pads a batch to its longest row)"
        + ("; grad_checkpoint: each layer keeps its input and is recomputed in backward" if s.grad_checkpoint else
           "; no gradient checkpointing"),
        f"speed: {fpt / 1e9:,.1f} GFLOP per trained token (rows of ~{row} tokens) at {f['training_efficiency']:.0%} of the "
        f"chip's measured {machine_matmul_flops(s.machine) / 1e12:.1f} TFLOP/s ({s.machine.prompt_rate['source']})"
        + (f", x{f['quantized_speed_factor']} for quantized matmuls" if s.bits < 16 else ""),
        "not calibrated against a published MLX peak-memory log (none gives its row lengths): memory is arithmetic; "
        "speed is calibrated on two published MLX-LM speeds (docs/hardware.md)",
    ]
    return MlxEstimate(setup=s, breakdown=breakdown, peak_gib=peak, usable_gib=usable, fits=peak <= usable,
                       tokens_per_s=tps, flops_per_token=fpt, tokens=tokens, epochs=epochs, hours=hours,
                       assumptions=assumptions)


# ---- the plan ----------------------------------------------------------------------------------------


@dataclass
class MlxPlan:
    estimate: MlxEstimate
    reasons: list[str]
    rejected: list[dict]

    @property
    def setup(self) -> MlxSetup:
        return self.estimate.setup

    def to_dict(self) -> dict:
        return {"setup": self.setup.to_dict(), "estimate": self.estimate.to_dict(), "reasons": list(self.reasons),
                "rejected": list(self.rejected)}


def _method_variants(method: str | None, bits: int | None) -> list[tuple[str, int]]:
    if method == "lora":
        return [("lora", 16)]
    if method == "qlora":
        return [("qlora", bits)] if bits else [("qlora", 8), ("qlora", 4)]
    return [("lora", 16), ("qlora", 8), ("qlora", 4)]


def plan_mlx(model: ModelSpec, machine: AppleMachine, *, method: str | None = None, bits: int | None = None,
             seq_len: int = 2048, lora_rank: int = 16, lora_layers: int = -1, batch_size: int | None = None,
             tokens_per_row: int | None = None, tokens: int | None = None, epochs: float = 1.0,
             wired_limit_gib: float | None = None) -> MlxPlan:
    """The most precise method that fits (16-bit LoRA, then 8-bit, then 4-bit QLoRA), at the largest
    batch of 4, 2, 1 that fits without gradient checkpointing, else with it."""
    if method is not None and method not in MLX_METHODS:
        raise UserError(f"unknown method {method!r} for MLX-LM; use lora or qlora (full fine-tuning is not planned on a Mac)")
    if model.is_moe:
        raise Infeasible(f"{model.id} is a mixture of experts: the MLX-LM estimate models dense decoders only")
    batches = [batch_size] if batch_size else [4, 2, 1]
    margin = mlx_facts()["planner_memory_margin"]
    rejected: list[dict] = []
    for meth, b in _method_variants(method, bits):
        for ckpt in (False, True):
            for bs in batches:
                s = MlxSetup(model=model, machine=machine, method=meth, bits=b, lora_rank=lora_rank,
                             lora_layers=lora_layers, batch_size=bs, seq_len=seq_len, tokens_per_row=tokens_per_row,
                             grad_checkpoint=ckpt, wired_limit_gib=wired_limit_gib)
                est = estimate_mlx(s, tokens=tokens, epochs=epochs)
                label = f"{s.method_label}, batch {bs}{', grad_checkpoint' if ckpt else ''}"
                if est.peak_gib <= est.usable_gib * (1 - margin):
                    reasons = [
                        f"{s.method_label}: the most precise base that fits"
                        + (" (as asked)" if method else " (16-bit LoRA, then 8-bit, then 4-bit QLoRA)"),
                        f"batch {bs}" + (", gradient checkpointing on: without it no batch fits" if ckpt else
                                         ", no gradient checkpointing needed"),
                        f"peak ~{est.peak_gib:.0f} GiB of the {est.usable_gib:.0f} GiB the GPU may use "
                        f"({margin:.0%} kept free for estimate error)",
                    ]
                    return MlxPlan(estimate=est, reasons=reasons, rejected=rejected)
                rejected.append({"setup": label, "why": f"needs ~{est.peak_gib:,.0f} GiB, over the "
                                 f"{est.usable_gib * (1 - margin):,.0f} GiB the plan allows ({est.usable_gib:,.0f} usable less {margin:.0%})",
                                 "peak_gib": round(est.peak_gib, 1)})
    raise Infeasible(f"{model.id} does not fit on {machine.label} with MLX-LM (4-bit QLoRA, batch 1, gradient "
                     f"checkpointing, sequence {seq_len}: {rejected[-1]['why']})", details={"rejected": rejected})


__all__ = ["MlxSetup", "MlxEstimate", "MlxPlan", "estimate_mlx", "plan_mlx", "machine_matmul_flops",
           "training_flops_per_token", "forward_flops_per_token", "mlx_facts", "MLX_METHODS"]
