"""`llamaforge export` (a gated run -> served and shared files) and `llamaforge ladder` (the
8B -> 70B -> 405B scaling plan for a corpus). The logic lives in llamaforge.export and
llamaforge.planning.ladder; this module parses arguments and prints."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..files import check_folder_to_write, check_input_folder
from ._app import app
from ._common import JsonOpt, bounded, checked_path, console, err_console, print_json
from .planning_cmd import MAX_EPOCHS


def _size(n: int) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:,.1f} {unit}"
    return f"{n} B"


@app.command("export")
def export_command(
    run_dir: Annotated[str, typer.Argument(help="The run folder (runs/<name>) or its full stage (runs/<name>/full).",
                                           callback=checked_path(check_input_folder))],
    merge: Annotated[bool, typer.Option("--merge", help="Merge the adapter into its base and verify the merged model's logits.")] = False,
    quantize: Annotated[str | None, typer.Option("--quantize", help="nf4: also write the merged model in 4-bit NF4 (bitsandbytes; needs a CUDA GPU).")] = None,
    ollama: Annotated[bool, typer.Option("--ollama", help="Write an Ollama Modelfile (persona SYSTEM prompt, temperature 0.7, top_p 0.9).")] = False,
    vllm: Annotated[bool, typer.Option("--vllm", help="Write serve_vllm.sh (vLLM's OpenAI-compatible server; --enable-lora when not merged).")] = False,
    push: Annotated[str | None, typer.Option("--push", help="Upload the export to this Hugging Face repo (owner/name); without a token, list what would be uploaded.")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Export folder (default: RUN_DIR/export).",
                                               callback=checked_path(check_folder_to_write))] = None,
    force: Annotated[bool, typer.Option("--force", help="Export a run whose health or gates did not pass (recorded in the model card).")] = False,
    serve_gpus: Annotated[str | None, typer.Option("--serve-gpus", help="Plan --vllm / --ollama for this hardware (e.g. 1xRTX4070S-12GB, 1xM3Ultra-512GB): their flags come from the serving plan, and an export whose server would not start is refused.")] = None,
    serve_context: Annotated[int | None, typer.Option("--serve-context", help="Context to serve with --serve-gpus (default: the stage's sequence_len).", callback=bounded(1))] = None,
    serve_reserve_gib: Annotated[float, typer.Option("--serve-reserve-gib", help="GiB of each serving GPU other processes hold (a desktop).", callback=bounded(0))] = 0.0,
    json_out: JsonOpt = False,
) -> None:
    """Export a gated full run: the adapter (or merged model), serving files, a model card, a report with hashes."""
    from ..export import ExportOptions, export_run

    opts = ExportOptions(merge=merge, quantize=quantize, ollama=ollama, vllm=vllm, push=push, output=output, force=force,
                         serve_gpus=serve_gpus, serve_context=serve_context, serve_reserve_gib=serve_reserve_gib)
    step = None if json_out else (lambda text: err_console.print(f"[dim]{text}...[/]", soft_wrap=True, highlight=False))
    warn = lambda text: err_console.print(f"[yellow]warning:[/] {text}", soft_wrap=True, highlight=False)  # noqa: E731
    result = export_run(run_dir, opts, on_step=step, on_warning=warn)
    if json_out:
        print_json(result.to_dict())
        return
    report = result.report
    verdict = report["verdict"]
    if verdict["forced"]:
        console.print(f"[yellow]forced past:[/] {'; '.join(verdict['problems'])} (recorded in the model card)", soft_wrap=True)
    table = Table(title=f"export written to {result.output}")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    for f in report["files"]:
        table.add_row(f["path"], _size(f["bytes"]))
    console.print(table)
    if report["merge"]:
        m = report["merge"]
        console.print(f"merge verified: max |logit difference| vs base + adapter {m['max_abs_logit_diff']:.2e} "
                      f"(tolerance {m['tolerance']:g}, {m['dtype']}); the adapter moves the base's logits by up to "
                      f"{m['adapter_effect']:.3g}", soft_wrap=True)
    if report["ollama"]:
        console.print(f"Ollama: cd {result.output} && {report['ollama']['create']}", soft_wrap=True)
    if report["vllm"]:
        console.print(f"vLLM:   bash {result.output}/serve_vllm.sh", soft_wrap=True)
    if result.push:
        p = result.push
        if p.dry_run:
            console.print(f"[yellow]{p.reason}:[/] nothing uploaded. `--push {p.repo_id}` would upload {len(p.files)} files "
                          f"({_size(p.total_bytes)}):", soft_wrap=True)
            for f in p.files:
                console.print(f"  {f['path']}  {_size(f['bytes'])}", soft_wrap=True, highlight=False)
        else:
            console.print(f"uploaded {len(p.files)} files ({_size(p.total_bytes)}) to {p.url} (a private repo unless it existed)",
                          soft_wrap=True)


@app.command("ladder")
def ladder_command(
    corpus: Annotated[str, typer.Option("--corpus", help="The built corpus: its folder or manifest.json.")],
    gpus: Annotated[list[str] | None, typer.Option("--gpus", "-g", help="Hardware (NxGPU): once for every rung, or once per rung in order. Default: each rung's committed recipe.")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", help="Passes over the corpus (default: facts/ladder.yaml, 3).",
                                                 callback=bounded(above=0, high=MAX_EPOCHS))] = None,
    json_out: JsonOpt = False,
) -> None:
    """The scaling ladder for a corpus: per rung the recipe, hours and cost, and the gate before the next rung."""
    from ..planning.catalog import parse_hardware
    from ..corpus.manifest import load_manifest
    from ..planning.ladder import build_ladder, corpus_tokens
    from ..recipe.registry import list_recipes

    manifest = load_manifest(corpus, verify="none")
    hardware = [parse_hardware(g) for g in gpus or []]
    ladder = build_ladder(corpus_tokens(manifest), list_recipes(), hardware=hardware, epochs=epochs)
    if json_out:
        print_json({"manifest": corpus, **ladder.to_dict()})
        return
    tokens = ladder.corpus
    table = Table(title=f"Scaling ladder: {tokens.tokens_per_epoch:,} training tokens per epoch x {ladder.epochs:g} epochs")
    for col in ("rung", "model", "hardware", "recipe", "tokens/s", "time", "cost"):
        table.add_column(col, justify="right" if col in ("tokens/s", "time", "cost") else "left")
    for r in ladder.rungs:
        if r.recipe:
            recipe = r.recipe.removeprefix("recipes/")
        elif r.fits:
            recipe = f"planner: {r.method}"
        else:
            recipe = f"[red]does not fit[/]; smallest: {r.smallest_hardware or 'none in the catalog'}"
        table.add_row(r.name, r.model, r.hardware, recipe, f"{r.tokens_per_s:,.0f}" if r.tokens_per_s else "—",
                      _duration(r.hours), f"${r.cost_usd:,.2f}" if r.cost_usd is not None else "—")
    console.print(table)
    for i, r in enumerate(ladder.rungs):
        nxt = ladder.rungs[i + 1].name if i + 1 < len(ladder.rungs) else None
        console.print(f"[bold]{r.name}[/] {r.question} ({r.note})", soft_wrap=True)
        console.print(f"  gate {'before ' + nxt if nxt else 'at the top'} (profile {r.gate['profile']}): "
                      f"go on if {r.gate['advance_if']}; otherwise {r.gate['otherwise']}", soft_wrap=True)
    if ladder.total_hours is not None:
        console.print(f"Every rung, in order: {_duration(ladder.total_hours)}, ${ladder.total_cost_usd:,.2f} "
                      "(training compute only: no failed runs, evaluation or storage)", soft_wrap=True)
    console.print(f"[dim]Tokens: {tokens.approximation}. Lengths: {tokens.method}.[/]", soft_wrap=True)


def _duration(hours: float | None) -> str:
    if hours is None:
        return "—"
    return f"{hours:,.1f} h" if hours >= 1 else f"{hours * 60:,.1f} min"
