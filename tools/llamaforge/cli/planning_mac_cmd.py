"""`llamaforge estimate --gpus 1x<Mac>`: the Mac path. Axolotl does not run on Apple Silicon, so on a
Mac `estimate` plans MLX-LM fine-tuning (llamaforge.planning.mlx_estimate) instead: with --model, the plan for
that model; without, what every catalog model needs on this Mac and how long it takes."""

from __future__ import annotations

from rich.table import Table

from ._common import console, print_json, print_plan_notes


def _hours(h: float | None) -> str:
    if h is None:
        return "—"
    return f"{h / 24:,.1f} days" if h >= 72 else f"{h:,.1f} h" if h >= 1 else f"{h * 60:,.0f} min"


def estimate_on_mac(gpus: str, *, model: str | None, method: str | None, seq_len: int, lora_r: int,
                    tokens: int | None, epochs: float, json_out: bool, wired_limit_gib: float | None = None,
                    bits: int | None = None, tokens_per_row: int | None = None) -> int:
    """Print the MLX plan(s); return the exit code (0: fits, 1: does not)."""
    from ..planning.catalog import get_model, models, parse_apple_machine
    from ..errors import Infeasible, UserError
    from ..planning.mlx_estimate import plan_mlx

    machine = parse_apple_machine(gpus)
    if method == "full":
        raise UserError("full fine-tuning is not planned on a Mac; use --method lora or qlora (MLX-LM), or omit --method")
    per_million = 1_000_000
    if model:
        spec = get_model(model)
        try:
            plan = plan_mlx(spec, machine, method=method, seq_len=seq_len, lora_rank=lora_r, tokens=tokens, epochs=epochs,
                            wired_limit_gib=wired_limit_gib, bits=bits, tokens_per_row=tokens_per_row)
        except Infeasible as exc:
            if json_out:
                print_json({"ok": False, "reason": str(exc), "rejected": exc.details.get("rejected", [])})
            else:
                console.print(f"[bold red]does not fit:[/] {exc}", soft_wrap=True, highlight=False)
            return 1
        if json_out:
            print_json({"ok": True, "trainer": "mlx-lm", **plan.to_dict()})
            return 0
        _print_plan(plan, tokens, epochs)
        return 0
    rows = []
    for spec in models().values():
        if spec.id == "tiny":
            continue
        try:
            plan = plan_mlx(spec, machine, method=method, seq_len=seq_len, lora_rank=lora_r, tokens=tokens or per_million,
                            epochs=epochs if tokens else 1.0, wired_limit_gib=wired_limit_gib)
            rows.append({"model": spec.id, "fits": True, **plan.to_dict()})
        except Infeasible as exc:
            rows.append({"model": spec.id, "fits": False, "reason": str(exc)})
    if json_out:
        print_json({"machine": machine.to_dict(), "trainer": "mlx-lm", "seq_len": seq_len, "tokens": tokens,
                    "epochs": epochs, "models": rows})
        return 0
    scope = (f"{tokens:,} tokens x {epochs:g} epochs" if tokens else "per 1M training tokens")
    table = Table(title=f"What {machine.name} fine-tunes with MLX-LM (sequence {seq_len:,}, LoRA r={lora_r}); time {scope}",
                  title_justify="left")
    for col in ("model", "method", "batch", "peak / usable GiB", "tokens/s", "time"):
        table.add_column(col, justify="right" if col in ("batch", "tokens/s", "time") else "left")
    for r in rows:
        if not r["fits"]:
            table.add_row(r["model"], "[red]does not fit[/]", "—", "—", "—", "—")
            continue
        s, e = r["setup"], r["estimate"]
        method_label = "LoRA 16-bit" if s["method"] == "lora" else f"QLoRA {s['bits']}-bit"
        table.add_row(r["model"], method_label + (" + ckpt" if s["grad_checkpoint"] else ""), str(s["batch_size"]),
                      f"{e['peak_gib']:,.0f} / {e['usable_gib']:,.0f}", f"{e['tokens_per_s']:,.0f}", _hours(e["hours"]))
    console.print(table)
    console.print(f"The GPU may use {machine.gpu_usable_gib(wired_limit_gib):.0f} of {machine.memory_gib:g} GiB "
                  + ("(your wired limit). " if wired_limit_gib else "(macOS's default; raise it with ")
                  + ("" if wired_limit_gib else "`sudo sysctl iogpu.wired_limit_mb=<MiB>` and --wired-limit-gib). ")
                  + "One model in detail: `llamaforge estimate --model <id> "
                  f"--gpus {machine.label} --tokens 2.25M --epochs 3`; a config to launch: recipes/*/mlx-*.yaml "
                  "(docs/hardware.md, the Mac).", soft_wrap=True)
    return 0


def _print_plan(plan, tokens, epochs) -> None:
    s, est = plan.setup, plan.estimate
    t = Table(title=f"{s.model.id} with MLX-LM on {s.machine.name}: {s.method_label}, batch {s.batch_size} x {s.seq_len}"
              + (", grad_checkpoint" if s.grad_checkpoint else ""), title_justify="left")
    t.add_column("unified memory", style="bold")
    t.add_column("GiB", justify="right")
    for k, v in sorted(est.breakdown.items(), key=lambda kv: -kv[1]):
        t.add_row(k.replace("_", " "), f"{v:,.2f}")
    t.add_section()
    t.add_row("peak", f"{est.peak_gib:,.2f}")
    t.add_row("the GPU may use", f"{est.usable_gib:,.2f}")
    console.print(t)
    when = f"{tokens:,} tokens x {epochs:g} epochs: {_hours(est.hours)}" if tokens else \
        f"1M training tokens take {_hours(1_000_000 / est.tokens_per_s / 3600)}; give --tokens for the total"
    console.print(f"throughput ~{est.tokens_per_s:,.0f} tokens/s ({est.flops_per_token / 1e9:,.1f} GFLOP/token); {when}",
                  soft_wrap=True)
    print_plan_notes(plan.reasons, plan.rejected, est.assumptions)
