"""`llamaforge models` and `llamaforge gpus`: the catalogs."""

from __future__ import annotations

from rich.table import Table

from ._app import app
from ._common import JsonOpt, console, print_json


@app.command("models")
def models_command(json_out: JsonOpt = False) -> None:
    """List the models of the catalog with their derived parameter counts."""
    from ..planning.catalog import models

    rows = [m.to_dict() for m in models().values()]
    if json_out:
        print_json({"models": rows})
        return
    table = Table(title="Model catalog (tools/llamaforge/facts/models.yaml)")
    for col in ("id", "parameters", "layers", "hidden", "heads/kv", "vocab", "tied", "hf_repo"):
        table.add_column(col, justify="right" if col in ("parameters", "layers", "hidden", "vocab") else "left")
    for m in rows:
        table.add_row(
            m["id"], f"{m['parameters']:,}", str(m["num_layers"]), str(m["hidden_size"]),
            f"{m['num_heads']}/{m['num_kv_heads']}", f"{m['vocab_size']:,}",
            "yes" if m["tie_embeddings"] else "no", m["hf_repo"] or "(created locally)",
        )
    console.print(table)


@app.command("gpus")
def gpus_command(json_out: JsonOpt = False) -> None:
    """List the GPUs of the catalog: memory, bf16 throughput, typical price."""
    from ..planning.catalog import gpus

    rows = [g.to_dict() for g in gpus().values()]
    if json_out:
        print_json({"gpus": rows})
        return
    table = Table(title="GPU catalog (tools/llamaforge/facts/gpus.yaml)")
    for col in ("id", "name", "memory", "bf16 TFLOP/s", "cc", "link", "$/GPU-hour"):
        table.add_column(col)
    for g in rows:
        table.add_row(
            g["id"], g["name"], f"{g['memory_gib']:.1f} GiB", f"{g['bf16_tflops']:.0f}",
            g["compute_capability"], g["interconnect"], f"{g['usd_per_hour']:.2f}",
        )
    console.print(table)
