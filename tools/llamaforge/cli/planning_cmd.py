"""`llamaforge estimate` (memory, throughput and cost of one configuration) and `llamaforge plan`
(the fastest configuration that fits given hardware). The logic lives in llamaforge.planning.estimate and
llamaforge.planning.plan; this module parses arguments and prints."""

from __future__ import annotations

import math
import re
import sys
from typing import Annotated

import typer

from ..errors import UserError
from ._app import app
from ._common import JsonOpt, bounded, console, err_console, fmt_gib, print_json, print_plan_notes

# Input sanity bounds, far above any real run (Llama 3 pre-trained on 15T tokens): past them the
# hours and costs overflow to infinity instead of meaning anything.
MAX_TOKENS = 10**15
MAX_EPOCHS = 10_000

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Catalog model id (see `llamaforge models`) or a path to a local config.json.")]
GpusOpt = Annotated[str, typer.Option("--gpus", "-g", help="Hardware as <N>x<GPU>, e.g. 8xH100-80GB (see `llamaforge gpus`).")]
NodesOpt = Annotated[int | None, typer.Option("--nodes", help="Number of nodes with that many GPUs each.", callback=bounded(1))]
SeqOpt = Annotated[int, typer.Option("--seq-len", help="Tokens per sequence (packed row).", callback=bounded(1))]
TokensOpt = Annotated[str | None, typer.Option("--tokens", help="Training tokens per epoch for hours and cost: 2.5M, 1.2B, 800k or a number.")]
EpochsOpt = Annotated[float, typer.Option("--epochs", help="Passes over the tokens.", callback=bounded(above=0, high=MAX_EPOCHS))]
LoraROpt = Annotated[int, typer.Option("--lora-r", help="LoRA rank.", callback=bounded(1))]
TargetsOpt = Annotated[str, typer.Option("--lora-targets", help="attn | all | mlp | a comma list of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj.")]
FsdpVersionOpt = Annotated[int | None, typer.Option(
    "--fsdp-version", help="With --parallel fsdp: 2 (Axolotl's default) or 1 (deprecated; with a 4-bit base it "
    "loads the base sharded, layer by layer on rank 0 — cpu_ram_efficient_loading + qlora_sharded_model_loading).")]

ContextParallelOpt = Annotated[int, typer.Option("--context-parallel", help="Axolotl context_parallel_size: each sequence split over this many GPUs (ring attention).")]
TensorParallelOpt = Annotated[int, typer.Option("--tensor-parallel", help="Axolotl tensor_parallel_size: heads and MLP columns split over this many GPUs.")]
ExpertParallelOpt = Annotated[int, typer.Option("--expert-parallel", help="Axolotl expert_parallel_size (mixture-of-experts models).")]
DpReplicateOpt = Annotated[int, typer.Option("--dp-replicate", help="Axolotl dp_replicate_size: FSDP replicas (HSDP).")]
TiledMlpOpt = Annotated[bool, typer.Option("--tiled-mlp/--no-tiled-mlp", help="Axolotl tiled_mlp: the MLP runs on sequence shards.")]
TiledShardsOpt = Annotated[int, typer.Option("--tiled-mlp-shards", help="tiled_mlp_num_shards (0: Axolotl's ceil(tokens / 32768)).")]
ActOffloadOpt = Annotated[str, typer.Option("--activation-offload", help="none | cpu (activation_offloading: true) | legacy | disk.")]
LossOpt = Annotated[str, typer.Option("--loss", help="default | cce (Cut Cross Entropy plugin) | liger (fused linear cross-entropy) | chunked.")]

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def parse_token_count(text: str | None) -> int | None:
    """`2.5M` -> 2_500_000; `1.2B`, `800k`, `1e9`, `1_000_000` work too."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9][0-9_,]*(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([kKmMbBgGtT]?)\s*", text)
    if not m:
        raise UserError(f"--tokens {text!r}: write a count like 2.5M, 1.2B, 800k or 1000000")
    value = float(m.group(1).replace("_", "").replace(",", "")) * _SUFFIX[m.group(2).lower()]
    if not math.isfinite(value) or not 1 <= value <= MAX_TOKENS:
        raise UserError(f"--tokens {text!r}: give a count from 1 to {MAX_TOKENS:.0e} tokens, like 2.5M, 1.2B or 800k")
    return int(round(value))


def _hardware(gpus: str, nodes: int | None):
    from ..planning.catalog import parse_hardware

    return parse_hardware(gpus, nodes=nodes)


def _money(x: float | None) -> str:
    return "—" if x is None else f"${x:,.0f}" if x >= 100 else f"${x:,.2f}"


def _hours(x: float | None) -> str:
    return "—" if x is None else f"{x:,.1f} h" if x >= 1 else f"{x * 60:,.0f} min"


def _estimate_tables(est, title: str) -> None:
    from rich.table import Table

    s = est.setup
    table = Table(title=title, title_justify="left")
    table.add_column("per GPU", style="bold")
    table.add_column("GiB", justify="right")
    for k, v in sorted(est.breakdown.items(), key=lambda kv: -kv[1]):
        table.add_row(k.replace("_", " "), f"{v:,.2f}")
    colour = {"fits": "green", "tight": "bold yellow", "does not fit": "bold red"}[est.verdict]
    table.add_section()
    table.add_row(f"peak ({est.peak_phase})", f"{est.peak_gpu_gib:,.2f}")
    table.add_row(f"usable on {s.hardware.gpu.id}", f"{est.usable_gpu_gib:,.2f}")
    table.add_row("verdict", f"[{colour}]{est.verdict_text()}[/]")
    if est.paged_optimizer_gib:
        table.add_row("paged optimizer (evictable)", f"{est.paged_optimizer_gib:,.2f}")
    table.add_row("nvidia-smi would show ~", f"{est.device_gib:,.1f}")
    console.print(table)

    host = Table(title="Host RAM per node", title_justify="left")
    host.add_column("part")
    host.add_column("GiB", justify="right")
    for k, v in est.host_breakdown.items():
        host.add_row(k.replace("_", " "), f"{v:,.1f}")
    host.add_section()
    host.add_row("needed", f"{est.host_ram_gib:,.1f}")
    console.print(host)

    tokens = f"{est.tokens:,} tokens x {est.epochs:g} epochs" if est.tokens is not None else "no --tokens given"
    console.print(
        f"throughput ~{est.tokens_per_s:,.0f} tokens/s on {s.hardware.world_size} GPU(s) "
        f"(utilisation {est.mfu:.0%}, {est.flops_per_token / 1e9:,.1f} GFLOP/token); "
        f"{tokens}: {_hours(est.hours)}, {_money(est.cost_usd)} at ${s.hardware.usd_per_hour:,.2f}/h"
    )
    console.print("[bold]assumptions[/]")
    for a in est.assumptions:
        console.print(f"  - {a}", soft_wrap=True)


@app.command("estimate")
def estimate_command(
    gpus: GpusOpt,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Catalog model id (see `llamaforge models`) or a path to a local config.json (on a Mac: omit it to see every catalog model).")] = None,
    method: Annotated[str | None, typer.Option("--method", help="full | lora | qlora (on a Mac: the plan's choice when omitted).")] = None,
    nodes: NodesOpt = None,
    parallel: Annotated[str | None, typer.Option("--parallel", help="single | ddp | zero1 | zero2 | zero3 | fsdp (default: single on one GPU, ddp on more).")] = None,
    offload: Annotated[str, typer.Option("--offload", help="none | optimizer | params | all")] = "none",
    fsdp_version: FsdpVersionOpt = None,
    lora_r: LoraROpt = 16,
    lora_targets: TargetsOpt = "all",
    weight_format: Annotated[str, typer.Option("--weight-format", help="Base weights: bf16 | fp32 | int8 (lora) | nf4 | nf4_dq (qlora; default nf4_dq, Axolotl's double quantization).")] = "",
    seq_len: SeqOpt = 2048,
    micro_batch: Annotated[int, typer.Option("--micro-batch", help="Sequences per GPU per forward pass.", callback=bounded(1))] = 1,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Gradient accumulation steps.", callback=bounded(1))] = 1,
    grad_ckpt: Annotated[bool, typer.Option("--grad-ckpt/--no-grad-ckpt", help="Gradient checkpointing.")] = True,
    optimizer: Annotated[str, typer.Option("--optimizer", help="Axolotl optimizer name, e.g. adamw_torch_fused, adamw_bnb_8bit, paged_adamw_8bit.")] = "adamw_torch_fused",
    attn: Annotated[str | None, typer.Option("--attn", help="flash_attention_2 | sdpa | eager (default: flash_attention_2 where the GPU runs it, else sdpa).")] = None,
    sample_packing: Annotated[bool | None, typer.Option("--sample-packing/--no-sample-packing", help="Pack rows to the sequence length (default: on with flash-attention, as the recipes do).")] = None,
    pad_to_sequence_len: Annotated[bool, typer.Option("--pad-to-sequence-len/--no-pad-to-sequence-len", help="Without packing: pad every row to --seq-len (fixed-size batches) instead of to the longest in the batch.")] = False,
    torch_compile: Annotated[bool, typer.Option("--torch-compile", help="Axolotl torch_compile: true.")] = False,
    stage: Annotated[str, typer.Option("--stage", help="sft | dpo (a DPO step: chosen + rejected pairs and the reference forward).")] = "sft",
    context_parallel: ContextParallelOpt = 1,
    tensor_parallel: TensorParallelOpt = 1,
    expert_parallel: ExpertParallelOpt = 1,
    dp_replicate: DpReplicateOpt = 1,
    tiled_mlp: TiledMlpOpt = False,
    tiled_mlp_shards: TiledShardsOpt = 0,
    activation_offload: ActOffloadOpt = "none",
    loss: LossOpt = "default",
    quantize_experts: Annotated[bool, typer.Option("--quantize-experts", help="Axolotl quantize_moe_experts: 4/8-bit routed experts.")] = False,
    lora_expert_targets: Annotated[str, typer.Option("--lora-expert-targets", help="LoRA on routed experts: gate_up_proj,down_proj (lora_target_parameters).")] = "",
    tokens: TokensOpt = None,
    epochs: EpochsOpt = 1.0,
    wired_limit_gib: Annotated[float | None, typer.Option("--wired-limit-gib", help="On a Mac: the GPU memory limit if you raised it (sudo sysctl iogpu.wired_limit_mb=...).", callback=bounded(above=0))] = None,
    bits: Annotated[int | None, typer.Option("--bits", help="On a Mac with --method qlora: 4 or 8 (default: the plan's choice).")] = None,
    tokens_per_row: Annotated[int | None, typer.Option("--tokens-per-row", help="On a Mac: the mean tokens of a row, for the speed (default: --seq-len).", callback=bounded(1))] = None,
    json_out: JsonOpt = False,
) -> None:
    """Peak GPU memory, host RAM, throughput, hours and cost of one fine-tuning configuration.
    Exit 0 when it fits (also when tight: within 5% of the usable memory), 1 when it does not. On a Mac
    (--gpus 1xM3Ultra-512GB): MLX-LM's plan."""
    from ..planning.catalog import get_model, is_apple_hardware
    from ..planning.estimate import estimate
    from ..planning.train_setup import TrainSetup, parse_lora_targets

    if is_apple_hardware(gpus):
        from .planning_mac_cmd import estimate_on_mac

        code = estimate_on_mac(gpus, model=model, method=method, seq_len=seq_len, lora_r=lora_r,
                               tokens=parse_token_count(tokens), epochs=epochs, json_out=json_out,
                               wired_limit_gib=wired_limit_gib, bits=bits, tokens_per_row=tokens_per_row)
        raise typer.Exit(code)
    if model is None or method is None:
        raise UserError("estimate needs --model and --method on GPUs (e.g. --model llama-3.1-8b --method qlora)")
    if stage not in ("sft", "dpo"):
        raise UserError(f"--stage {stage!r}: use sft or dpo")
    hw = _hardware(gpus, nodes)
    mode = parallel or ("single" if hw.world_size == 1 else "ddp")
    if fsdp_version is not None and mode != "fsdp":
        raise UserError(f"--fsdp-version goes with --parallel fsdp, not {mode}")
    chosen_attn = attn or ("flash_attention_2" if hw.gpu.supports_flash_attention else "sdpa")
    setup = TrainSetup(
        model=get_model(model), hardware=hw, method=method, parallel=mode, offload=offload,
        weight_format=weight_format, lora_r=lora_r, lora_targets=parse_lora_targets(lora_targets), seq_len=seq_len,
        micro_batch=micro_batch, grad_accum=grad_accum, grad_ckpt=grad_ckpt, optimizer=optimizer,
        attn=chosen_attn,
        sample_packing=(chosen_attn == "flash_attention_2") if sample_packing is None else sample_packing,
        pad_to_sequence_len=pad_to_sequence_len or None, torch_compile=torch_compile,
        fsdp_version=fsdp_version or 2, context_parallel=context_parallel, tensor_parallel=tensor_parallel,
        expert_parallel=expert_parallel, dp_replicate=dp_replicate, tiled_mlp=tiled_mlp,
        tiled_mlp_shards=tiled_mlp_shards, activation_offload=activation_offload, loss=loss,
        quantize_experts=quantize_experts,
        lora_expert_targets=tuple(t.strip() for t in lora_expert_targets.split(",") if t.strip()),
    )
    if stage == "dpo":
        from ..planning.dpo import estimate_dpo as price
    else:
        price = estimate
    est = price(setup, tokens=parse_token_count(tokens), epochs=epochs)
    if json_out:
        print_json(est.to_dict())
    else:
        _estimate_tables(est, f"{setup.model.id} {'DPO ' if stage == 'dpo' else ''}{setup.method} on {hw}: {setup.parallel}"
                              + (" (FSDP1)" if setup.parallel == "fsdp" and setup.fsdp_version == 1 else "")
                              + (f", offload {setup.offload}" if setup.offload != "none" else "")
                              + f", {setup.micro_batch} x {setup.seq_len} tokens"
                              + (f" over {setup.context_parallel} GPUs (context parallel)" if setup.context_parallel > 1 else ""))
    if not est.fits:
        raise typer.Exit(1)


@app.command("plan")
def plan_command(
    model: ModelOpt,
    gpus: GpusOpt,
    nodes: NodesOpt = None,
    method: Annotated[str | None, typer.Option("--method", help="full | lora | qlora (default: full, then LoRA, then QLoRA, the first that fits).")] = None,
    parallel: Annotated[str | None, typer.Option("--parallel", help="Force single | ddp | zero1 | zero2 | zero3 | fsdp.")] = None,
    seq_len: SeqOpt = 2048,
    global_batch: Annotated[int | None, typer.Option("--global-batch", help="Sequences per optimizer step (default 32 up to 13B, 64 above).", callback=bounded(1))] = None,
    micro_batch: Annotated[int | None, typer.Option("--micro-batch", help="Force the micro-batch.", callback=bounded(1))] = None,
    fsdp_version: FsdpVersionOpt = None,
    lora_r: LoraROpt = 16,
    lora_targets: TargetsOpt = "all",
    tokens: TokensOpt = None,
    epochs: EpochsOpt = 1.0,
    json_out: JsonOpt = False,
) -> None:
    """The fastest configuration that fits the hardware, with the reasons for every choice and the
    alternatives refused. Exit 1, with the reason and the smallest hardware that fits, when none does."""
    from ..planning.catalog import get_model
    from ..errors import Infeasible
    from ..planning.plan import plan
    from ..planning.train_setup import parse_lora_targets

    hw = _hardware(gpus, nodes)
    spec = get_model(model)
    try:
        p = plan(spec, hw, method=method, parallel=parallel, seq_len=seq_len, global_batch=global_batch,
                 micro_batch=micro_batch, lora_r=lora_r, lora_targets=parse_lora_targets(lora_targets),
                 tokens=parse_token_count(tokens), epochs=epochs, fsdp_version=fsdp_version)
    except Infeasible as exc:
        if json_out:
            print_json({"ok": False, "reason": str(exc), "suggestion": exc.suggestion,
                        "longest_sequence": exc.details.get("longest_sequence"),
                        "rejected": exc.details.get("rejected", [])})
        else:
            err_console.print(f"[bold red]refused:[/] {exc}", soft_wrap=True, highlight=False)
        sys.exit(exc.exit_code)
    if json_out:
        print_json({"ok": True, **p.to_dict()})
        return
    _print_plan(p)


def _long_context_words(s) -> list[str]:
    words = [f"context parallel {s.context_parallel}"] if s.context_parallel > 1 else []
    words += [{"cce": "Cut Cross Entropy", "liger": "Liger fused cross-entropy", "chunked": "chunked cross-entropy"}[s.loss]] \
        if s.loss != "default" else []
    words += ["tiled MLP"] if s.tiled_mlp else []
    words += [f"activation offloading ({s.activation_offload})"] if s.activation_offload != "none" else []
    return words


def _print_plan(p) -> None:
    from rich.table import Table

    from ..planning.train_setup import estimate_cli_args

    s, est = p.setup, p.estimate
    t = Table(title=f"Plan: {s.model.id} on {s.hardware}", title_justify="left", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    rows = [
        ("method", s.method + (f" (r={s.lora_r}, alpha={s.alpha}, {len(s.lora_targets)} target modules)" if s.is_adapter else "")),
        ("weights", s.weight_format),
        ("parallelism", s.parallel + (f" (FSDP{s.fsdp_version})" if s.parallel == "fsdp" else "")),
        ("offload", s.offload),
        ("sequence length", f"{s.seq_len:,}"),
        ("micro-batch x accumulation x GPUs", f"{s.micro_batch} x {s.grad_accum} x {s.world_size} = {s.global_batch}")
        if s.data_parallel == s.world_size else
        ("micro-batch x accumulation x data-parallel groups",
         f"{s.micro_batch} x {s.grad_accum} x {s.data_parallel} = {s.global_batch}"),
        *([("long context", ", ".join(_long_context_words(s)))] if _long_context_words(s) else []),
        ("gradient checkpointing", "on" if s.grad_ckpt else "off"),
        ("sample packing", "on" if s.sample_packing else "off"),
        ("attention", s.attn),
        ("optimizer", s.optimizer),
        ("peak GPU memory", f"{fmt_gib(est.peak_gpu_gib)} of {fmt_gib(est.usable_gpu_gib)} usable ({est.verdict_text()})"),
        ("host RAM per node", fmt_gib(est.host_ram_gib)),
        ("throughput", f"~{est.tokens_per_s:,.0f} tokens/s"),
        ("reproduce", " ".join(estimate_cli_args(s, tokens=None))),
    ]
    if est.tokens is not None:
        rows.append(("time and cost", f"{_hours(est.hours)}, {_money(est.cost_usd)}"))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    print_plan_notes(p.reasons, p.rejected)
