"""`llamaforge gates` (also `llamaforge eval`, its former name): the evaluation gates (lm-eval) of a model or a base model + PEFT adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..files import check_folder_to_write, check_input_file
from ._app import app
from ._common import JsonOpt, bounded, checked_path, console, one_line, print_json


@app.command("gates")
def gates_command(
    model: Annotated[str, typer.Option("--model", help="Model folder (Hugging Face format): the merged model, or the base of --adapter.")],
    adapter: Annotated[Optional[str], typer.Option("--adapter", help="PEFT adapter folder to apply to --model (lm-eval's peft=).")] = None,
    profile: Annotated[str, typer.Option("--profile", help="Gate profile of evals/gates.yaml: demo, validate, release.")] = "demo",
    limit: Annotated[Optional[int], typer.Option("--limit", help="Examples per task (a quick subset; not a release verdict).", callback=bounded(1))] = None,
    persona: Annotated[str, typer.Option("--persona", help="The name the identity gate expects the model to call itself.", callback=one_line)] = "Leviathan",
    allow_code_execution: Annotated[bool, typer.Option(
        "--allow-code-execution",
        help="Execute model-written code (HumanEval) in the sandbox; sets HF_ALLOW_CODE_EVAL=1 and lm-eval's "
             "confirm_run_unsafe_code. Off by default: such gates then fail (or are skipped where optional).")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder for results.json, report.md, samples/ (default: <adapter or model>/eval/<profile>).", callback=checked_path(check_folder_to_write))] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Base model to compare a merged --model with (with --adapter the base is --model).")] = None,
    no_base: Annotated[bool, typer.Option("--no-base", help="Do not evaluate the base model (gates with a base comparison then fail).")] = False,
    device: Annotated[Optional[str], typer.Option("--device", help="torch device (default: cuda when available, else cpu).")] = None,
    batch_size: Annotated[Optional[str], typer.Option("--batch-size", help="lm-eval batch size: a number or auto (default: auto on cuda, 1 on cpu).")] = None,
    max_gen_toks: Annotated[Optional[int], typer.Option("--max-gen-toks", help="Cap generation length of every generation task (quick runs).", callback=bounded(1))] = None,
    gates_file: Annotated[Optional[Path], typer.Option("--gates-file", help="Gates file with the profiles (default: evals/gates.yaml).", callback=checked_path(check_input_file))] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the gates of a profile with lm-eval and print the verdicts; exit 1 if any gate fails.

    A gate fails unless it measured and passed: a task that cannot load, a dataset not available offline, code execution not allowed, a missing metric or NaN fail it, with the reason."""
    from ..errors import UserError
    from ..gates import render_gate_table, run_gates, summary_line

    batch: int | str | None = None
    if batch_size is not None:
        if batch_size != "auto" and (not batch_size.isdigit() or int(batch_size) < 1):
            raise UserError(f"--batch-size must be a positive number or auto, not {batch_size!r}")
        batch = batch_size if batch_size == "auto" else int(batch_size)
    report = run_gates(
        model, adapter=adapter, profile=profile, persona=persona, limit=limit,
        allow_code_execution=allow_code_execution, output_dir=output, compare_base=not no_base,
        base_model=base, device=device, batch_size=batch, max_gen_toks=max_gen_toks, gates_file=gates_file,
    )
    if json_out:
        print_json(report.to_dict())
    else:
        console.print(render_gate_table(report))
        for note in report.notes:
            console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
        style = "bold green" if report.passed else "bold red"
        console.print(f"[{style}]{summary_line(report)}[/]", soft_wrap=True)
        console.print(f"results: {report.output_dir}/results.json, report.md", soft_wrap=True, highlight=False)
    raise typer.Exit(0 if report.passed else 1)


# `eval` is the command's first name, kept so that scripts written for it keep working
app.command("eval", hidden=True, help="The same as `llamaforge gates` (its former name).")(gates_command)

