"""`llamaforge check`: validate Axolotl configs against Axolotl 0.19's own schema, keys it would
ignore, deprecated keys, known-bad combinations and memory on the target hardware."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ._app import app
from ._common import JsonOpt, bounded, console, fmt_gib, print_json

_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


@app.command("check")
def check_command(
    configs: Annotated[list[Path], typer.Argument(
        help="Axolotl YAML config(s), or folders of them: all are checked in one Axolotl process.", show_default=False)],
    gpus: Annotated[Optional[str], typer.Option(
        "--gpus", help="Target hardware, e.g. 8xH100-80GB (default: the recipe header's)."
    )] = None,
    nodes: Annotated[Optional[int], typer.Option("--nodes", help="Nodes of --gpus each.", callback=bounded(1))] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", help="Catalog model or config.json path (default: header, then base_model)."
    )] = None,
    no_schema: Annotated[bool, typer.Option(
        "--no-schema", help="Skip Axolotl's own validation (~6 s); keys are checked against the stored schema."
    )] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check Axolotl configs: Axolotl's own validation for the target GPUs, keys Axolotl would
    silently ignore, deprecated keys, known-bad combinations, and memory per GPU. Exit 1 on errors."""
    from ..check.findings import check_configs, expand_config_paths
    from ..recipe.mlx import check_mlx_config, is_mlx_config

    configs = expand_config_paths(configs)
    mlx = {c for c in configs if is_mlx_config(c)}     # the Mac's MLX-LM configs: their own check
    axolotl = [c for c in configs if c not in mlx]
    checked = iter(check_configs(axolotl, hardware=gpus, model=model, schema=not no_schema, nodes=nodes) if axolotl else [])
    reports = [check_mlx_config(c) if c in mlx else next(checked) for c in configs]
    ok = all(r.ok for r in reports)
    if json_out:
        if len(reports) == 1:
            print_json(reports[0].to_dict())
        else:
            print_json({"ok": ok, "configs": [{"path": r.path, **r.to_dict()} for r in reports]})
    else:
        for report in reports:
            _print_report(report)
    raise typer.Exit(0 if ok else 1)


def _print_report(report) -> None:
    errors = len(report.errors)
    verdict = "[green]ok[/]" if report.ok else f"[bold red]{errors} error{'s' if errors != 1 else ''}[/]"
    table = Table(title=f"{report.path}: {verdict}", title_justify="left", show_lines=False, expand=False)
    table.add_column("severity", no_wrap=True)
    table.add_column("key", no_wrap=True)
    table.add_column("finding", overflow="fold")
    for f in report.findings:
        table.add_row(f"[{_STYLE[f.severity]}]{f.severity}[/]", f.key, f.message)
    console.print(table)
    est = report.estimate
    if est is not None:
        console.print(
            f"  peak {fmt_gib(est.peak_gpu_gib)} per GPU of {fmt_gib(est.usable_gpu_gib)} usable; "
            f"host RAM {fmt_gib(est.host_ram_gib)}"
        )
