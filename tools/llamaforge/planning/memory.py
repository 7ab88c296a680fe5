"""What one GPU holds during a training step, term by term: the memory model behind `estimate`.

Each term is a small function of the training setup (`TrainSetup`), the training stack's facts
(`StackFacts`) and the assumption constants of facts/estimator.yaml. A term adds named byte counts
to the moments of a step at which they are resident:

  loss      end of forward: every layer's saved activations + the logits and their cross-entropy
  backward  the first decoder layer to run backward: saved activations + that layer's recomputed
            working set + gathered (ZeRO-3/FSDP) parameters + dequantized weights
  step      end of backward / optimizer step: gradients + optimizer temporaries
plus `load` (while the model is loaded and cast), host RAM, and paged (unified-memory) optimizer
state. `TERMS` lists them in order; a new memory effect is one more function in that list.
docs/hardware.md explains every term and the library code each one comes from.

Pure: no I/O beyond reading the packaged YAML facts once; no torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache

from ..errors import UserError
from ..paths import read_facts
from .catalog import ModelSpec
from .train_setup import OPTIMIZER_STATE_BYTES, TrainSetup

GIB = float(2**30)
MOMENTS = ("loss", "backward", "step")


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
    0.19 (transformers 5, PEFT 0.20) and come from facts/estimator.yaml `stack:`; `plain_peft()`
    describes a plain transformers Trainer + PEFT script (`plain_peft_stack:`); calibration cases
    measured on other stacks override single facts."""

    loss: str = "hf_upcast"
    adapter_dtype: str = "fp32"
    kbit_embeddings_fp32: bool = False
    kbit_norms_fp32: bool = False
    lora_dropout: bool = True
    embedding_cast_at_load: bool = True
    fsdp_root_gathered: bool = True
    autocast: bool = True
    bnb_saves_input: bool = False
    fsdp_fp32_trainable: bool = True
    keeps_outputs: bool = False
    kbit_backend: str = "bitsandbytes"
    kbit_head: bool = False
    kbit_dequant_bytes: float = 2.0

    @classmethod
    def axolotl(cls) -> StackFacts:
        return cls(**estimator_facts()["stack"])

    @classmethod
    def plain_peft(cls) -> StackFacts:
        return cls.axolotl().with_overrides(estimator_facts()["plain_peft_stack"])

    def with_overrides(self, overrides: dict | None) -> StackFacts:
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UserError(f"unknown stack fact(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return replace(self, **overrides)


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


def expert_format(fmt: str, quantize_experts: bool) -> str:
    """The format routed experts are stored in: transformers 5 keeps them as 3D parameters, which
    bitsandbytes does not quantize, so under a 4/8-bit base they stay bf16 unless Axolotl's
    `quantize_moe_experts` quantizes them at load (docs/expert_quantization.qmd, monkeypatch/moe_quant.py)."""
    if fmt in ("int8", "nf4", "nf4_dq") and not quantize_experts:
        return "bf16"
    return fmt


def _layer_linear_bytes(model: ModelSpec, fmt: str, experts_fmt: str | None = None) -> float:
    """One decoder layer's matrices: the nn.Linear layers in `fmt`, the routed experts in
    `experts_fmt` (default: as expert_format decides without quantize_moe_experts), the router in 16-bit
    (a plain parameter, never quantized; fp32 in an fp32 model)."""
    linear = sum(_bytes_per_linear(i, o, fmt) for i, o in model.linear_shapes().values())
    if not model.is_moe:
        return linear
    efmt = experts_fmt or expert_format(fmt, False)
    experts = model.num_experts * sum(_bytes_per_linear(i, o, efmt) for i, o in model.expert_shapes().values())
    return linear + experts + model.router_params_per_layer * (4 if fmt == "fp32" else 2)


def layer_weight_bytes(model: ModelSpec, fmt: str, experts_fmt: str | None = None) -> float:
    """One decoder layer's matrices in `fmt` plus its norms (and q/k/v biases) in 16-bit (fp32 for fp32)."""
    return _layer_linear_bytes(model, fmt, experts_fmt) + model.params_per_layer_norm * (4 if fmt == "fp32" else 2)


def base_weight_bytes(model: ModelSpec, fmt: str, *, embeddings_fp32: bool = False,
                      norms_fp32: bool = False, experts_fmt: str | None = None,
                      head_quantized: bool = False) -> dict[str, float]:
    """Weights by part: decoder matrices in `fmt` (routed experts as `expert_format` says);
    embeddings, lm_head, norms and the parameters outside the decoder (a vision tower) 16-bit
    (bitsandbytes leaves them unquantized), or fp32 for an fp32 model or where
    prepare_model_for_kbit_training left them upcast; an untied lm_head in `fmt` where the stack
    quantizes it too (`kbit_head`)."""
    linear = model.num_layers * _layer_linear_bytes(model, fmt, experts_fmt)
    emb_b = 4 if (fmt == "fp32" or embeddings_fp32) else 2
    norm_b = 4 if (fmt == "fp32" or norms_fp32) else 2
    head_params = model.lm_head_params
    if head_quantized and head_params:
        linear += _bytes_per_linear(model.hidden_size, model.vocab_size, fmt)
        head_params = 0
    return {
        "linear": linear,
        "embeddings": (model.embedding_params + head_params) * emb_b,
        "norms": model.norm_params * norm_b,
        "other": model.other_params * (4 if fmt == "fp32" else 2),
    }


def matmul_params(model: ModelSpec, head: str = "lm") -> int:
    """Parameters one token is multiplied with: the decoder matrices it is routed through (all but
    the experts it is not sent to) and the output head (the vocabulary's, or a reward model's one label)."""
    return model.active_linear_params + (model.vocab_size if head == "lm" else 1) * model.hidden_size


def max_linear_params(model: ModelSpec) -> int:
    return max(i * o for i, o in model.linear_shapes().values())


def local_model(setup: TrainSetup) -> ModelSpec:
    """The model as one GPU holds and computes it: tensor parallelism splits attention heads and MLP
    widths (transformers' base_model_tp_plan: q/k/v/gate/up column-wise, o/down row-wise; KV heads
    are replicated when fewer than the group), expert parallelism splits the routed experts (only
    where ZeRO-3/FSDP do not shard them anyway), and a reward model's score head replaces the
    vocabulary's. Hidden size, vocabulary and layers are whole on every GPU."""
    m, tp = setup.model, setup.tensor_parallel
    shards_params = "parameters" in parallelism_facts()["modes"][setup.parallel]["shards"]
    ep = setup.expert_parallel if (m.is_moe and not shards_params) else 1
    changes: dict = {}
    if tp > 1:
        def split(x: int) -> int:
            return -(-x // tp)
        changes.update(num_heads=split(m.num_heads), num_kv_heads=split(m.num_kv_heads),
                       intermediate_size=split(m.intermediate_size),
                       expert_intermediate_size=split(m.expert_intermediate_size),
                       shared_expert_intermediate_size=split(m.shared_expert_intermediate_size))
    if ep > 1:
        changes["num_experts"] = -(-m.num_experts // ep)
    if setup.head == "score":
        changes["tie_embeddings"] = True      # no vocabulary-sized output head
    return replace(m, **changes) if changes else m


# ---- the setup as the memory model sees it ---------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """Derived facts every term reads."""

    setup: TrainSetup
    stack: StackFacts
    facts: dict
    engine: str                  # none | ddp | deepspeed | fsdp2
    shards: frozenset[str]       # what the parallelism mode partitions
    trainable: int               # T: trainable parameters one GPU holds before ZeRO/FSDP sharding
    trainable_bytes: float       # bytes of one trainable parameter on the GPU, before sharding
    kbit: bool                   # the base is 4/8-bit (bitsandbytes)
    kbit_prepared: bool          # prepare_model_for_kbit_training runs (not under ZeRO-3/FSDP)
    embeddings_fp32: bool        # embeddings/lm_head stay fp32 after it
    fp32_stream: bool            # the residual stream, norm outputs and MLP activations are fp32
    local: ModelSpec             # the model as one GPU holds it (tensor/expert parallel, score head)

    @property
    def head_quantized(self) -> bool:
        """The output head is 4/8-bit too (stack fact `kbit_head`; a tied head stays the embedding)."""
        return self.kbit and self.stack.kbit_head and self.model.lm_head_params > 0

    @property
    def model(self) -> ModelSpec:
        return self.local

    @property
    def world(self) -> int:
        """The ranks ZeRO/FSDP shard over: all but the tensor-parallel group and the HSDP replicas."""
        return max(1, self.setup.world_size // (self.setup.tensor_parallel * self.setup.dp_replicate))

    @property
    def param_shard(self) -> int:
        return self.world if "parameters" in self.shards else 1

    @property
    def opt_shard(self) -> int:
        return self.world if "optimizer" in self.shards else 1

    @property
    def offload_params(self) -> bool:
        return self.setup.offload in ("params", "all")

    @property
    def offload_optimizer(self) -> bool:
        return self.setup.offload in ("optimizer", "all")

    @property
    def tokens(self) -> int:
        """Tokens of one micro-batch on this GPU (a context-parallel group splits each sequence)."""
        return self.setup.tokens_per_gpu

    @property
    def head_excess(self) -> float:
        """lm_head parameters the local model counts but tensor parallelism splits off (colwise)."""
        return self.local.lm_head_params * (1 - 1 / self.setup.tensor_parallel)

    @property
    def act_bytes(self) -> int:
        """Bytes of one element of the residual stream, the norm outputs and the MLP activations."""
        return 4 if self.fp32_stream else 2


def context(setup: TrainSetup, stack: StackFacts) -> Context:
    mode = parallelism_facts()["modes"][setup.parallel]
    engine = mode["engine"]
    shards = frozenset(mode["shards"])
    kbit = setup.is_quantized
    # Axolotl (and PEFT's FSDP/DeepSpeed guides) skip prepare_model_for_kbit_training when ZeRO-3 or
    # FSDP shard the parameters (axolotl/loaders/model.py _prepare_model_for_quantization)
    prepared = setup.is_adapter and kbit and "parameters" not in shards
    emb_fp32 = prepared and stack.kbit_embeddings_fp32
    stream_fp32 = prepared and (stack.kbit_embeddings_fp32 or stack.kbit_norms_fp32)
    if engine == "fsdp2":
        tb = 4.0 if stack.fsdp_fp32_trainable else 2.0   # accelerate upcasts trainable params (mixed precision)
    elif setup.is_adapter:
        # the DeepSpeed engine casts the module, adapters included, to bf16; PEFT keeps adapters fp32
        tb = 2.0 if engine == "deepspeed" else (4.0 if stack.adapter_dtype == "fp32" else 2.0)
    else:
        tb = 4.0 if setup.weight_format == "fp32" else 2.0
    local = local_model(setup)
    if setup.is_adapter:
        trainable = setup.lora_dense_param_count(local) + setup.lora_expert_param_count(local)
    else:
        trainable = int(local.parameter_count() - local.lm_head_params * (1 - 1 / setup.tensor_parallel))
    return Context(setup, stack, estimator_facts(), engine, shards, trainable, tb, kbit,
                   prepared, emb_fp32, stream_fp32, local)


# ---- the ledger ------------------------------------------------------------------------------------


@dataclass
class MemoryTerms:
    """Named byte counts by moment, plus host RAM, paged state and the loading peak."""

    terms: list[tuple[str, float, tuple[str, ...]]] = field(default_factory=list)
    host: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    paged: float = 0.0                       # paged optimizer states (CUDA unified memory)
    load: dict[str, float] = field(default_factory=dict)   # what is on the GPU while loading, by part
    per_token: set[str] = field(default_factory=set)       # terms that scale with the micro-batch's tokens

    def add(self, name: str, nbytes: float, moments: tuple[str, ...] = MOMENTS, *, per_token: bool = False) -> None:
        if nbytes:
            self.terms.append((name, float(nbytes), moments))
            if per_token:
                self.per_token.add(name)

    def at(self, moment: str) -> dict[str, float]:
        """Bytes by component at one moment of the step."""
        out: dict[str, float] = {}
        for name, nbytes, moments in self.terms:
            if moment in moments:
                out[name] = out.get(name, 0.0) + nbytes
        return out

    def total(self, moment: str) -> float:
        return sum(self.at(moment).values())

    def token_bytes(self, moment: str) -> float:
        return sum(v for k, v in self.at(moment).items() if k in self.per_token)


# ---- the terms ---------------------------------------------------------------------------------------


def weights(c: Context, t: MemoryTerms) -> None:
    """The base model (decoder linears in their format, routed experts bf16 under a 4/8-bit base
    unless quantize_moe_experts, embeddings/head/norms 16-bit, or fp32 where
    prepare_model_for_kbit_training left them so) and the trainable adapters, split by tensor/expert
    parallelism, sharded by ZeRO-3/FSDP, or moved to host RAM by parameter offload."""
    s, m = c.setup, c.model
    gpn = s.hardware.gpus_per_node
    if s.method == "full":
        total = (m.parameter_count() - c.head_excess) * c.trainable_bytes
    else:
        norms_fp32 = c.kbit_prepared and c.stack.kbit_norms_fp32
        emb_b = 4 if (s.weight_format == "fp32" or c.embeddings_fp32) else 2
        total = sum(base_weight_bytes(m, s.weight_format, embeddings_fp32=c.embeddings_fp32, norms_fp32=norms_fp32,
                                      experts_fmt=expert_format(s.weight_format, s.quantize_experts),
                                      head_quantized=c.head_quantized).values())
        total -= c.head_excess * emb_b
    if c.offload_params:
        t.host["offloaded_parameters"] = total / c.world * gpn
    else:
        t.add("weights", total / c.param_shard)
    if s.is_adapter:
        adapters = c.trainable * c.trainable_bytes
        if c.offload_params and c.engine == "fsdp2":
            t.host["offloaded_parameters"] = t.host.get("offloaded_parameters", 0.0) + adapters / c.world * gpn
        else:
            t.add("lora_weights", adapters / c.param_shard)


def gradients(c: Context, t: MemoryTerms) -> None:
    """Gradients of the trainable parameters: FSDP keeps sharded fp32 (or bf16 in pure bf16), DeepSpeed
    bf16 (sharded from ZeRO-2), DDP/single the parameter dtype. Present during forward only when
    accumulating (the HF Trainer sets them to None after each optimizer step)."""
    s = c.setup
    if c.engine == "fsdp2":
        grads = c.trainable * (4.0 if c.stack.fsdp_fp32_trainable else 2.0) / c.world
    elif c.engine == "deepspeed":
        grads = c.trainable * 2.0 / (c.world if "gradients" in c.shards else 1)
    else:
        grads = c.trainable * c.trainable_bytes
    if c.offload_optimizer:
        # FSDP's CPU offload keeps the sharded gradients on the host; DeepSpeed's optimizer offload
        # moves each reduced gradient partition to the host (fp32, counted with the optimizer there)
        if c.engine == "fsdp2":
            t.host["offloaded_gradients"] = grads * s.hardware.gpus_per_node
        return
    t.add("gradients", grads, ("step",))
    if s.grad_accum > 1:
        t.add("gradients", grads, ("loss", "backward"))


def _uses_deepspeed_optimizer(c: Context) -> bool:
    return c.engine == "deepspeed" and c.setup.deepspeed.optimizer_block


def _state_bytes(c: Context) -> float:
    """Optimizer state bytes per trainable parameter as they will really be stored."""
    opt, of = c.setup.optimizer, c.facts["optimizers"]
    if _uses_deepspeed_optimizer(c):
        return of["deepspeed_optimizer_state_bytes"]   # FusedAdam / DeepSpeedCPUAdam: fp32 moments
    state = OPTIMIZER_STATE_BYTES[opt]
    bf16_params = (c.engine in ("none", "ddp") and c.trainable_bytes == 2.0) or (
        c.engine == "fsdp2" and not c.stack.fsdp_fp32_trainable)
    if bf16_params and opt in of["states_in_param_dtype"]:
        return state / 2                # torch optimizers create their states like the parameter
    return state


def optimizer_states(c: Context, t: MemoryTerms) -> None:
    """Optimizer states (sharded from ZeRO-1, by FSDP) and DeepSpeed's fp32 master weights; paged
    optimizers keep theirs in unified memory (outside torch's allocator), offload on the host."""
    s = c.setup
    state = _state_bytes(c)
    optimizer = c.trainable * state / c.opt_shard
    master = c.trainable * 4.0 / c.opt_shard if c.engine == "deepspeed" else 0.0
    if s.method == "full" and c.engine in ("none", "ddp") and state < OPTIMIZER_STATE_BYTES.get(s.optimizer, 0):
        t.notes.append(f"full fine-tune without sharding runs in pure bf16 (Axolotl loads the model in bf16): "
                       f"{s.optimizer} keeps bf16 states and there are no fp32 master weights")
    if c.offload_optimizer:
        host = optimizer + master
        if c.engine == "deepspeed":
            host += c.trainable * 4.0 / c.opt_shard       # fp32 gradient partition
        t.host["offloaded_optimizer"] = host * s.hardware.gpus_per_node
        return
    if s.optimizer in c.facts["optimizers"]["paged"] and not _uses_deepspeed_optimizer(c):
        t.paged += optimizer
    else:
        t.add("optimizer", optimizer)
    t.add("master_weights", master)


def optimizer_step(c: Context, t: MemoryTerms) -> None:
    """What exists only while the optimizer steps. torch's foreach (non-fused) AdamW materialises a
    state-sized temporary (`torch._foreach_sqrt(exp_avg_sqs)`, torch/optim/adamw.py); fused AdamW and
    DeepSpeed's FusedAdam (a DeepSpeed `optimizer` block) do not. DeepSpeed steps on an fp32 copy of
    its gradient partition (stage_1_and_2.py `single_grad_partition`; ZeRO-3 one `sub_group_size` at
    a time, stage3.py `_prepare_fp32_grad_for_sub_group`), and ZeRO-1/2 all-gather the updated
    parameters in `allgather_bucket_size` chunks."""
    s = c.setup
    if c.offload_optimizer:
        return
    fraction = 0.0 if _uses_deepspeed_optimizer(c) else c.facts["optimizers"]["step_temporary_state_fraction"].get(s.optimizer, 0.0)
    per_step = c.trainable / c.opt_shard
    if c.engine == "deepspeed":
        ds = deepspeed_elements(s)
        if s.parallel == "zero3":
            per_step = min(per_step, ds["sub_group_size"])
        t.add("fp32_gradient_partition", per_step * 4.0, ("step",))
        if s.parallel in ("zero1", "zero2"):
            t.add("allgather_bucket", min(ds["allgather_bucket_size"], c.trainable) * 2.0, ("step",))
    t.add("optimizer_temporaries", per_step * _state_bytes(c) * fraction, ("step",))


def deepspeed_elements(setup: TrainSetup) -> dict[str, float]:
    """The DeepSpeed buffer sizes in elements, "auto" and unset values resolved the way transformers
    and DeepSpeed resolve them (transformers/integrations/deepspeed.py fill_match "auto";
    deepspeed/runtime/zero/config.py defaults)."""
    d, h = setup.deepspeed, setup.model.hidden_size
    df = estimator_facts()["deepspeed"]

    def pick(value, auto: float, unset: float) -> float:
        if value is None:
            return unset
        return auto if value == "auto" else float(value)

    stage1 = setup.parallel == "zero1"
    return {
        # LlamaForge's template writes reduce_bucket_size "auto" for ZeRO-2/3 only
        "reduce_bucket_size": pick(d.reduce_bucket_size, h * h, df["default_reduce_bucket_elements"] if stage1 else h * h),
        "prefetch_bucket_size": pick(d.prefetch_bucket_size, df["auto_prefetch_h2"] * h * h, df["auto_prefetch_h2"] * h * h),
        "allgather_bucket_size": float(d.allgather_bucket_size if d.allgather_bucket_size is not None else df["default_allgather_bucket_elements"]),
        "max_live_parameters": float(d.max_live_parameters if d.max_live_parameters is not None else df["default_max_live_parameters"]),
        "max_reuse_distance": float(d.max_reuse_distance if d.max_reuse_distance is not None else df["default_max_reuse_distance"]),
        "sub_group_size": float(d.sub_group_size if d.sub_group_size is not None else df["default_sub_group_size"]),
        "overlap_comm": 1.0 if d.overlap_comm is None or d.overlap_comm else 0.0,
    }


def communication_buffers(c: Context, t: MemoryTerms) -> None:
    """DDP's reducer keeps bucket copies of every gradient; DeepSpeed reduces gradients through
    `reduce_bucket_size` buffers (two with overlap_comm)."""
    s = c.setup
    if c.engine == "ddp":
        t.add("comm_buffers", c.trainable * c.trainable_bytes)
    elif c.engine == "deepspeed":
        ds = deepspeed_elements(s)
        buffers = 2 if ds["overlap_comm"] else 1
        t.add("comm_buffers", buffers * ds["reduce_bucket_size"] * 2.0)


def gathered_parameters(c: Context, t: MemoryTerms) -> None:
    """Parameters ZeRO-3 and FSDP all-gather while computing. ZeRO-3 keeps a gathered parameter until
    its next use is farther than `stage3_max_reuse_distance` parameters away, at most
    `stage3_max_live_parameters` in all, plus a prefetch bucket (partition_parameters.py /
    partitioned_param_coordinator.py); FSDP2 one decoder layer and the next (prefetch), and the root
    unit (embeddings, head) from forward to backward."""
    s, m = c.setup, c.model
    fmt = s.weight_format if s.is_adapter else "bf16"
    layer_store = layer_weight_bytes(m, fmt, expert_format(fmt, s.quantize_experts))
    layer_elems = m.params_per_layer_linear + m.params_per_layer_norm
    head_bf16 = (m.lm_head_params or m.embedding_params) * 2.0
    if s.parallel == "zero3":
        ds = deepspeed_elements(s)
        passes = 3 if s.grad_ckpt else 2            # forward, (recompute,) backward: uses between two of a layer's
        retained = min(ds["max_live_parameters"], max(layer_elems, ds["max_reuse_distance"] / passes),
                       layer_elems * m.num_layers)
        live = retained * layer_store / layer_elems
        prefetch = ds["prefetch_bucket_size"] * 2.0
        t.add("gathered_params", live + prefetch, ("backward",))
        t.add("gathered_params", max(live, head_bf16) + prefetch, ("loss",))
    elif s.parallel == "fsdp":
        f = c.facts
        root = (m.embedding_params + m.lm_head_params) * 2.0 if c.stack.fsdp_root_gathered else 0.0
        per_layer = layer_store + (c.trainable / m.num_layers if s.is_adapter else 0.0) * 2.0
        layer = root + f["fsdp"]["gathered_layers"] * per_layer
        if s.method == "full":
            layer += layer_weight_bytes(m, "bf16")   # the layer's unsharded gradient
        t.add("gathered_params", layer, ("backward",))
        t.add("gathered_params", max(root, head_bf16) + per_layer, ("loss",))


def dequantized_weights(c: Context, t: MemoryTerms) -> None:
    """bitsandbytes computes with a 16-bit copy of the 4/8-bit weight it multiplies
    (`F.dequantize_4bit(B, quant_state).to(A.dtype)` in MatMul4Bit forward and backward): one linear
    at a time, `kbit_dequant_bytes` per weight (the quant state's dtype, plus the cast to the compute
    dtype where they differ). A quantized output head (`kbit_head`) is dequantized whole each time it
    runs, at the loss moment, while the logits and the cross-entropy are alive. Quantized routed
    experts (quantize_moe_experts) are a parametrization whose cache holds the dequantized bf16 tensor of
    a layer's experts while the MoE block runs (axolotl/monkeypatch/moe_quant.py)."""
    if c.kbit and c.stack.kbit_backend == "bitsandbytes":
        per_weight = c.stack.kbit_dequant_bytes
        largest = max_linear_params(c.model)
        if c.model.is_moe and c.setup.quantize_experts:
            e = c.model.expert_shapes()
            largest = max(largest, c.model.num_experts * 2 * e["gate_proj"][0] * e["gate_proj"][1])
        t.add("dequantized_weights", largest * per_weight, ("backward",))
        if c.head_quantized:
            t.add("dequantized_weights", c.model.lm_head_params * per_weight, ("loss",))


# the linears of a dense MLP, grouped by the input they read
_MLP_GROUPS = {"x_mlp": ("gate_proj", "up_proj"), "mlp_product": ("down_proj",)}
_ATTENTION_GROUPS = {"x_attn": ("q_proj", "k_proj", "v_proj"), "attn_out": ("o_proj",)}


def _linear_inputs_saved(c: Context, *, mlp: bool = True) -> float:
    """Bytes per token per layer that the layer's linears keep of their inputs for backward. A frozen
    bf16 linear keeps none (autograd saves a matmul input only for the weight's gradient); a trained
    one keeps its input; a LoRA adapter keeps the input of lora_A, after dropout a bool mask and the
    dropped copy of its own (bf16, or fp32 for an fp32 adapter outside autocast); bitsandbytes < 0.43.2 kept each 4-bit linear's input (MatMul4Bit
    `ctx.tensors = (A, B)`). `mlp=False`: the attention's only (a tiled MLP keeps none of its own)."""
    return sum(_linear_inputs(c, mlp=mlp))


def _kbit_inputs_kept(c: Context) -> float:
    """Bytes per token per layer of 4-bit linear inputs bitsandbytes < 0.43.2 keeps (`bnb_saves_input`)."""
    return _linear_inputs(c)[1]


def _linear_inputs(c: Context, *, mlp: bool = True) -> tuple[float, float]:
    """(bytes per token per layer kept for the adapters and trained linears, of them kept only by
    bitsandbytes' MatMul4Bit): see `_linear_inputs_saved`."""
    s, stack, m = c.setup, c.stack, c.model
    f = c.facts["layer_activations"]
    shapes = m.linear_shapes()
    # layer inputs in groups of the linears that read them. flash-attention's output is the o_proj input
    # and kept by the kernel itself; SDPA and eager attention hand o_proj a contiguous copy of theirs
    # (transformers sdpa_attention_forward `attn_output.transpose(1, 2).contiguous()`; torchtune and
    # litgpt reshape the transposed output the same way), which only o_proj's own backward would keep
    groups = {**_ATTENTION_GROUPS, **(_MLP_GROUPS if mlp else {})}
    # PEFT runs an fp32 adapter on an fp32 copy of its input unless autocast runs it in bf16
    # (peft/tuners/lora/layer.py Linear.forward `_cast_input_dtype`); FSDP and DeepSpeed compute in bf16
    lora_in = 4 if (c.trainable_bytes == 4.0 and not stack.autocast and c.engine in ("none", "ddp")) else 2
    dropout_bytes = f["lora_dropout_mask_bytes"] + lora_in
    out = kbit = 0.0
    for name, linears in groups.items():
        if linears[0] not in shapes:
            continue          # an MoE model without a shared expert: its MLP is _mlp_saved's
        width = shapes[linears[0]][0]
        already = name == "attn_out" and s.attn == "flash_attention_2"
        if s.method == "full":
            out += 0 if already else c.act_bytes * width
            continue
        adapted = [lin for lin in linears if lin in s.lora_targets]
        kept_once = False
        if adapted and stack.lora_dropout:
            out += dropout_bytes * width * len(adapted)
        elif adapted and not already:
            # an input cast for the adapter (to fp32, or by autocast to bf16) is a copy per adapter;
            # an input already in the adapter's dtype is shared
            if lora_in != c.act_bytes:
                out += lora_in * width * len(adapted)
            else:
                out += c.act_bytes * width
                kept_once = True
        if c.kbit and stack.bnb_saves_input and not already:
            frozen = [lin for lin in linears if not (kept_once and lin in adapted)]
            if c.fp32_stream:
                kbit += 2 * width * len(frozen)       # each 4-bit linear casts its fp32 input itself
            elif not kept_once:
                kbit += 2 * width
    return out, kbit


def layer_activation_bytes_per_token(setup: TrainSetup, stack: StackFacts) -> float:
    """What autograd keeps for backward in one decoder layer, per token (docs/hardware.md)."""
    return _layer_saved(context(setup, stack))


def _mlp_saved(c: Context) -> float:
    """What the MLP block keeps per token for backward. Dense: `mlp_tensors` of the MLP width (gate,
    SiLU(gate), up). Mixture of experts (transformers 5 MixtralExperts.forward and kin): for each of the
    token's `experts_per_token` routed experts the same tensors at the expert's width and the expert's
    output, which the routing weight multiplies (its gradient needs it); the router's fp32 softmax over
    all experts; the shared expert's tensors; trained experts (full fine-tune, LoRA on them) keep their
    dispatched input and down-projection input too. The router's and shared expert's linear inputs
    are `_linear_inputs_saved`'s."""
    s, m, f = c.setup, c.model, c.facts["layer_activations"]
    tensors = f["compiled_mlp_tensors"] if s.torch_compile else f["mlp_tensors"]
    if not m.is_moe:
        return tensors * c.act_bytes * m.intermediate_size
    k, h = m.experts_per_token, m.hidden_size
    ei = m.expert_shapes()["gate_proj"][1]
    routed = k * (tensors * c.act_bytes * ei + c.act_bytes * h)
    if s.method == "full" or s.lora_expert_targets:
        routed += k * c.act_bytes * (h + ei)
    router = f["router_probability_bytes"] * c.setup.model.num_experts
    router_input = c.act_bytes * h if (s.method == "full" and "gate_proj" not in m.linear_shapes()) else 0
    shared = tensors * c.act_bytes * m.shared_expert_intermediate_size
    return routed + router + router_input + shared


def _mlp_width(m: ModelSpec) -> int:
    """The MLP width one token goes through: dense, or its routed experts' and the shared expert's."""
    if not m.is_moe:
        return m.intermediate_size
    return m.experts_per_token * m.expert_shapes()["gate_proj"][1] + m.shared_expert_intermediate_size


def _layer_saved(c: Context) -> float:
    s, m = c.setup, c.model
    f = c.facts["layer_activations"]
    h, q, kv = m.hidden_size, m.q_dim, m.kv_dim
    compiled = s.torch_compile
    norm_in = max(f["compiled_norm_input_bytes"], c.act_bytes) if compiled else max(f["norm_fp32_input_bytes"], c.act_bytes)
    per = 2 * norm_in * h
    if s.method == "full" and not compiled:
        per += 2 * f["norm_weight_grad_bytes"] * h
    per += f["attention"]["q"] * q + f["attention"]["kv"] * kv
    if s.attn == "eager":
        # eager attention materialises the scores and the softmax (bf16) per head: O(seq^2)
        per += c.facts["eager_attention_bytes"] * m.num_heads * s.seq_len
    if s.tiled_mlp:
        # TiledMLP runs the MLP under no_grad and keeps only its input (axolotl/monkeypatch/tiled_mlp/base.py
        # TiledMLP.forward `ctx.save_for_backward(x)`); backward recomputes it shard by shard
        return per + c.act_bytes * h + _linear_inputs_saved(c, mlp=False)
    return per + _mlp_saved(c) + _linear_inputs_saved(c)


def tiled_mlp_shards(setup: TrainSetup) -> int:
    """TiledMLP's shards: tiled_mlp_num_shards, else Axolotl 0.19's ceil(sequence / 32768) of the
    sequence one GPU holds (axolotl/monkeypatch/tiled_mlp/patch.py `target_tokens_per_shard`)."""
    if setup.tiled_mlp_shards:
        return setup.tiled_mlp_shards
    per_shard = estimator_facts()["tiled_mlp"]["tokens_per_shard"]
    return max(1, -(-(setup.seq_len // setup.context_parallel) // per_shard))


def activations(c: Context, t: MemoryTerms) -> None:
    """Saved activations: with gradient checkpointing each layer keeps its input (the residual
    stream) and one layer at a time is recomputed; without, every layer keeps everything. Plus the
    gradient buffers of the layer running backward, and the final norm / head input. Activation
    offloading moves the checkpointed inputs to host RAM (TRL's OffloadActivations, which Axolotl's
    ActivationOffloadingMixin wraps around each training step): only the few in flight stay."""
    s, m, f = c.setup, c.model, c.facts
    tokens = c.tokens
    h, L = m.hidden_size, m.num_layers
    A = _layer_saved(c)
    bt = f["backward_temporary_bytes"]
    # a tiled MLP's gradients exist for one sequence shard at a time (TiledMLP.backward)
    width = _mlp_width(m) / (tiled_mlp_shards(s) if s.tiled_mlp else 1)
    B = (bt["h"] * h + bt["i"] * width) * c.act_bytes / 2
    head = f["head_activation_bytes"]["h"] * h * tokens
    if s.grad_ckpt:
        kept_layers = L
        if s.activation_offload != "none":
            kept_layers = min(L, f["activation_offload"]["resident_layers"][s.activation_offload])
            if s.activation_offload != "disk":
                t.host["offloaded_activations"] = (L * c.act_bytes * h * tokens) * s.hardware.gpus_per_node
        saved = kept_layers * c.act_bytes * h * tokens
        working = (A + B) * tokens
    else:
        saved = L * A * tokens
        working = B * tokens
    t.add("activations", saved + head, ("loss",), per_token=True)
    t.add("activations", saved + working, ("backward",), per_token=True)


def tiled_mlp_recompute(c: Context, t: MemoryTerms) -> None:
    """A tiled MLP's backward (TiledMLP.backward): the MLP recomputed one sequence shard at a time
    (its activations for tokens / shards), the input's full-size gradient buffer, and a per-parameter
    accumulator (in the parameter's dtype) for each trained MLP weight of the layer."""
    s, m = c.setup, c.model
    if not s.tiled_mlp:
        return
    shard_tokens = c.tokens / tiled_mlp_shards(s)
    per_token = _mlp_saved(c) + _linear_inputs_saved(c) - _linear_inputs_saved(c, mlp=False)
    x_grad = c.act_bytes * m.hidden_size * c.tokens
    if s.method == "full":
        mlp_params = m.params_per_layer_linear - sum(a * b for a, b in m.attention_shapes().values())
        accumulators = mlp_params * c.trainable_bytes
    else:
        accumulators = (c.trainable / m.num_layers) * c.trainable_bytes
    t.add("tiled_mlp", per_token * shard_tokens + x_grad + accumulators, ("backward",), per_token=True)


def context_parallel_buffers(c: Context, t: MemoryTerms) -> None:
    """Ring attention across a context-parallel group (Axolotl 0.19: ring-flash-attn, axolotl/monkeypatch/
    ring_attn/patch.py). With sample packing Axolotl uses varlen_llama3, which all-gathers the keys and
    values of `heads_k_stride` KV heads for the whole sequence at a time (double-buffered) and
    accumulates their fp32 gradients in backward; without packing batch_ring passes each peer's K/V block
    around the ring (the current and the next) and keeps fp32 output and log-sum-exp accumulators."""
    s, m = c.setup, c.model
    cp = s.context_parallel
    if cp <= 1:
        return
    cf = c.facts["context_parallel"]
    if s.sample_packing:
        stride = min(cf["heads_k_stride"], m.num_kv_heads)
        gathered = 2 * s.micro_batch * s.seq_len * stride * m.head_dim
        fwd = cf["buffers"] * gathered * 2.0
        bwd = fwd + gathered * cf["grad_bytes"]
    else:
        block = 2 * c.tokens * m.kv_dim
        fwd = cf["buffers"] * block * 2.0 + c.tokens * m.q_dim * cf["grad_bytes"]
        bwd = fwd + block * cf["grad_bytes"]
    t.add("context_parallel", fwd, ("loss",))
    t.add("context_parallel", bwd, ("backward",))


def _loss_name(c: Context) -> str:
    return c.stack.loss if c.setup.loss == "default" else c.setup.loss


def previous_step_kbit_inputs(c: Context, t: MemoryTerms) -> None:
    """bitsandbytes < 0.43.2 stores each 4-bit linear's input on its autograd node as a plain ctx
    attribute (MatMul4Bit `ctx.tensors = (A, B)`), which backward does not free: it lives as long as
    the graph does. A loop that keeps the model's output in a variable (`keeps_outputs`: litgpt's
    `logits = model(...)`, Answer.AI's `output = model(...)`) holds the previous step's graph until the
    next forward returns, so every layer's inputs of that step are still resident at the end of the
    next forward (taken as long as the current step's: exact with packing, an upper bound without).
    Without activation checkpointing only: (reentrant) checkpointing builds each layer's graph again
    inside backward and drops it there."""
    s, stack = c.setup, c.stack
    if not (c.kbit and stack.bnb_saves_input and stack.keeps_outputs) or s.grad_ckpt:
        return
    per_token = c.model.num_layers * _kbit_inputs_kept(c)
    if c.head_quantized:
        per_token += 2 * c.model.hidden_size          # the 4-bit head's input
    t.add("previous_step_kbit_inputs", per_token * c.tokens, ("loss",), per_token=True)


def logits(c: Context, t: MemoryTerms) -> None:
    """The logits and the cross-entropy over them (bytes per logit: `loss_bytes_per_logit`), plus the
    model's returned logits where the training loop keeps its output through backward. Cut Cross
    Entropy and Liger's fused linear cross-entropy never materialise the logits (`fused_loss_hidden_bytes`
    per hidden element instead); a reward model's score head has one logit per token."""
    f, m = c.facts, c.model
    if c.setup.head == "score":
        return
    loss = _loss_name(c)
    try:
        per_logit = f["loss_bytes_per_logit"][loss]
    except KeyError:
        raise UserError(f"unknown loss implementation {loss!r}; known: {', '.join(f['loss_bytes_per_logit'])}") from None
    if c.stack.keeps_outputs:
        per_logit += f["kept_logits_bytes"][loss]
    fused = f["fused_loss_hidden_bytes"].get(loss, 0) * m.hidden_size
    t.add("logits", (per_logit * m.vocab_size + fused) * c.tokens, ("loss",), per_token=True)


def autocast_weight_copies(c: Context, t: MemoryTerms) -> None:
    """An fp32 lm_head under torch.autocast: F.linear runs on a bf16 copy of the weight, which the
    matmul keeps for the gradient of its input until the head's backward (autocast caches no copy of
    a frozen weight)."""
    m = c.model
    if c.embeddings_fp32 and c.stack.autocast:
        t.add("lm_head_bf16_copy", (m.lm_head_params or m.embedding_params) * 2.0, ("loss",))


def loading(c: Context, t: MemoryTerms) -> None:
    """The GPU while loading: embeddings/lm_head are cast one matrix at a time (Axolotl: to fp32 around
    prepare_model_for_kbit_training and back; plain PEFT: to fp32), so the old and the new copy of the
    largest coexist; a 4/8-bit base is quantized on the GPU it is placed on, and Axolotl 0.19 places
    it whole on every rank before ZeRO-3/FSDP2 shard it (facts/parallelism.yaml `quantized_loading`)."""
    s, m, stack = c.setup, c.model, c.stack
    weights_now = t.at("step").get("weights", 0.0)
    casts = stack.embedding_cast_at_load and c.engine != "fsdp2" and "parameters" not in c.shards and (
        (s.is_adapter and c.kbit) or stack.kbit_embeddings_fp32 or s.method == "full")
    if casts and not c.offload_params:
        emb_params = m.embedding_params + m.lm_head_params
        largest = max(m.embedding_params, m.lm_head_params)
        parts = base_weight_bytes(m, s.weight_format, embeddings_fp32=c.embeddings_fp32)
        steady_emb = parts["embeddings"] if s.is_adapter else emb_params * c.trainable_bytes
        t.load = {"weights": weights_now, "embedding_dtype_cast": 4.0 * emb_params + 2.0 * largest - steady_emb}
    if s.is_adapter and s.loads_whole_base_per_gpu and (c.param_shard > 1 or c.offload_params):
        whole = sum(base_weight_bytes(m, s.weight_format,
                                      experts_fmt=expert_format(s.weight_format, s.quantize_experts)).values())
        at_load = whole + max_linear_params(m) * 2.0
        if at_load > sum(t.load.values()):
            t.load = {"whole_base_at_load": at_load}
        t.notes.append("loading: Axolotl 0.19 loads the whole 4/8-bit base onto every GPU before "
                       f"{'ZeRO-3' if s.parallel == 'zero3' else 'FSDP2'} shards it "
                       f"({whole / GIB:,.1f} GiB per GPU at load)")
    elif s.parallel == "fsdp" and s.fsdp_version == 1 and s.is_quantized:
        t.notes.append("loading: FSDP1 sharded quantized loading (cpu_ram_efficient_loading + "
                       "qlora_sharded_model_loading): rank 0 quantizes layer by layer into CPU RAM")


# The memory model, in order. A new effect (activation offloading, a fused loss...) is one more
# function here that adds its bytes to the moments at which they are resident.
TERMS: tuple[Callable[[Context, MemoryTerms], None], ...] = (
    weights,
    gradients,
    optimizer_states,
    optimizer_step,
    communication_buffers,
    gathered_parameters,
    dequantized_weights,
    activations,
    tiled_mlp_recompute,
    context_parallel_buffers,
    previous_step_kbit_inputs,
    logits,
    autocast_weight_copies,
    loading,
)


def memory_terms(setup: TrainSetup, stack: StackFacts) -> MemoryTerms:
    c = context(setup, stack)
    t = MemoryTerms()
    for term in TERMS:
        term(c, t)
    return t
