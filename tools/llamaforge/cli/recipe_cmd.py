"""`llamaforge render`, `ls` and `cp`: the committed recipe matrix and recipes for new hardware."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from ..files import check_folder_to_write
from ._app import app
from ._common import JsonOpt, bounded, checked_path, console, err_console, print_id_table, print_json


@app.command("render")
def render_command(
    model: Annotated[str | None, typer.Option("--model", help="Catalog model id or path to a local config.json (omit to render the matrix).")] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", help="Hardware, e.g. 8xH100-80GB.")] = None,
    nodes: Annotated[int, typer.Option("--nodes", help="Number of nodes.", callback=bounded(1))] = 1,
    method: Annotated[str | None, typer.Option("--method", help="full | lora | qlora (default: the planner's choice).")] = None,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Sequence length.", callback=bounded(1))] = 2048,
    global_batch: Annotated[int | None, typer.Option("--global-batch", help="Sequences per optimizer step.", callback=bounded(1))] = None,
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank.", callback=bounded(1))] = 16,
    output: Annotated[str | None, typer.Option("-o", "--output", help="Folder to write a custom recipe into.", callback=checked_path(check_folder_to_write))] = None,
    force: Annotated[bool, typer.Option("--force", help="With -o: overwrite files that exist and differ (e.g. a recipe you edited).")] = False,
    check: Annotated[bool, typer.Option("--check", help="Fail when recipes/ differs from what the templates produce, or a rendered file does not parse.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Also remove files under recipes/ that the matrix no longer produces.")] = False,
    only: Annotated[str | None, typer.Option("--only", help="Render one matrix recipe, e.g. llama-3.1-70b/lora-8xH100-80GB.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Render the recipe matrix into recipes/ (or --check it), or one recipe for new hardware with -o."""
    from ..errors import UserError
    from ..paths import display_path, repo_root
    from ..recipe.matrix import compare_with_disk, prune_extra, render_matrix, write_files

    if model or gpus or output:
        if not (model and gpus and output):
            raise UserError("a custom recipe needs --model, --gpus and -o DIR (or none of them, for the matrix)")
        if check or only or prune:
            raise UserError("--check, --only and --prune apply to the matrix; drop --model/--gpus/-o")
        _render_custom(model, gpus, nodes, method, seq_len, global_batch, lora_r, output, force, json_out)
        return
    if force:
        raise UserError("--force applies to -o (a custom recipe); the matrix always rewrites recipes/")
    if prune and (check or only):
        raise UserError("--prune rewrites the whole matrix; drop --check/--only")

    files, recipes = render_matrix(only=only)
    root = repo_root()
    if check:
        drift = compare_with_disk(files, root, scope=None if only else "recipes")
        if json_out:
            print_json(drift.to_dict())
        elif drift.clean:
            console.print(f"recipes/ is current: {len(files)} files match the templates and parse")
        else:
            for label, paths in (("changed", drift.changed), ("missing", drift.missing),
                                 ("not produced by the matrix", drift.extra), ("does not parse", drift.unparsable)):
                for p in paths:
                    err_console.print(f"[red]{label}:[/] {p}", soft_wrap=True, highlight=False)
            fix = []
            if drift.changed or drift.missing:
                fix.append("`llamaforge render` rewrites them")
            if drift.extra:
                fix.append("`llamaforge render --prune` removes the files the matrix does not produce")
            if drift.unparsable:
                fix.append("change the value the unparsable file names")
            err_console.print(f"recipes/ is stale: {'; '.join(fix)}; then commit the result", soft_wrap=True)
        raise typer.Exit(0 if drift.clean else 1)
    written = write_files(files, root)
    stray = compare_with_disk(files, root, scope=None if only else "recipes")
    pruned = prune_extra(stray, root) if prune else []
    if json_out:
        print_json({"written": [display_path(p) for p in written], "pruned": pruned,
                    "not_produced": [] if prune else stray.extra, "recipes": [r.summary() for r in recipes]})
        return
    _print_recipes([r.summary() for r in recipes], title=f"Rendered {len(recipes)} recipe(s), {len(written)} files")
    for p in pruned:
        console.print(f"removed {p} (the matrix no longer produces it)", soft_wrap=True, highlight=False)
    if stray.extra and not prune:
        err_console.print(f"[yellow]warning:[/] {len(stray.extra)} file(s) under recipes/ are not produced by the "
                          f"matrix ({', '.join(stray.extra)}); `llamaforge render --prune` removes them",
                          soft_wrap=True, highlight=False)


def _render_custom(model, gpus, nodes, method, seq_len, global_batch, lora_r, output, force, json_out) -> None:
    from ..errors import LINE_BREAKS, UserError
    from ..paths import display_path
    from ..recipe.request import Layout, RecipeRequest
    from ..recipe.matrix import load_matrix, overwrites, write_files
    from ..recipe.sft import render_recipe

    if LINE_BREAKS.search(output):
        raise UserError(f"-o {output!r} contains a line break or control character; choose a plain folder name")

    defaults = load_matrix()
    req = RecipeRequest(model=model, gpus=gpus, nodes=nodes, method=method, seq_len=seq_len,
                        global_batch=global_batch, lora_r=lora_r, corpus=defaults.corpus,
                        hyper_layers=defaults.hyper_layers)
    base = output.rstrip("/") or "."
    if base.startswith("-"):   # a path no launcher can mistake for an option
        base = f"./{base}"
    parts = ["llamaforge render", f"--model {shlex.quote(model)}", f"--gpus {shlex.quote(gpus)}"]
    if nodes != 1:
        parts.append(f"--nodes {nodes}")
    if method:
        parts.append(f"--method {method}")
    parts.append(f"--seq-len {seq_len}")
    if global_batch:
        parts.append(f"--global-batch {global_batch}")
    if lora_r != 16:
        parts.append(f"--lora-r {lora_r}")
    parts.append(f"-o {shlex.quote(base)}")
    rec = render_recipe(req, Layout(recipe_dir_for_model=False, base=base, launch_from_root=False),
                        regenerate=" ".join(parts))
    clash = overwrites(rec.files, Path.cwd())
    if clash and not force:
        raise UserError(f"{', '.join(clash)} already exist(s) and differ from this rendering (edited by hand?); "
                        "pass --force to overwrite, or choose another -o folder")
    written = write_files(rec.files, Path.cwd())
    if json_out:
        print_json({"written": [display_path(p) for p in written], "recipe": rec.summary()})
        return
    _print_recipes([rec.summary()], title="Rendered recipe")
    for p in written:
        console.print(f"  wrote {display_path(p)}")
    console.print("Launch (from this directory):")
    for line in rec.launch:
        console.print(f"  {line}", soft_wrap=True)


def _print_recipes(rows: list[dict], title: str) -> None:
    def cells(r: dict) -> list[str]:
        par = r["parallel"] if r["offload"] == "none" else f"{r['parallel']}+offload {r['offload']}"
        return [r["method"], r["hardware"], par, str(r["seq_len"]),
                f"{r['global_batch']} ({r['micro_batch']} x {r['grad_accum']})",
                f"{r['peak_gpu_gib']:.1f} / {r['usable_gpu_gib']:.1f}", f"{r['tokens_per_s']:,}"]

    print_id_table(title, "recipe", ["method", "hardware", "parallel", "seq", "batch (micro x accum)",
                                     "peak / usable GiB", "tokens/s"], [(r["recipe"], cells(r)) for r in rows])


@app.command("ls")
def ls_command(json_out: JsonOpt = False) -> None:
    """List the committed recipes with their hardware and estimates."""
    from ..recipe.registry import list_recipes

    entries = list_recipes()
    if json_out:
        print_json({"recipes": [e.to_dict() for e in entries]})
        return
    rows = [(e.id, [e.method, e.hardware,
                    "—" if e.peak_gpu_gib is None else f"{e.peak_gpu_gib:.1f} of {e.usable_gpu_gib:.1f}",
                    "—" if e.host_ram_gib is None else f"{e.host_ram_gib:.0f}",
                    "—" if e.tokens_per_s is None else f"{e.tokens_per_s:,}"]) for e in entries]
    print_id_table(f"{len(entries)} recipes (recipes/README.md has the details)", "recipe",
                   ["method", "hardware", "est. peak GiB/GPU", "est. host RAM GiB", "est. tokens/s"], rows)


@app.command("cp")
def cp_command(
    recipe: Annotated[str, typer.Argument(help="A recipe id from `llamaforge ls` (model/name) or a path.")],
    dest: Annotated[str, typer.Argument(help="Destination .yaml file, or a folder.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Copy a recipe and the DeepSpeed/accelerate/SLURM files it needs, with paths rewritten."""
    from ..recipe.registry import copy_recipe

    result = copy_recipe(recipe, dest, force=force)
    if json_out:
        print_json(result.to_dict())
        return
    for f in result.files:
        console.print(f"wrote {f}")
    console.print(f"Launch from this directory:\n  {result.launch}", soft_wrap=True)
