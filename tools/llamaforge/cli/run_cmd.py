"""`llamaforge run RECIPE --stage validate|full`: the staged workflow."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..files import check_folder_to_write, check_input_file
from ._app import app
from ._common import JsonOpt, checked_path, console, one_line, print_json

STATUS_STYLE = {"pass": "green", "fail": "red", "not_measured": "yellow"}


@app.command("run")
def run_command(
    recipe: Annotated[str, typer.Argument(help="The recipe (an Axolotl YAML rendered by LlamaForge, or your copy of one).",
                                          callback=checked_path(check_input_file))],
    stage: Annotated[str, typer.Option("--stage", help="validate (the 10% sample, then the health gate) or full.")],
    corpus: Annotated[str | None, typer.Option("--corpus", help="Corpus folder or manifest.json (default: beside the recipe's dataset).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name: runs/<name>/ (default: the recipe's file name).",
                                             callback=one_line)] = None,
    runs_dir: Annotated[str, typer.Option("--runs-dir", help="Where run folders live.",
                                          callback=checked_path(check_folder_to_write))] = "runs",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the stage recipe and the exact command; run nothing.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the stage's last checkpoint.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Run `full` without a passing validation (recorded in the report).")] = False,
    no_gates: Annotated[bool, typer.Option("--no-gates", help="Skip the stage's gates (recorded; an ungated validation does not unlock `full`).")] = False,
    allow_code_execution: Annotated[bool, typer.Option("--allow-code-execution", help="Let code gates (HumanEval) execute model-written code in the sandbox (docs/gates.md).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Run one stage of a recipe: derive the stage recipe, launch Axolotl, watch it, judge its health, run its gates."""
    from ..errors import UserError
    from ..run.runner import run_stage, stage_recipe_text
    from ..run.stage import STAGES, StagePlan

    if stage not in STAGES:
        raise UserError(f"unknown stage {stage!r}; use validate or full")
    result = run_stage(recipe, stage, corpus=corpus, name=name, runs_root=runs_dir, dry_run=dry_run,
                       resume=resume, force=force, gates=not no_gates, allow_code_execution=allow_code_execution,
                       live=not json_out)
    if isinstance(result, StagePlan):
        plan = result
        if json_out:
            print_json({"stage": stage, "dry_run": dry_run, "command": plan.command, "stage_recipe": str(plan.stage_recipe_path),
                        "changes": plan.changes, "config": plan.config, "env": plan.env})
            return
        if dry_run:
            console.print(f"[bold]Dry run[/] — nothing is launched. Stage {stage} of {plan.recipe.path} would write:")
            console.print(f"  {plan.stage_recipe_path}, {plan.log_path}, {plan.stage_dir / 'report.json'}, report.md, loss_curve.png")
            console.print("Changes from the recipe:")
            for c in plan.changes:
                console.print(f"  - {c}", soft_wrap=True)
            console.print(f"Command (environment: {' '.join(f'{k}={v}' for k, v in plan.env.items())}):")
            console.print(f"  {plan.command_line()}", soft_wrap=True)
            console.print(f"\n--- {plan.stage_recipe_path} ---")
            console.print(stage_recipe_text(plan), markup=False, highlight=False, soft_wrap=True)
        return
    if json_out:
        print_json(result.report)
    else:
        print_stage_result(result)
    if result.interrupted_by:
        raise typer.Exit(128 + result.interrupted_by)   # the shell's convention for a process a signal stopped
    raise typer.Exit(0 if result.passed else 1)


def print_stage_result(result) -> None:
    report = result.report
    table = Table(title=f"{report['name']} — {report['stage']}: {'PASSED' if result.passed else 'FAILED'}")
    for col in ("check", "status", "value", "threshold", "detail"):
        table.add_column(col)
    for c in report["health"]["checks"]:
        style = STATUS_STYLE.get(c["status"], "")
        table.add_row(c["name"], f"[{style}]{c['status']}[/]", _fmt(c.get("value")), _fmt(c.get("threshold")), c.get("message", ""))
    console.print(table)
    gates = report.get("gates")
    if gates:
        if gates.get("gates"):
            console.print(render_gate_table_from_dict(gates))
        else:
            console.print(f"gates: {'passed' if gates.get('passed') else 'FAILED'} — {gates.get('skipped') or gates.get('error') or ''}")
    if report.get("interrupted"):
        i = report["interrupted"]
        console.print(f"[yellow]interrupted[/] by {i['signal']} during the {i['during']}: the training process group "
                      "was stopped; rerun the stage, or continue it with --resume", soft_wrap=True)
    if report.get("oom_advice"):
        console.print(f"[yellow]out of memory:[/] {report['oom_advice']}", soft_wrap=True)
    if report.get("forced"):
        console.print(f"[yellow]forced:[/] ran without a passing validation ({report.get('gatekeeper')})", soft_wrap=True)
    for name, path in result.report_paths.items():
        console.print(f"{name}: {path}")


def render_gate_table_from_dict(gates: dict):
    table = Table(title=f"gates ({gates.get('profile', '?')}): {'PASSED' if gates.get('passed') else 'FAILED'}")
    for col in ("gate", "metric", "value", "threshold", "base", "verdict", "reason"):
        table.add_column(col)
    for g in gates.get("gates", []):
        verdict = g.get("verdict", "?")
        style = "green" if verdict == "pass" else ("yellow" if verdict == "skipped" else "red")
        table.add_row(g.get("name", "?"), str(g.get("metric", "")), _fmt(g.get("value")), _fmt(g.get("threshold")),
                      _fmt(g.get("base_value")), f"[{style}]{verdict}[/]", g.get("reason") or "")
    return table


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
