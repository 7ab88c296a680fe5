"""The typer application every command module adds its commands to (imported by cli/__init__, which
imports the command modules; they import `app` from here, so the package and its modules form no circle)."""

import typer

app = typer.Typer(
    name="llamaforge",
    help="Plan, render, check, run and gate Axolotl fine-tuning recipes for Llama-family models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
