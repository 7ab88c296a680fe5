"""Shared pieces of the CLI: consoles, the --json option, JSON printing."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def _default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def print_json(obj: Any) -> None:
    data = orjson.dumps(obj, default=_default, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    sys.stdout.write(data.decode() + "\n")
    sys.stdout.flush()


def fmt_gib(x: float | None) -> str:
    return "—" if x is None else f"{x:,.1f} GiB"


def print_plan_notes(reasons: list[str], rejected: list[dict], assumptions: list[str] | None = None) -> None:
    """A plan's `why`, `considered and refused` and (optionally) `assumptions` sections."""
    console.print("[bold]why[/]")
    for r in reasons:
        console.print(f"  - {r}", soft_wrap=True)
    if rejected:
        console.print("[bold]considered and refused[/]")
        for r in rejected:
            console.print(f"  - {r['setup']}: {r['why']}", soft_wrap=True)
    if assumptions:
        console.print("[bold]assumptions[/]")
        for a in assumptions:
            console.print(f"  - {a}", soft_wrap=True)
