"""Shared pieces of the CLI: consoles, the --json option, JSON printing, and the checks of option
values (numbers, paths, names) that run while the arguments are parsed."""

from __future__ import annotations

import math
import sys
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from ..errors import require_one_line

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


def print_id_table(title: str, id_header: str, headers: list[str], rows: list[tuple[str, list[str]]], *,
                   caption: str | None = None, out: Console | None = None) -> None:
    """A table whose first column holds identifiers a user copies (recipe ids, paths), which are
    never cut: when the terminal is too narrow for every column whole, each row becomes its id on
    one line and the other columns, `header value`, folded on the lines below it."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    out = out or console
    widths = [max([len(id_header)] + [len(i) for i, _ in rows])]
    widths += [max([len(h)] + [len(r[k]) for _, r in rows]) for k, h in enumerate(headers)]
    if sum(widths) + 3 * len(widths) + 1 <= out.width:
        table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD)
        for header in [id_header, *headers]:
            table.add_column(header, no_wrap=True)
        for ident, cells in rows:
            table.add_row(ident, *cells)
        out.print(table)
        return
    from rich.padding import Padding
    from rich.text import Text

    out.print(f"[bold]{escape(title)}[/]", soft_wrap=True)
    for ident, cells in rows:
        out.print(Text(ident), soft_wrap=True)     # whole, even when wider than the terminal
        out.print(Padding(Text("   ".join(f"{h}: {c}" for h, c in zip(headers, cells) if c)), (0, 0, 0, 4)))
    if caption:
        out.print(f"[dim]{escape(caption)}[/]")


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


# ---- option values, checked while the arguments are parsed (before any work) --------------------


def _option_name(param) -> str:
    return param.opts[0] if getattr(param, "opts", None) else param.human_readable_name


def _number(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def bounded(low: float | None = None, high: float | None = None, *, above: float | None = None):
    """A typer callback for a number option or argument: refuses NaN, the infinities, and values
    below `low`, above `high` or not above `above` (None passes through: the option was not given).
    Usage: `typer.Option("--micro-batch", callback=bounded(1))`."""
    def check(param: typer.CallbackParam, value):
        if value is None:
            return value
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                raise typer.BadParameter(f"{v} is not a finite number")
            if low is not None and high is not None and not low <= v <= high:
                raise typer.BadParameter(f"{_number(v)} is out of range; give a number from {_number(low)} to "
                                         f"{_number(high)}")
            if low is not None and v < low:
                raise typer.BadParameter(f"{_number(v)} is too small; give {_number(low)} or more")
            if high is not None and v > high:
                raise typer.BadParameter(f"{_number(v)} is too large; give {_number(high)} or less")
            if above is not None and not v > above:
                raise typer.BadParameter(f"{_number(v)} is too small; give more than {_number(above)}")
        return value
    return check


def checked_path(check):
    """A typer callback that applies one of llamaforge.files' path checks (check_folder_to_write,
    check_file_to_write, check_input_file, check_input_folder) to an option's value(s): a file where
    a folder is expected (and the reverse), a path under a file, a missing input: one line, exit 2."""
    def callback(param: typer.CallbackParam, value):
        if value is None:
            return value
        for v in value if isinstance(value, (list, tuple)) else (value,):
            check(v, _option_name(param))
        return value
    return callback


def one_line(param: typer.CallbackParam, value):
    """A typer callback for a name option: non-empty, one line, no control characters."""
    if value is not None:
        require_one_line(value, _option_name(param))
    return value
