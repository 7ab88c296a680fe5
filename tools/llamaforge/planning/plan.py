"""The hardware planner: the fastest configuration of a model on given hardware that fits.

Method: full, then LoRA, then QLoRA (the first that fits, unless one is asked for). Within a
method every parallelism mode Axolotl 0.19 can run (facts/parallelism.yaml) is priced at the
largest micro-batch that fits and divides the per-GPU batch; the highest estimated throughput
wins. Offload is tried only when nothing fits without it; gradient checkpointing stays on unless
the configuration also fits comfortably without it and is faster so. When nothing fits, the
refusal names the smallest catalog hardware that would fit.

Pure: takes and returns plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Infeasible, UserError
from .catalog import Hardware, ModelSpec, gpus
from .estimate import Estimate, estimate, parallelism_facts
from .train_setup import ALL_LINEAR, METHODS, PARALLELS, TrainSetup, parse_lora_targets

DEFAULT_OPTIMIZER = "adamw_torch_fused"


@dataclass
class Plan:
    setup: TrainSetup                # the chosen configuration, grad_accum set
    estimate: Estimate
    reasons: list[str]               # why each choice was made
    rejected: list[dict] = field(default_factory=list)   # [{"setup": ..., "why": ...}]

    def to_dict(self) -> dict:
        return {
            "setup": self.setup.to_dict(),
            "estimate": self.estimate.to_dict(),
            "reasons": list(self.reasons),
            "rejected": list(self.rejected),
        }


def default_global_batch(model: ModelSpec) -> int:
    """Sequences per optimizer step when none is asked for (facts/parallelism.yaml)."""
    n = model.parameter_count()
    for row in parallelism_facts()["planner_default_global_batch"]:
        if row["max_params"] is None or n <= row["max_params"]:
            return int(row["sequences"])
    raise AssertionError("planner_default_global_batch needs a catch-all row")


def describe(setup: TrainSetup) -> str:
    """A short label for one configuration, e.g. `qlora zero3 offload=params mb=2 ckpt`."""
    parts = [setup.method, "fsdp1-sharded-load" if setup.parallel == "fsdp" and setup.fsdp_version == 1 else setup.parallel]
    if setup.offload != "none":
        parts.append(f"offload={setup.offload}")
    parts.append(f"mb={setup.micro_batch}")
    parts.append("ckpt" if setup.grad_ckpt else "no-ckpt")
    if setup.context_parallel > 1:
        parts.append(f"cp={setup.context_parallel}")
    if setup.loss != "default":
        parts.append(setup.loss)
    if setup.tiled_mlp:
        parts.append("tiled-mlp")
    if setup.activation_offload != "none":
        parts.append(f"act-offload={setup.activation_offload}")
    return " ".join(parts)


# ---- the search ------------------------------------------------------------------------------------


@dataclass
class _Choice:
    setup: TrainSetup
    est: Estimate


def _modes_for(method: str, hardware: Hardware, parallel: str | None) -> tuple[list[str], list[str]]:
    """(modes tried without offload, modes tried with offload) in the planner's order."""
    pf = parallelism_facts()
    if parallel is not None:
        return [parallel], [parallel]
    if hardware.world_size == 1:
        return ["single"], list(pf["planner_single_gpu_fallback"])
    order = [m for m in pf["planner_order"] if m != "single"]
    if method == "full":
        order = [m for m in order if m not in pf["planner_full_finetune_excludes"]]
    offloadable = [m for m in order if len(pf["modes"][m]["offload"]) > 1]
    return order, offloadable


def assumed_host_ram_gib(hardware: Hardware) -> float:
    """Host RAM per node the planner assumes (facts/parallelism.yaml `planner_host_ram_gib`)."""
    h = parallelism_facts()["planner_host_ram_gib"]
    if hardware.gpu.id in h["workstation_gpus"]:
        return float(h["workstation"])
    return float(h["server_per_gpu"] * hardware.gpus_per_node)


def _fits_within(est: Estimate, headroom: float) -> bool:
    return est.peak_gpu_gib <= est.usable_gpu_gib * (1.0 - headroom)


def _largest_fitting(base: TrainSetup, micro_batches: list[int], per_gpu: int, headroom: float) -> _Choice | None:
    """The largest micro-batch (accumulation making up the per-GPU batch) whose estimate fits with
    `headroom` of the usable GPU memory left free."""
    best = None
    for mb in micro_batches:
        s = base.with_(micro_batch=mb, grad_accum=per_gpu // mb)
        est = estimate(s)
        if not _fits_within(est, headroom):
            break                   # memory grows with the micro-batch
        best = _Choice(s, est)
    return best


def _memory_rejection(setup: TrainSetup, margin: float) -> dict:
    """A `rejected` entry for a configuration that does not fit, with its peak."""
    est = estimate(setup)
    return {"setup": describe(setup), "why": _why_not(est, margin), "peak_gpu_gib": round(est.peak_gpu_gib, 2)}


def _why_not(est: Estimate, margin: float) -> str:
    setup = est.setup
    top = sorted(est.breakdown.items(), key=lambda kv: -kv[1])[:3]
    parts = ", ".join(f"{k} {v:.1f}" for k, v in top)
    limit = est.usable_gpu_gib * (1.0 - margin)
    return (f"needs {est.peak_gpu_gib:.1f} GiB per GPU at micro-batch {setup.micro_batch}, over the "
            f"{limit:.1f} GiB the planner allows (largest: {parts})")


def _search(methods: list[str], offload: str, hardware: Hardware, *, model: ModelSpec, parallel: str | None,
            seq_len: int, micro_batches: list[int], per_gpu: int, lora_r: int, lora_targets: tuple[str, ...],
            rejected: list[dict], fsdp_version: int | None = None, variants: tuple[dict, ...] = ({},)) -> _Choice | None:
    """The fastest fitting configuration of the first method (in order) that fits with `offload`."""
    pf = parallelism_facts()
    margin = pf["planner_memory_margin"]
    attn = "flash_attention_2" if hardware.gpu.supports_flash_attention else "sdpa"
    for method in methods:
        plain, offloadable = _modes_for(method, hardware, parallel)
        modes = plain if offload == "none" else offloadable
        common = dict(model=model, hardware=hardware, method=method, seq_len=seq_len, lora_r=lora_r,
                      lora_targets=lora_targets, optimizer=DEFAULT_OPTIMIZER, attn=attn,
                      sample_packing=attn == "flash_attention_2", grad_ckpt=True,
                      micro_batch=micro_batches[0], grad_accum=per_gpu // micro_batches[0])
        fitting: list[_Choice] = []
        for mode, variant in ((m, v) for m in modes for v in variants):
            label = describe(TrainSetup(**{**common, "parallel": "single"}).with_(parallel=mode, **variant)) \
                + (f" offload={offload}" if offload != "none" else "")
            if offload not in pf["modes"][mode]["offload"]:
                continue
            cp = variant.get("context_parallel", 1)
            if cp > 1 and (mode == "single" or attn != "flash_attention_2"):
                continue
            v_micro, v_per_gpu = (micro_batches, per_gpu) if cp == 1 else ([1], per_gpu * cp)
            try:
                base = TrainSetup(parallel=mode, offload=offload, **{**common, "micro_batch": v_micro[0],
                                                                     "grad_accum": v_per_gpu // v_micro[0]}, **variant)
                if mode == "fsdp" and fsdp_version is not None:
                    base = base.with_(fsdp_version=fsdp_version)
                estimate(base)      # validates the combination
            except UserError as exc:
                rejected.append({"setup": label, "why": str(exc)})
                continue
            choice = _largest_fitting(base, v_micro, v_per_gpu, margin)
            if choice is None and mode == "fsdp" and base.loads_whole_base_per_gpu and fsdp_version is None:
                # the whole 4/8-bit base must fit on one GPU while loading under FSDP2; FSDP1's
                # sharded quantized loading does not need that (facts/parallelism.yaml)
                rejected.append(_memory_rejection(base, margin))
                base = base.with_(fsdp_version=1)
                choice = _largest_fitting(base, v_micro, v_per_gpu, margin)
            if choice is None:
                rejected.append(_memory_rejection(base, margin))
                continue
            host_limit = assumed_host_ram_gib(hardware)
            if choice.est.host_ram_gib > host_limit:
                rejected.append({"setup": describe(choice.setup),
                                 "why": f"needs {choice.est.host_ram_gib:,.0f} GiB of host RAM per node, more than the "
                                        f"{host_limit:,.0f} GiB assumed for {hardware.gpu.id} machines"})
                continue
            fitting.append(choice)
        if fitting:
            best = max(fitting, key=lambda c: c.est.tokens_per_s)   # ties keep the planner order
            for c in fitting:
                if c is not best:
                    theirs, ours = f"{c.est.tokens_per_s:,.0f}", f"{best.est.tokens_per_s:,.0f}"
                    why = (f"fits ({c.est.peak_gpu_gib:.1f} GiB) but slower: {theirs} vs {ours} tokens/s" if theirs != ours
                           else f"fits ({c.est.peak_gpu_gib:.1f} GiB) at the same ~{ours} tokens/s; the chosen set-up "
                                "comes first in the planner's order (the simpler one)")
                    rejected.append({"setup": describe(c.setup), "why": why})
            return best
    return None


def long_context_variants(hardware: Hardware) -> tuple[dict, ...]:
    """Axolotl's memory savers, cheapest first (facts/parallelism.yaml `planner_long_context`): Liger's
    fused linear cross-entropy (no logits, and faster), then a tiled MLP, then activation offloading,
    each on one GPU's sequence or with the sequence split over a context-parallel group."""
    lc = parallelism_facts()["planner_long_context"]
    ws = hardware.world_size
    cps = [1] + [c for c in lc["context_parallel"] if 1 < c <= ws and ws % c == 0]
    return tuple({**saver, **({"context_parallel": cp} if cp > 1 else {})} for cp in cps for saver in lc["savers"])


def _long_context_reason(s: TrainSetup) -> str | None:
    """Why the plan uses Axolotl's long-context features (None when it does not)."""
    used = []
    if s.loss == "cce":
        used.append("Cut Cross Entropy (the CutCrossEntropyPlugin: the logits are never materialised, and it is faster)")
    if s.loss == "liger":
        used.append("Liger's fused linear cross-entropy (the LigerPlugin, liger_fused_linear_cross_entropy: the logits "
                    "are never materialised whole, and it is faster)")
    if s.tiled_mlp:
        used.append("a tiled MLP (tiled_mlp: the MLP runs on sequence shards and keeps only its input)")
    if s.activation_offload != "none":
        used.append("activation offloading (activation_offloading: each checkpointed layer input waits in host RAM)")
    if s.context_parallel > 1:
        used.append(f"context parallelism {s.context_parallel} (context_parallel_size: each sequence split over "
                    f"{s.context_parallel} GPUs with ring attention; needs ring-flash-attn)")
    if not used:
        return None
    return ("memory savers: nothing fits as it is, and Axolotl's savers fit with an earlier method than CPU offload "
            "or faster; cheapest first: " + "; ".join(used))


def _earlier_or_faster(a: _Choice | None, b: _Choice | None, rejected: list[dict]) -> _Choice | None:
    """Of two fitting choices, the one with the earlier method (full before LoRA before QLoRA), else the faster."""
    if a is None or b is None:
        return a or b
    key = lambda c: (METHODS.index(c.setup.method), -c.est.tokens_per_s)  # noqa: E731
    best, other = sorted((a, b), key=key)
    rejected.append({"setup": describe(other.setup),
                     "why": f"fits ({other.est.peak_gpu_gib:.1f} GiB) but "
                            + ("a later method" if other.setup.method != best.setup.method else
                               f"slower: {other.est.tokens_per_s:,.0f} vs {best.est.tokens_per_s:,.0f} tokens/s")})
    return best


def _maybe_without_checkpointing(choice: _Choice, micro_batches: list[int], per_gpu: int,
                                 rejected: list[dict]) -> tuple[_Choice, str]:
    pf = parallelism_facts()
    headroom = pf["planner_no_checkpointing_headroom"]
    alt = _largest_fitting(choice.setup.with_(grad_ckpt=False), micro_batches, per_gpu, headroom)
    if alt is not None and alt.est.tokens_per_s > choice.est.tokens_per_s:
        rejected.append({"setup": describe(choice.setup),
                         "why": f"slower ({choice.est.tokens_per_s:,.0f} tokens/s) than without checkpointing"})
        return alt, (f"gradient checkpointing off: micro-batch {alt.setup.micro_batch} fits without it with "
                     f"{1 - alt.est.peak_gpu_gib / alt.est.usable_gpu_gib:.0%} of the GPU to spare "
                     f"(>= {headroom:.0%} required), and skipping the recomputation is faster")
    if alt is None:
        no_ckpt = choice.setup.with_(grad_ckpt=False, micro_batch=micro_batches[0], grad_accum=per_gpu // micro_batches[0])
        entry = _memory_rejection(no_ckpt, headroom)
        entry["why"] = f"does not fit with {headroom:.0%} to spare without gradient checkpointing: " + entry["why"]
        rejected.append(entry)
    else:
        rejected.append({"setup": describe(alt.setup),
                         "why": "fits without gradient checkpointing but is no faster than the larger micro-batch it allows"})
    return choice, (f"gradient checkpointing on: each layer keeps only its input and recomputes the rest "
                    f"in backward (~1/3 more compute), which is what lets micro-batch {choice.setup.micro_batch} fit")


def _micro_batches(per_gpu: int, micro_batch: int | None) -> list[int]:
    if micro_batch is not None:
        if per_gpu % micro_batch:
            raise UserError(f"--micro-batch {micro_batch} does not divide the {per_gpu} sequences each GPU "
                            f"takes per step; use a divisor of {per_gpu}")
        return [micro_batch]
    return [mb for mb in parallelism_facts()["planner_micro_batches"] if mb <= per_gpu and per_gpu % mb == 0]


def plan(model: ModelSpec, hardware: Hardware, *, method: str | None = None, parallel: str | None = None,
         seq_len: int = 2048, global_batch: int | None = None, micro_batch: int | None = None,
         lora_r: int = 16, lora_targets=ALL_LINEAR, tokens: int | None = None, epochs: float = 1.0,
         fsdp_version: int | None = None, long_context_features: bool = True, _suggest: bool = True) -> Plan:
    """The fastest configuration of `model` on `hardware` that fits; raises Infeasible (with the
    smallest catalog hardware that would fit) when none does."""
    if method is not None and method not in METHODS:
        raise UserError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if parallel is not None and parallel not in PARALLELS:
        raise UserError(f"unknown parallelism {parallel!r}; use one of {', '.join(PARALLELS)}")
    if seq_len < 1:
        raise UserError("--seq-len must be >= 1")
    if fsdp_version is not None and (fsdp_version not in (1, 2) or parallel != "fsdp"):
        raise UserError("--fsdp-version 1 or 2 goes with --parallel fsdp")
    targets = parse_lora_targets(lora_targets) if not isinstance(lora_targets, tuple) else lora_targets
    ws = hardware.world_size
    reasons: list[str] = []
    gb = global_batch if global_batch is not None else default_global_batch(model)
    if gb < 1:
        raise UserError("--global-batch must be >= 1")
    if micro_batch is not None and micro_batch < 1:
        raise UserError("--micro-batch must be >= 1")
    if gb % ws:
        lower, upper = (gb // ws) * ws, (gb // ws + 1) * ws
        choices = " or ".join(str(c) for c in sorted({c for c in (lower, upper) if c > 0}))
        raise UserError(f"global batch {gb} is not divisible by the {ws} GPUs of {hardware.label} "
                        f"(global = micro-batch x accumulation x GPUs); use {choices}")
    if global_batch is None:
        reasons.append(f"global batch {gb} sequences per optimizer step: the default for {model.id} "
                       f"({model.parameter_count() / 1e9:.1f}B parameters; 32 up to 13B, 64 above)")
    else:
        reasons.append(f"global batch {gb} sequences per optimizer step, as asked")
    per_gpu = gb // ws
    micro_batches = _micro_batches(per_gpu, micro_batch)

    rejected: list[dict] = []
    methods = [method] if method else list(METHODS)
    search = dict(model=model, parallel=parallel, seq_len=seq_len, micro_batches=micro_batches, per_gpu=per_gpu,
                  lora_r=lora_r, lora_targets=targets, rejected=rejected, fsdp_version=fsdp_version)
    chosen = _search(methods, "none", hardware, **search)
    if chosen is None:
        # CPU offload of parameters/optimizer, or Axolotl's long-context features: whichever fits with the
        # earlier method (full, LoRA, QLoRA), the faster of the two for the same method
        offloaded = None
        for offload in parallelism_facts()["planner_offload_order"]:
            offloaded = _search(methods, offload, hardware, **search)
            if offloaded is not None:
                break
        long_context = _search(methods, "none", hardware, **search,
                               variants=long_context_variants(hardware)) if long_context_features else None
        chosen = _earlier_or_faster(offloaded, long_context, rejected)
    if chosen is None:
        raise _infeasible(model, hardware, methods, parallel, seq_len, gb, lora_r, targets, rejected, _suggest)
    offload_note = chosen.setup.offload != "none"

    m = chosen.setup.method
    if method:
        reasons.insert(0, f"method {m}, as asked")
    else:
        skipped = [x for x in METHODS[: METHODS.index(m)]]
        reasons.insert(0, f"method {m}: the first of full, LoRA, QLoRA that fits"
                       + (" without offload" if not offload_note else "")
                       + (f" ({', '.join(skipped)} did not: see rejected)" if skipped else ""))
    features = _long_context_reason(chosen.setup)
    if features:
        ckpt_reason = ("gradient checkpointing on: the memory savers above need every activation byte it saves "
                       "(activation offloading requires it)")
    else:
        chosen, ckpt_reason = _maybe_without_checkpointing(chosen, micro_batches, per_gpu, rejected)
    s = chosen.setup
    accum = s.grad_accum
    est = estimate(s, tokens=tokens, epochs=epochs)
    mode = parallelism_facts()["modes"][s.parallel]
    if s.parallel == "fsdp" and s.fsdp_version == 1:
        mode = {**mode, "describe": "FSDP1 full shard with sharded quantized loading (rank 0 quantizes the 4-bit base "
                                    "layer by layer in CPU RAM): under ZeRO-3 and FSDP2, Axolotl 0.19 loads the whole "
                                    "quantized base onto every GPU first, and it does not fit on one"}
    if parallel:
        reasons.append(f"parallelism {s.parallel}, as asked: {mode['describe']}")
    elif ws == 1 and s.parallel == "single":
        reasons.append("parallelism single: one GPU, nothing to shard")
    else:
        reasons.append(f"parallelism {s.parallel}: {mode['describe']}; the fastest of the modes that fit "
                       f"({est.tokens_per_s:,.0f} tokens/s estimated)")
    if s.method == "full" and s.parallel in ("single", "ddp"):
        reasons.append("full fine-tune without sharding: Axolotl trains the bf16 model in pure bf16 "
                       "(no fp32 master weights)")
    if offload_note:
        reasons.append(f"offload {s.offload}: nothing fits on {hardware.label} without moving state to CPU RAM; "
                       f"needs ~{est.host_ram_gib:.0f} GiB of host RAM per node (the planner assumes "
                       f"{assumed_host_ram_gib(hardware):,.0f}); offload slows every step")
    else:
        reasons.append("no offload: everything fits in GPU memory")
    margin = parallelism_facts()["planner_memory_margin"]
    if features:
        reasons.append(features)
    reasons.append(f"micro-batch {s.micro_batch}: the largest that divides the {per_gpu * s.context_parallel} sequences "
                   f"each {'GPU' if s.context_parallel == 1 else 'context-parallel group'} "
                   f"takes per step and fits with {margin:.0%} of the usable memory to spare for estimate "
                   f"error ({est.peak_gpu_gib:.1f} of {est.usable_gpu_gib:.1f} GiB)")
    reasons.append(f"gradient accumulation {accum}: {s.micro_batch} x {accum} x {s.data_parallel} "
                   f"{'GPU(s)' if s.context_parallel == 1 else 'data-parallel group(s)'} = {gb} sequences per step")
    reasons.append(ckpt_reason)
    if s.sample_packing:
        reasons.append(f"sample packing on: every {s.seq_len}-token row is filled with whole samples "
                       "(flash-attention keeps them separate), so no compute goes to padding")
    else:
        reasons.append("sample packing off: it needs flash-attention, which this GPU lacks")
    if s.attn == "flash_attention_2":
        reasons.append(f"attention flash_attention_2: {hardware.gpu.id} has compute capability "
                       f"{hardware.gpu.compute_capability} (>= 8.0); memory linear in the sequence length")
    else:
        reasons.append(f"attention sdpa: {hardware.gpu.id} (compute capability {hardware.gpu.compute_capability}) "
                       "cannot run flash-attention 2")
    reasons.append(f"sequence length {s.seq_len} tokens, as asked"
                   + ("" if est.peak_phase != "loss" else
                      f"; the {s.model.vocab_size:,}-entry vocabulary's logits are the peak's largest activation"))
    return Plan(setup=s, estimate=est, reasons=reasons, rejected=rejected)


def _longest_fitting_sequence(model, hardware, methods, parallel, gb, lora_r, targets, seq_len) -> int | None:
    s = seq_len // 2
    while s >= 256:
        try:
            plan(model, hardware, method=methods[-1] if len(methods) == 1 else None, parallel=parallel,
                 seq_len=s, global_batch=gb, lora_r=lora_r, lora_targets=targets, _suggest=False)
            return s
        except Infeasible:
            s //= 2
    return None


def _infeasible(model, hardware, methods, parallel, seq_len, gb, lora_r, targets, rejected, suggest) -> Infeasible:
    what = "/".join(methods)
    closest = min((r for r in rejected if "peak_gpu_gib" in r and r["setup"].endswith(" ckpt")),
                  default=None, key=lambda r: r["peak_gpu_gib"])
    reason = f"{model.id} does not fit on {hardware.label} ({what}, sequence {seq_len})"
    if closest:
        reason += f": the closest, {closest['setup']}, {closest['why']}"
    suggestion = None
    details: dict = {"rejected": rejected}
    if suggest:
        hw = smallest_fitting_hardware(model, method=methods[0] if len(methods) == 1 else None, seq_len=seq_len,
                                       global_batch=gb, lora_r=lora_r, lora_targets=targets)
        suggestion = hw.label if hw else None
        longest = _longest_fitting_sequence(model, hardware, methods, parallel, gb, lora_r, targets, seq_len)
        if longest:
            reason += f"; on {hardware.label} it fits at sequence length {longest}"
            details["longest_sequence"] = longest
        if suggestion:
            reason += f"; the smallest catalog hardware that fits: {suggestion}"
    return Infeasible(reason, suggestion=suggestion, details=details)


def candidate_hardware() -> list[Hardware]:
    """Every catalog GPU in 1, 2, 4 and 8-GPU nodes, 1 to 4 nodes of 8, cheapest first (then fewest GPUs)."""
    out = []
    for g in gpus().values():
        for n in (1, 2, 4, 8):
            out.append(Hardware(gpu=g, gpus_per_node=n, nodes=1))
        for nodes in (2, 4):
            out.append(Hardware(gpu=g, gpus_per_node=8, nodes=nodes))
    return sorted(out, key=lambda h: (h.usd_per_hour, h.world_size))


def smallest_fitting_hardware(model: ModelSpec, *, method: str | None = None, seq_len: int = 2048,
                              global_batch: int | None = None, lora_r: int = 16,
                              lora_targets=ALL_LINEAR) -> Hardware | None:
    """The catalog hardware with the lowest total $/hour (then fewest GPUs) on which the planner
    fits the model without CPU offload; when no catalog hardware does, the cheapest that fits with
    offload; None when even 4 nodes of 8 GPUs do not suffice."""
    gb = global_batch if global_batch is not None else default_global_batch(model)
    with_offload = None
    for hw in candidate_hardware():
        if gb % hw.world_size:
            continue
        try:
            p = plan(model, hw, method=method, seq_len=seq_len, global_batch=gb, lora_r=lora_r,
                     lora_targets=lora_targets, _suggest=False)
        except Infeasible:
            continue
        if p.setup.offload == "none":
            return hw
        with_offload = with_offload or hw
    return with_offload
