"""`llamaforge demo`: the end-to-end workflow on SmolLM2-135M on the CPU (the README's main job)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..files import check_folder_to_write
from ._app import app
from ._common import JsonOpt, checked_path, console, print_json


@app.command("demo")
def demo_command(
    workdir: Annotated[str, typer.Option("--workdir", help="Where the demo's model, recipe and export go.",
                                         callback=checked_path(check_folder_to_write))] = "build/demo",
    runs_dir: Annotated[str, typer.Option("--runs-dir", help="Where the run folders go.",
                                          callback=checked_path(check_folder_to_write))] = "runs",
    json_out: JsonOpt = False,
) -> None:
    """Build the demo corpus, bring SmolLM2-135M, validate (health + gates), run in full (health +
    gates), merge, verify and export, and gate the merged model: base vs tuned, with timings."""
    from ..demo.workflow import check_demo_prerequisites, run_demo

    check_demo_prerequisites()
    result = run_demo(workdir=workdir, runs_root=runs_dir, console=console if not json_out else _quiet(), live=not json_out)
    if json_out:
        print_json(result.to_dict())
        raise typer.Exit(0 if result.passed else 1)
    table = Table(title=f"llamaforge demo: {'PASSED' if result.passed else 'FAILED'} — {result.seconds:.0f} s, "
                        f"peak RSS {result.peak_rss_gib} GiB")
    for col in ("step", "result", "seconds", "peak RSS GiB", "detail"):
        table.add_column(col, justify="right" if col in ("seconds", "peak RSS GiB") else "left")
    for s in result.steps:
        table.add_row(s.name, "[green]ok[/]" if s.ok else "[red]failed[/]", f"{s.seconds:.0f}",
                      "—" if s.peak_rss_gib is None else f"{s.peak_rss_gib:.2f}", s.detail)
    console.print(table)
    rows = result.gate_columns()
    if rows:
        columns = [c for c in ("validate", "full", "merged") if any(c in r for r in rows)]
        gates = Table(title="gates: base vs tuned (held-out prompts)")
        for col in ("gate", "target", "base", *columns):
            gates.add_column(col, justify="left" if col in ("gate", "target") else "right")
        for r in rows:
            cells = []
            for c in columns:
                verdict = r.get(f"{c}_verdict")
                style = "green" if verdict == "pass" else ("yellow" if verdict == "skipped" else "red")
                cells.append(f"[{style}]{_num(r.get(c))}[/]" if c in r else "—")
            gates.add_row(r["gate"], r["target"], _num(r["base"]), *cells)
        console.print(gates)
    console.print(f"timings and gates: {workdir}/demo_report.md")
    raise typer.Exit(0 if result.passed else 1)


def _num(v) -> str:
    return "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _quiet():
    from rich.console import Console

    return Console(stderr=True, quiet=False)
