"""The `llamaforge` command line. Thin: each command parses its arguments, calls one function of
the package, and prints the result with rich (or one JSON object with --json). Command modules
import their logic inside the command function, so `llamaforge --help` stays fast."""

from __future__ import annotations

import sys

import typer

from ..errors import UserError
from ._common import err_console

app = typer.Typer(
    name="llamaforge",
    help="Plan, render, check, run and gate Axolotl fine-tuning recipes for Llama-family models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each module adds its commands to `app` when imported.
from . import catalog_cmd, check_cmd, corpus_cmd, demo_cmd, estimate_cmd, eval_cmd, export_cmd, recipes_cmd, run_cmd  # noqa: E402,F401
from . import serve_cmd  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="llamaforge")
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False, markup=True)
        sys.exit(exc.exit_code)
