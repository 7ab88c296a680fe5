"""The `llamaforge` command line. Thin: each command parses its arguments, calls one function of
the package, and prints the result with rich (or one JSON object with --json). Command modules
import their logic inside the command function, so `llamaforge --help` stays fast.

Every mistake a user can make on the command line ends the same way: one line on stderr naming the
option or file and the fix, exit code 2, no traceback and nothing written. Option values are
checked while the arguments are parsed (cli._common's callbacks), before any command starts work."""

from __future__ import annotations

import signal
import sys

import click

from ..errors import UserError, clip
from ._app import app
from ._common import err_console

# Each module adds its commands to `app` when imported (in this order, the order `--help` lists them);
# each is named after the package folder it drives.
from . import planning_catalog_cmd, check_cmd, corpus_cmd, demo_cmd, planning_cmd  # noqa: F401,I001
from . import gates_cmd, export_cmd, models_cmd, recipe_cmd, run_cmd, planning_serve_cmd  # noqa: F401,I001


def _error_line(text: str, exit_code: int):
    """Print `text` as the one `error:` line (its brackets are text, not markup) and exit."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(text)}", soft_wrap=True, highlight=False, markup=True)
    sys.exit(exit_code)


def usage_error_line(exc: click.UsageError) -> str:
    """A click usage error (bad option value, missing option, unknown option) as one line, with the
    help command of the subcommand it concerns."""
    where = exc.ctx.command_path if exc.ctx is not None else "llamaforge"
    return f"{clip(exc.format_message(), 400)} (see `{where} -h`)"


def main(argv: list[str] | None = None) -> None:
    try:
        code = app(args=argv, prog_name="llamaforge", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:      # `llamaforge` or a group alone: its help
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        _error_line(usage_error_line(exc), exc.exit_code)
    except click.Abort:
        _error_line("aborted", 130)
    except UserError as exc:
        _error_line(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _error_line("interrupted (Ctrl-C)", 128 + signal.SIGINT)
    except Exception as exc:   # a run stopped by SIGTERM/SIGHUP outside the part that reports it
        from ..run.runner import StageInterrupted

        if isinstance(exc, StageInterrupted):
            _error_line(f"interrupted by {exc}", 128 + exc.signum)
        raise
    sys.exit(code if isinstance(code, int) else 0)
