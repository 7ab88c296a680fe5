"""`llamaforge serve-plan`: where the model will run after training — the vLLM or Ollama / llama.cpp
configuration that serves it on given hardware, its memory per GPU, how many sequences of the
context run at once, and the flags. The logic lives in llamaforge.planning.serve_plan and
llamaforge.planning.serve_estimate; this module parses arguments and prints."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ._app import app
from ._common import JsonOpt, bounded, console, err_console, print_json, print_plan_notes

GpusOpt = Annotated[str, typer.Option("--gpus", "-g", help="Hardware: <N>x<GPU> (e.g. 2xRTX3090-24GB) or a Mac (1xM3Ultra-512GB).")]


def serve_request(model: str, gpus: str, engine: str | None, **kw):
    """A ServeRequest from command-line values (a Mac serves with Ollama unless told otherwise)."""
    from ..planning.catalog import get_model, is_apple_hardware, parse_apple_machine, parse_hardware
    from ..planning.serve_plan import ServeRequest

    if is_apple_hardware(gpus):
        device, count = parse_apple_machine(gpus), 1
        engine = engine or "ollama"
    else:
        hw = parse_hardware(gpus)
        if hw.nodes != 1:
            from ..errors import UserError

            raise UserError("serve-plan plans one node; give <N>x<GPU> without nodes")
        device, count = hw.gpu, hw.gpus_per_node
        engine = engine or "vllm"
    return ServeRequest(model=get_model(model), device=device, count=count, engine=engine, **kw)


def flags_line(plan) -> str:
    """The plan as the engine's command line (vLLM) or settings (Ollama / llama.cpp)."""
    from ..planning.serve_plan import vllm_arguments

    s, fl = plan.setup, plan.estimate.flags
    if s.engine == "vllm":
        return "vllm serve MODEL " + " ".join(flag if value is None else f"{flag} {value}" for flag, value in vllm_arguments(plan))
    if s.engine == "ollama":
        env = "OLLAMA_NUM_PARALLEL=" + str(fl["num_parallel"])
        if fl["flash_attention"]:
            env += f" OLLAMA_FLASH_ATTENTION=1 OLLAMA_KV_CACHE_TYPE={fl['kv_cache_type']}"
        quant = f" -q {fl['quantization']}" if fl["quantization"] != "f16" else ""
        return (f"{env} ollama serve;  ollama create NAME{quant} -f Modelfile  "
                f"(Modelfile: PARAMETER num_ctx {fl['num_ctx']})")
    fa = f" -fa on -ctk {fl['kv_cache_type']} -ctv {fl['kv_cache_type']}" if fl["flash_attention"] else ""
    return (f"llama-server -m MODEL-{fl['quantization']}.gguf -c {fl['num_ctx'] * fl['num_parallel']} "
            f"--parallel {fl['num_parallel']} -ngl 99{fa}")


@app.command("serve-plan")
def serve_plan_command(
    model: Annotated[str, typer.Option("--model", "-m", help="Catalog model id or a path to a local config.json.")],
    gpus: GpusOpt,
    engine: Annotated[str | None, typer.Option("--engine", help="vllm | ollama | llama.cpp (default: vllm on GPUs, ollama on a Mac).")] = None,
    context: Annotated[int, typer.Option("--context", "--max-model-len", help="Tokens of one sequence (prompt + answer): vLLM's --max-model-len, Ollama's num_ctx.", callback=bounded(1))] = 4096,
    weights: Annotated[str | None, typer.Option("--weights", help="Serving format: vLLM bf16|fp8|int8|awq|gptq|bnb_nf4; GGUF f16|q8_0|q6_K|q5_K_M|q4_K_M|q4_K_S|q4_0|q3_K_M|q2_K (default: the most precise that fits).")] = None,
    kv_cache_dtype: Annotated[str | None, typer.Option("--kv-cache-dtype", help="vLLM auto|fp8; Ollama/llama.cpp f16|q8_0|q4_0 (default: the planner's).")] = None,
    max_loras: Annotated[int, typer.Option("--max-loras", help="LoRA adapters served on the one base (vLLM multi-LoRA).", callback=bounded(0))] = 0,
    max_lora_rank: Annotated[int, typer.Option("--max-lora-rank", help="The largest adapter rank (vLLM accepts 1, 8, 16, 32, 64, 128, 256, 320, 512).", callback=bounded(1))] = 16,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Sequences of --context that must fit in vLLM's KV cache at once.", callback=bounded(1))] = 1,
    gpu_memory_utilization: Annotated[float | None, typer.Option("--gpu-memory-utilization", help="Pin vLLM's share of each GPU (default: 0.9, then 0.95 with --enforce-eager).", callback=bounded(above=0, high=1))] = None,
    max_num_seqs: Annotated[int | None, typer.Option("--max-num-seqs", help="Pin vLLM's sequences in flight.", callback=bounded(1))] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Ollama's OLLAMA_NUM_PARALLEL / llama-server --parallel.", callback=bounded(1))] = 1,
    reserve_gib: Annotated[float, typer.Option("--reserve-gib", help="GiB of each GPU other processes hold (a desktop on the card that drives the monitor).", callback=bounded(0))] = 0.0,
    wired_limit_gib: Annotated[float | None, typer.Option("--wired-limit-gib", help="A Mac's GPU memory limit if you raised it (sudo sysctl iogpu.wired_limit_mb=...).", callback=bounded(above=0))] = None,
    json_out: JsonOpt = False,
) -> None:
    """Plan serving: memory per GPU (weights, LoRA slots, KV cache, overheads), concurrent sequences at
    the context, decode speed, the engine's flags. Exit 1, with the longest context that fits and the
    cheapest catalog hardware that serves it, when nothing fits."""
    from ..errors import Infeasible

    req = serve_request(model, gpus, engine, context=context, weights=weights, kv_dtype=kv_cache_dtype,
                        max_loras=max_loras, max_lora_rank=max_lora_rank if max_loras else 0,
                        min_concurrency=concurrency, gpu_memory_utilization=gpu_memory_utilization,
                        max_num_seqs=max_num_seqs, num_parallel=parallel, reserve_gib=reserve_gib,
                        wired_limit_gib=wired_limit_gib)
    from ..planning.serve_plan import plan_serving

    try:
        plan = plan_serving(req)
    except Infeasible as exc:
        if json_out:
            print_json({"ok": False, "reason": str(exc), "suggestion": exc.suggestion,
                        "longest_context": exc.details.get("longest_context"), "rejected": exc.details.get("rejected", [])})
        else:
            err_console.print(f"[bold red]refused:[/] {exc}", soft_wrap=True, highlight=False)
        sys.exit(exc.exit_code)
    if json_out:
        print_json({"ok": True, **plan.to_dict(), "command": flags_line(plan)})
        return
    print_serve_plan(plan)


def print_serve_plan(plan) -> None:
    from rich.table import Table

    s, est = plan.setup, plan.estimate
    where = "per GPU" if not s.is_mac else "on the Mac"
    t = Table(title=f"Serving plan: {s.model.id} with {s.engine} on {s.label}", title_justify="left")
    t.add_column(where, style="bold")
    t.add_column("GiB", justify="right")
    for k, v in est.breakdown.items():
        t.add_row(k.replace("_", " "), f"{v:,.2f}")
    t.add_section()
    t.add_row("of" + (" vLLM's share" if s.engine == "vllm" else " available"), f"{est.budget_gib:,.2f}")
    console.print(t)
    if s.engine == "vllm":
        console.print(f"KV cache: {est.kv_tokens:,} tokens -> {est.concurrency:.1f} sequences of {s.context:,} tokens at once; "
                      f"the longest one sequence can be: {plan.longest_context:,} tokens", soft_wrap=True)
    else:
        console.print(f"{s.num_parallel} sequence(s) of {s.context:,} tokens; the longest num_ctx that fits: "
                      f"{plan.longest_context:,}", soft_wrap=True)
    console.print(f"one sequence decodes at ~{est.decode_tokens_per_s:,.0f} tokens/s", soft_wrap=True)
    console.print(f"[bold]command[/] {flags_line(plan)}", soft_wrap=True, highlight=False)
    print_plan_notes(plan.reasons, plan.rejected, est.assumptions)

