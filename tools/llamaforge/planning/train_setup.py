"""`TrainSetup`: one fine-tuning configuration as LlamaForge reasons about it — model, hardware,
method, parallelism, offload, batch shape, memory savers. The estimator prices it, the planner
chooses it, the renderer writes it as an Axolotl recipe, `check` reconstructs it from a recipe.

Pure data; no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from ..errors import UserError
from .catalog import Hardware, ModelSpec

Method = Literal["full", "lora", "qlora"]
Parallel = Literal["single", "ddp", "zero1", "zero2", "zero3", "fsdp"]
Offload = Literal["none", "optimizer", "params", "all"]
WeightFormat = Literal["fp32", "bf16", "int8", "nf4", "nf4_dq"]

METHODS: tuple[str, ...] = ("full", "lora", "qlora")
ACTIVATION_OFFLOADS: tuple[str, ...] = ("none", "cpu", "legacy", "disk")
LOSSES: tuple[str, ...] = ("default", "chunked", "cce", "liger")
HEADS: tuple[str, ...] = ("lm", "score")
EXPERT_LORA_TARGETS: tuple[str, ...] = ("gate_up_proj", "down_proj")
PARALLELS: tuple[str, ...] = ("single", "ddp", "zero1", "zero2", "zero3", "fsdp")
OFFLOADS: tuple[str, ...] = ("none", "optimizer", "params", "all")
ATTN_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_LINEAR = ("gate_proj", "up_proj", "down_proj")
ALL_LINEAR = ATTN_LINEAR + MLP_LINEAR

# Optimizer names as Axolotl 0.19 spells them, with the bytes of state they keep per trainable
# parameter (besides the fp32/bf16 master copy, which the estimator accounts separately).
OPTIMIZER_STATE_BYTES: dict[str, float] = {
    "adamw_torch": 8.0,
    "adamw_torch_fused": 8.0,
    "adamw_torch_4bit": 1.0,
    "adamw_torch_8bit": 2.0,
    "adamw_bnb_8bit": 2.0,
    "adamw_8bit": 2.0,
    "paged_adamw_8bit": 2.0,
    "paged_adamw_32bit": 8.0,
    "adafactor": 4.0,
    "sgd": 4.0,
    "lion_pytorch": 4.0,
    "ademamix_8bit": 3.0,
    "adopt_adamw": 8.0,
    "came_pytorch": 8.0,
    "muon": 4.0,
}
PAGED_OPTIMIZERS = frozenset({"paged_adamw_8bit", "paged_adamw_32bit"})


@dataclass(frozen=True)
class DeepSpeedSettings:
    """The DeepSpeed JSON values that decide GPU memory beyond the ZeRO stage and offload. Sizes are
    elements; "auto" is what transformers fills in (reduce_bucket_size = h^2, prefetch = 0.9 h^2).
    The defaults are LlamaForge's templates/deepspeed/zero.json.j2; `recipe_config.deepspeed_settings`
    reads them from any DeepSpeed JSON, DeepSpeed's own defaults filling the keys it leaves out."""

    optimizer_block: bool = False                 # an `optimizer` block: DeepSpeed builds FusedAdam/CPUAdam itself
    # None: as the template writes it ("auto" for ZeRO-2/3; left out, so DeepSpeed's 5e8, for ZeRO-1)
    reduce_bucket_size: int | str | None = None
    allgather_bucket_size: int = 500_000_000      # ZeRO-1/2 all-gather of the updated parameters
    overlap_comm: bool = True
    prefetch_bucket_size: int | str = "auto"      # stage3_prefetch_bucket_size
    max_live_parameters: int = 1_000_000_000      # stage3_max_live_parameters
    max_reuse_distance: int = 1_000_000_000       # stage3_max_reuse_distance
    sub_group_size: int = 1_000_000_000           # ZeRO-3 runs the optimizer step one sub-group at a time

    def __post_init__(self) -> None:
        for name in ("reduce_bucket_size", "prefetch_bucket_size"):
            value = getattr(self, name)
            if value not in ("auto", None) and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise UserError(f"deepspeed {name} must be a number of elements or \"auto\", not {value!r}")
        for name in ("allgather_bucket_size", "max_live_parameters", "max_reuse_distance", "sub_group_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise UserError(f"deepspeed {name} must be a number of elements >= 0, not {value!r}")


def parse_lora_targets(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """`attn` | `all` | `q_proj,v_proj,...` -> a tuple of module names in canonical order."""
    if isinstance(text, (list, tuple)):
        names = [str(t).strip() for t in text]
    else:
        key = text.strip().lower()
        if key in ("all", "all-linear", "linear"):
            return ALL_LINEAR
        if key in ("attn", "attention"):
            return ATTN_LINEAR
        if key == "mlp":
            return MLP_LINEAR
        names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in ALL_LINEAR]
    if unknown or not names:
        raise UserError(
            f"unknown LoRA target(s) {', '.join(unknown) or '(none)'}; use attn, all, mlp or a "
            f"comma list of {', '.join(ALL_LINEAR)}"
        )
    return tuple(n for n in ALL_LINEAR if n in names)


def default_weight_format(method: str) -> str:
    return "nf4_dq" if method == "qlora" else "bf16"


@dataclass(frozen=True)
class TrainSetup:
    model: ModelSpec
    hardware: Hardware
    method: str = "lora"                     # Method
    parallel: str = "single"                 # Parallel
    offload: str = "none"                    # Offload
    weight_format: str = ""                  # WeightFormat; "" = the method's default
    lora_r: int = 16
    lora_alpha: int | None = None            # None = 2 * lora_r
    lora_targets: tuple[str, ...] = ALL_LINEAR
    seq_len: int = 2048
    micro_batch: int = 1
    grad_accum: int = 1
    grad_ckpt: bool = True
    optimizer: str = "adamw_torch_fused"
    attn: str = "flash_attention_2"          # flash_attention_2 | sdpa | eager
    sample_packing: bool = True
    # FSDP only. 2 (Axolotl's default) unless the base is 4/8-bit and too large to load whole onto
    # one GPU: then 1, with cpu_ram_efficient_loading + qlora_sharded_model_loading, the only
    # Axolotl 0.19 path that quantizes and shards the base layer by layer (see facts/parallelism.yaml)
    fsdp_version: int = 2
    # Axolotl `torch_compile: true`: the model (its loss included) runs through torch.compile/Inductor
    torch_compile: bool = False
    # every row padded to seq_len (Axolotl pad_to_sequence_len; sample packing fills rows to it);
    # None = the same as sample_packing, as LlamaForge's recipes set it. Unpacked, unpadded batches
    # vary in length from step to step, which fragments PyTorch's cached memory (docs/hardware.md)
    pad_to_sequence_len: bool | None = None
    deepspeed: DeepSpeedSettings = field(default_factory=DeepSpeedSettings)
    # ---- Axolotl's parallelism beyond data parallel (docs/hardware.md, "Long context and N-D parallelism")
    context_parallel: int = 1        # context_parallel_size: each sequence split over this many GPUs (ring attention)
    tensor_parallel: int = 1         # tensor_parallel_size: attention heads and MLP columns split over this many GPUs
    expert_parallel: int = 1         # expert_parallel_size: routed experts split over this many GPUs
    dp_replicate: int = 1            # dp_replicate_size: FSDP shards within groups, replicated across them (HSDP)
    # ---- memory savers
    tiled_mlp: bool = False          # tiled_mlp: the MLP runs on sequence shards, its activations not kept
    tiled_mlp_shards: int = 0        # tiled_mlp_num_shards; 0: Axolotl's default, ceil(tokens / 32768)
    activation_offload: str = "none"  # activation_offloading: checkpointed layer inputs to CPU RAM (cpu: overlapped copies; legacy: synchronous) or disk
    loss: str = "default"            # default (the stack's cross-entropy) | chunked | cce (Cut Cross Entropy) | liger (fused linear CE)
    head: str = "lm"                 # lm: the vocabulary's logits; score: a reward model's one-label head
    quantize_experts: bool = False   # quantize_moe_experts: routed experts quantized too (else bf16 under a 4/8-bit base)
    lora_expert_targets: tuple[str, ...] = ()   # lora_target_parameters on the routed experts (gate_up_proj, down_proj)
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.parallel not in PARALLELS:
            raise UserError(f"unknown parallelism {self.parallel!r}; use one of {', '.join(PARALLELS)}")
        if self.offload not in OFFLOADS:
            raise UserError(f"unknown offload {self.offload!r}; use one of {', '.join(OFFLOADS)}")
        if not self.weight_format:
            object.__setattr__(self, "weight_format", default_weight_format(self.method))
        if self.seq_len < 1 or self.micro_batch < 1 or self.grad_accum < 1:
            raise UserError("sequence length, micro-batch and gradient accumulation must be >= 1")
        if self.method != "full" and self.lora_r < 1:
            raise UserError("--lora-r must be >= 1")
        if self.fsdp_version not in (1, 2):
            raise UserError(f"fsdp_version must be 1 or 2, not {self.fsdp_version}")
        for name in ("context_parallel", "tensor_parallel", "expert_parallel", "dp_replicate"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', ' ')} size must be >= 1, not {getattr(self, name)}")
        if self.tiled_mlp_shards < 0:
            raise UserError(f"tiled MLP shards must be >= 0 (0: Axolotl's default), not {self.tiled_mlp_shards}")
        for name, allowed in (("activation_offload", ACTIVATION_OFFLOADS), ("loss", LOSSES), ("head", HEADS)):
            if getattr(self, name) not in allowed:
                raise UserError(f"unknown {name.replace('_', ' ')} {getattr(self, name)!r}; use one of {', '.join(allowed)}")
        unknown = [t for t in self.lora_expert_targets if t not in EXPERT_LORA_TARGETS]
        if unknown:
            raise UserError(f"unknown expert LoRA target(s) {', '.join(unknown)}; use {', '.join(EXPERT_LORA_TARGETS)}")

    # ---- derived ----------------------------------------------------------------------------
    @property
    def is_adapter(self) -> bool:
        return self.method in ("lora", "qlora")

    @property
    def alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_r

    @property
    def world_size(self) -> int:
        return self.hardware.world_size

    @property
    def data_parallel(self) -> int:
        """Ranks that see different sequences: context and tensor parallel groups share theirs."""
        return max(1, self.world_size // (self.context_parallel * self.tensor_parallel))

    @property
    def tokens_per_gpu(self) -> int:
        """Tokens of one micro-batch on one GPU: a context-parallel group splits each sequence."""
        return -(-self.micro_batch * self.seq_len // self.context_parallel)

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step: micro-batch x accumulation x data-parallel ranks."""
        return self.micro_batch * self.grad_accum * self.data_parallel

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    @property
    def fixed_length_batches(self) -> bool:
        """Every micro-batch has seq_len tokens per row (packed, or padded to the sequence length)."""
        return self.sample_packing or bool(self.pad_to_sequence_len)

    @property
    def is_quantized(self) -> bool:
        return self.weight_format in ("int8", "nf4", "nf4_dq")

    @property
    def loads_whole_base_per_gpu(self) -> bool:
        """Axolotl 0.19 places a 4/8-bit base whole on every GPU while loading (bitsandbytes
        quantizes it there) and only ZeRO-3/FSDP2 shard it afterwards; FSDP1 with sharded quantized
        loading is the exception."""
        return self.is_quantized and not (self.parallel == "fsdp" and self.fsdp_version == 1)

    @property
    def deepspeed_stage(self) -> int | None:
        return {"zero1": 1, "zero2": 2, "zero3": 3}.get(self.parallel)

    def lora_param_count(self) -> int:
        """Trainable LoRA parameters: r x (in + out) for each targeted linear of each layer, and on
        targeted routed experts r x (in + out) per expert (PEFT's target_parameters)."""
        return self.lora_dense_param_count() + self.lora_expert_param_count()

    def lora_dense_param_count(self, model: ModelSpec | None = None) -> int:
        if not self.is_adapter:
            return 0
        m = model or self.model
        shapes = m.linear_shapes()
        per_layer = sum(self.lora_r * (shapes[t][0] + shapes[t][1]) for t in self.lora_targets if t in shapes)
        return per_layer * m.num_layers

    def lora_expert_param_count(self, model: ModelSpec | None = None) -> int:
        m = model or self.model
        if not self.is_adapter or not m.is_moe:
            return 0
        e = m.expert_shapes()
        shapes = {"gate_up_proj": (e["gate_proj"][0], 2 * e["gate_proj"][1]), "down_proj": e["down_proj"]}
        per_layer = sum(self.lora_r * m.num_experts * (shapes[t][0] + shapes[t][1]) for t in self.lora_expert_targets)
        return per_layer * m.num_layers

    def trainable_params(self) -> int:
        return self.lora_param_count() if self.is_adapter else self.model.parameter_count()

    def with_(self, **changes) -> TrainSetup:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.id
        d["hardware"] = self.hardware.to_dict()
        d["lora_targets"] = list(self.lora_targets)
        d["lora_alpha"] = self.alpha if self.is_adapter else None
        d["global_batch"] = self.global_batch
        d["trainable_params"] = self.trainable_params()
        d["notes"] = list(self.notes)
        return d


def estimate_cli_args(setup: TrainSetup, *, stage: str = "sft", tokens: str | None = "1B") -> list[str]:
    """The `llamaforge estimate` command line that prices exactly `setup` (what a recipe header prints,
    so that its figures can be reproduced). Flags at their default are left out."""
    s = setup
    flash = s.hardware.gpu.supports_flash_attention
    args = ["llamaforge", "estimate", "--model", s.model.id, "--method", s.method, "--gpus", s.hardware.label]
    default_parallel = "single" if s.world_size == 1 else "ddp"
    if s.parallel != default_parallel:
        args += ["--parallel", s.parallel]
    if s.parallel == "fsdp" and s.fsdp_version != 2:
        args += ["--fsdp-version", str(s.fsdp_version)]
    if s.offload != "none":
        args += ["--offload", s.offload]
    if s.is_adapter:
        if s.lora_r != 16:
            args += ["--lora-r", str(s.lora_r)]
        if tuple(s.lora_targets) != ALL_LINEAR:
            args += ["--lora-targets", ",".join(s.lora_targets)]
    if s.weight_format != default_weight_format(s.method):
        args += ["--weight-format", s.weight_format]
    args += ["--seq-len", str(s.seq_len), "--micro-batch", str(s.micro_batch), "--grad-accum", str(s.grad_accum)]
    if not s.grad_ckpt:
        args.append("--no-grad-ckpt")
    if s.optimizer != "adamw_torch_fused":
        args += ["--optimizer", s.optimizer]
    if s.attn != ("flash_attention_2" if flash else "sdpa"):
        args += ["--attn", s.attn]
    if stage == "sft" and s.sample_packing != (s.attn == "flash_attention_2"):
        args.append("--sample-packing" if s.sample_packing else "--no-sample-packing")
    if stage == "sft" and not s.sample_packing and s.pad_to_sequence_len:
        args.append("--pad-to-sequence-len")
    if s.torch_compile:
        args.append("--torch-compile")
    for flag, value in (("--context-parallel", s.context_parallel), ("--tensor-parallel", s.tensor_parallel),
                        ("--expert-parallel", s.expert_parallel), ("--dp-replicate", s.dp_replicate)):
        if value != 1:
            args += [flag, str(value)]
    if s.tiled_mlp:
        args.append("--tiled-mlp")
        if s.tiled_mlp_shards:
            args += ["--tiled-mlp-shards", str(s.tiled_mlp_shards)]
    if s.activation_offload != "none":
        args += ["--activation-offload", s.activation_offload]
    if s.loss != "default":
        args += ["--loss", s.loss]
    if s.quantize_experts:
        args.append("--quantize-experts")
    if s.lora_expert_targets:
        args += ["--lora-expert-targets", ",".join(s.lora_expert_targets)]
    if stage != "sft":
        args += ["--stage", stage]
    if tokens:
        args += ["--tokens", tokens]
    return args
