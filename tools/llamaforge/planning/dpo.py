"""The preference stage after SFT (DPO): how a step is priced and how it is planned. The DPO recipes
themselves are rendered by recipe.dpo.

What a step is (TRL 1.9's DPOTrainer, which Axolotl 0.19 runs for `rl: dpo`): the chosen and the
rejected answer of each pair go through the policy in one forward pass (2 x micro-batch sequences,
padded to the longest, never packed); then, with the policy's activations and logits still held for
backward, the reference model runs a forward pass on the same batch without gradients; the loss
compares the two models' log-probabilities of the answers; backward runs through the policy only.

Where it starts: a new LoRA/QLoRA adapter on the *merged* SFT model. With a PEFT policy and no
separate reference model, TRL's reference is the policy with its adapter disabled, i.e. exactly the
merged SFT model, which is what DPO wants as its reference. (Training the SFT adapter on from
`lora_model_dir` instead would make the reference the pre-SFT base: Axolotl 0.19 loads no separate
reference adapter.) Full-parameter DPO would need a second frozen copy of the model as reference
and is not planned here.

How it is priced (`estimate_dpo`): memory is the SFT estimate of one step of 2 x micro-batch
unpacked sequences at the full sequence length (padding's worst case). That estimate counts the
logits at 12 bytes each (HF's upcast cross-entropy); DPO holds the policy's bf16 logits and its
saved bf16 log-softmax (2 + 2 bytes) and, during the reference forward, the reference's bf16
logits (2 bytes) and one layer's activations at a time without gradients, which the 12 cover.
Throughput: the reference forward adds 2 x matmul parameters FLOPs per token to the SFT step's
FLOPs per token; tokens/s counts the chosen and rejected sequences' tokens.

Pure: plain data in, plain data out."""

from __future__ import annotations

from dataclasses import replace

from ..errors import Infeasible, UserError
from .catalog import Hardware, ModelSpec
from .estimate import Estimate, estimate, matmul_params, parallelism_facts
from .plan import Plan, describe, plan
from .train_setup import TrainSetup

MEMORY_BASIS = ("the SFT step of 2 x micro-batch unpacked sequences of the full length; its logits term covers "
                "the policy's and the reference's logits")


# ---- pricing ---------------------------------------------------------------------------------


def sft_equivalent(setup: TrainSetup) -> TrainSetup:
    """The SFT step whose memory a DPO step of `setup` (micro_batch = pairs) is priced as."""
    return setup.with_(micro_batch=2 * setup.micro_batch, sample_packing=False)


def estimate_dpo(setup: TrainSetup, *, tokens: int | None = None, epochs: float = 1.0) -> Estimate:
    """Memory, throughput, hours and cost of DPO with `setup` (micro_batch counts pairs). `tokens`:
    chosen + rejected sequence tokens per epoch."""
    if not setup.is_adapter:
        raise UserError("DPO is planned with a LoRA or QLoRA adapter (the reference is the model with the "
                        "adapter disabled); full-parameter DPO needs a second frozen copy and is not modelled")
    base = estimate(sft_equivalent(setup))
    policy_flops = base.flops_per_token
    reference_flops = 2.0 * matmul_params(setup.model)
    tps = base.tokens_per_s * policy_flops / (policy_flops + reference_flops)
    hours = cost = None
    if tokens is not None:
        hours = tokens * epochs / tps / 3600.0
        cost = hours * setup.hardware.usd_per_hour
    notes = [
        f"DPO: {setup.micro_batch} pair(s) per micro-batch = {2 * setup.micro_batch} sequences (chosen and "
        f"rejected) of up to {setup.seq_len} tokens in one forward, padded, not packed",
        "DPO: the reference forward (the adapter disabled, no gradients) runs while the policy's activations "
        "and logits are held; it adds its bf16 logits and one layer's activations, inside the 12 bytes per logit "
        "counted for the cross-entropy",
        f"DPO: the reference forward adds {reference_flops / policy_flops:.0%} to the FLOPs of each token",
    ]
    return replace(base, setup=setup, tokens_per_s=tps,
                   tokens=tokens, epochs=epochs, hours=hours, cost_usd=cost,
                   assumptions=list(base.assumptions) + notes,
                   flops_per_token=policy_flops + reference_flops)


# ---- planning --------------------------------------------------------------------------------


def _largest_fitting(base: TrainSetup, per_gpu: int, headroom: float) -> tuple[TrainSetup, Estimate] | None:
    best = None
    for mb in parallelism_facts()["planner_micro_batches"]:
        if mb > per_gpu or per_gpu % mb:
            continue
        s = base.with_(micro_batch=mb, grad_accum=per_gpu // mb)
        est = estimate_dpo(s)
        if est.peak_gpu_gib > est.usable_gpu_gib * (1.0 - headroom):
            break
        best = (s, est)
    return best


def plan_dpo(model: ModelSpec, hardware: Hardware, *, method: str | None, seq_len: int = 2048,
             global_batch: int | None = None, lora_r: int = 16, tokens: int | None = None, epochs: float = 1.0) -> Plan:
    """The DPO plan for `model` on `hardware` (plan()'s own arguments; micro-batch and global batch count pairs): the parallelism and offload
    the SFT planner chooses for the same model, hardware and method, then the largest micro-batch of
    pairs that fits, with or without gradient checkpointing, whichever is faster."""
    if method not in ("lora", "qlora"):
        raise UserError(f"a DPO recipe needs method lora or qlora, not {method or 'the planner’s choice'}: "
                        "the reference is the merged SFT model with the new adapter disabled")
    sft = plan(model, hardware, method=method, seq_len=seq_len, global_batch=global_batch, lora_r=lora_r)
    pf = parallelism_facts()
    start = sft.setup.with_(sample_packing=False)
    per_gpu = start.micro_batch * start.grad_accum
    options = []
    for ckpt, headroom in ((True, pf["planner_memory_margin"]), (False, pf["planner_no_checkpointing_headroom"])):
        found = _largest_fitting(start.with_(grad_ckpt=ckpt), per_gpu, headroom)
        if found is not None:
            options.append(found)
    if not options:
        smallest = start.with_(micro_batch=1, grad_accum=per_gpu, grad_ckpt=True)
        est = estimate_dpo(smallest)
        raise Infeasible(
            f"DPO of {model.id} on {hardware.label} does not fit: one pair (2 sequences of {seq_len} tokens) "
            f"with {describe(smallest)} needs ~{est.peak_gpu_gib:.1f} GiB per GPU of {est.usable_gpu_gib:.1f} usable",
            suggestion="a shorter seq_len (a pair's prompt + its longer answer must fit), "
                       + ("QLoRA, " if method == "lora" else "") + "or GPUs with more memory",
        )
    setup, est = max(options, key=lambda o: o[1].tokens_per_s)
    if tokens is not None:
        est = estimate_dpo(setup, tokens=tokens, epochs=epochs)
    margin = pf["planner_memory_margin"] if setup.grad_ckpt else pf["planner_no_checkpointing_headroom"]
    ws = setup.world_size
    reasons = [
        f"method {setup.method}, a new adapter on the merged SFT model: the reference is that model with the adapter "
        "disabled (PEFT), so DPO needs no second copy of the weights",
        f"global batch {setup.global_batch} pairs per optimizer step"
        + (", as asked" if global_batch else f": the SFT planner's default for {model.id}"),
        f"parallelism {setup.parallel}" + (f", offload {setup.offload}" if setup.offload != "none" else "")
        + ": what the SFT planner chooses for this model, hardware and method",
        f"micro-batch {setup.micro_batch} pair(s) = {2 * setup.micro_batch} sequences in one forward: the largest "
        f"that divides the {per_gpu} pairs each GPU takes per step and fits with {margin:.0%} of the usable memory "
        f"to spare ({est.peak_gpu_gib:.1f} of {est.usable_gpu_gib:.1f} GiB)",
        f"gradient accumulation {setup.grad_accum}: {setup.micro_batch} x {setup.grad_accum} x {ws} GPU(s) = "
        f"{setup.global_batch} pairs per step",
        "gradient checkpointing " + ("on: it is what lets this micro-batch fit" if setup.grad_ckpt else
                                     "off: the micro-batch fits without it and skipping the recomputation is faster"),
        "sample packing off: TRL's DPO trainer pads each batch of pairs to its longest sequence",
        f"attention {setup.attn}; sequence length {setup.seq_len} tokens per side of a pair (prompt + answer)",
    ]
    return Plan(setup=setup, estimate=est, reasons=reasons, rejected=sft.rejected)
