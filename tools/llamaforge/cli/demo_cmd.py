"""`llamaforge demo`: the end-to-end workflow on the tiny CPU model (the README's main job)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from . import app
from ..files import check_folder_to_write
from ._common import JsonOpt, checked_path, console, print_json


@app.command("demo")
def demo_command(
    workdir: Annotated[str, typer.Option("--workdir", help="Where the demo's model and recipe go.",
                                         callback=checked_path(check_folder_to_write))] = "build/demo",
    runs_dir: Annotated[str, typer.Option("--runs-dir", help="Where the run folders go.",
                                          callback=checked_path(check_folder_to_write))] = "runs",
    json_out: JsonOpt = False,
) -> None:
    """Build the demo corpus, create the tiny model, validate, gate, run in full, merge, evaluate."""
    from ..demo import check_demo_prerequisites, run_demo

    check_demo_prerequisites()
    result = run_demo(workdir=workdir, runs_root=runs_dir, console=console if not json_out else _quiet(), live=not json_out)
    if json_out:
        print_json(result.to_dict())
        raise typer.Exit(0 if result.passed else 1)
    table = Table(title=f"llamaforge demo: {'PASSED' if result.passed else 'FAILED'}")
    for col in ("step", "result", "seconds", "detail"):
        table.add_column(col)
    for s in result.steps:
        table.add_row(s.name, "[green]ok[/]" if s.ok else "[red]failed[/]", f"{s.seconds:.0f}", s.detail)
    console.print(table)
    if result.gate_report is not None:
        from ..gates import render_gate_table

        console.print(render_gate_table(result.gate_report))
    raise typer.Exit(0 if result.passed else 1)


def _quiet():
    from rich.console import Console

    return Console(stderr=True, quiet=False)
