"""`llamaforge corpus ...`: build the training corpus from a spec, inspect a built one, and the
teacher-model elicitation round trip (elicit -> batch -> collect)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..files import JSON_SAFE_INT, check_file_to_write, check_input_file
from ._app import app
from ._common import JsonOpt, bounded, checked_path, console, err_console, one_line, print_json

corpus_app = typer.Typer(
    help="Build the training corpus (streaming, validated, deduplicated, mixed, split) and elicit teacher data.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(corpus_app, name="corpus")


class _RichProgress:
    """Build progress as rich bars on stderr (only on a terminal)."""

    LABELS = {"read": "read + validate", "write": "write outputs", "hash": "hash outputs"}

    def __init__(self):
        from rich.progress import (
            BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.bytes_columns = (TextColumn("{task.description:<16}"), BarColumn(), DownloadColumn(),
                              TransferSpeedColumn(), TimeRemainingColumn())
        self.count_columns = (TextColumn("{task.description:<16}"), BarColumn(), TaskProgressColumn())
        self.progress = Progress(*self.bytes_columns, console=err_console, transient=True)
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def start(self, stage, total):
        self.tasks[stage] = self.progress.add_task(self.LABELS.get(stage, stage), total=total)

    def advance(self, stage, amount):
        self.progress.update(self.tasks[stage], advance=amount)

    def finish(self, stage):
        self.progress.update(self.tasks[stage], visible=False)


def _summary(result) -> dict:
    from ..corpus.manifest import manifest_hash
    from ..paths import display_path

    m = result.manifest
    mb = result.input_bytes / 1e6
    return {
        "corpus": display_path(result.out_dir),
        "manifest": display_path(result.out_dir / "manifest.json"),
        "manifest_sha256": manifest_hash(result.out_dir),
        "name": m["name"],
        "limit": m["build"]["limit"],
        "counts": m["counts"],
        "files": m["files"],
        "phases": m["phases"],
        "lengths": m["lengths"],
        "general_share": m["mix"]["general"]["share"],
        "warnings": m["warnings"],
        "seconds": round(result.seconds, 2),
        "input_mb": round(mb, 1),
        "mb_per_s": round(mb / result.seconds, 1) if result.seconds else None,
        "workers": result.workers,
        "timings": {k: round(v, 2) for k, v in result.timings.items()},
    }


def _print_summary(s: dict) -> None:
    counts = s["counts"]
    table = Table(title=f"corpus {s['name']} -> {s['corpus']}")
    cols = ("category", "read", "kept", "dup", "quar", "filt", "train", "eval", "sample",
            "p50", "p95", "max", ">seq")
    for c in cols:
        table.add_column(c, justify="left" if c == "category" else "right", no_wrap=c == "category")
    table.caption = "dup: duplicates, quar: quarantined, filt: filtered; p50/p95/max: tokens; >seq: rows over sequence_len"
    lengths = s["lengths"]["per_category"]

    def n(x):
        return "—" if x is None else f"{x:,}"

    for name, c in counts["per_category"].items():
        ln = lengths.get(name, {})
        over = ln.get("over_sequence_len", 0)
        table.add_row(name, n(c["read"]), n(c["kept"]), n(c["duplicates"]["total"]), n(c["quarantined"]),
                      n(c["filtered"]["total"]), n(c["train_rows"]), n(c["eval_rows"]), n(c["sample_rows"]),
                      n(ln.get("p50")), n(ln.get("p95")), n(ln.get("max")),
                      f"[bold red]{over:,}[/]" if over else "0")
    t = s["lengths"]["total"]
    table.add_row("[bold]total", n(counts["read"]), n(counts["kept"]), n(counts["duplicates"]["total"]),
                  n(counts["quarantined"]), n(counts["filtered"]["total"]), n(counts["train_rows"]),
                  n(counts["eval_rows"]), n(counts["sample_rows"]), n(t["p50"]), n(t["p95"]), n(t["max"]),
                  n(t["over_sequence_len"]), end_section=True)
    console.print(table)
    dup = counts["duplicates"]
    console.print(f"read {counts['read']:,} = kept {counts['kept']:,} + duplicates {dup['total']:,} "
                  f"(exact {dup['exact']:,}, near {dup['near']:,}) + quarantined {counts['quarantined']:,} + "
                  f"filtered {counts['filtered']['total']:,}"
                  + (f" ({', '.join(f'{k} {v:,}' for k, v in counts['filtered']['by_reason'].items())})"
                     if counts["filtered"]["by_reason"] else ""))
    if counts["repeats"]:
        console.print(f"train rows include {counts['repeats']:,} up-sampled repeats (marked \"_repeat\")")
    if s["general_share"] is not None:
        console.print(f"general instruction data: {s['general_share']:.1%} of train")
    if len(s["phases"]) > 1:
        console.print("curriculum phases, in order: " + ", ".join(
            f"{p['name']} ({p['train_rows'][1] - p['train_rows'][0]:,} rows{', ' + p['path'] if p.get('path') else ''})"
            for p in s["phases"]))
    console.print(f"lengths: {s['lengths']['method']}")
    console.print(f"files: {', '.join(f['path'] for f in s['files'].values())} in {s['corpus']}")
    console.print(f"{s['input_mb']:,} MB in {s['seconds']:.1f} s ({s['mb_per_s'] or 0:,.0f} MB/s, "
                  f"{s['workers']} worker{'s' if s['workers'] != 1 else ''}); manifest sha256 "
                  f"{s['manifest_sha256'][:16]}…")
    for w in s["warnings"]:
        err_console.print(f"[bold yellow]warning:[/] {w}", highlight=False, markup=True, soft_wrap=True)


@corpus_app.command("build")
def build_command(
    spec: Annotated[Path, typer.Argument(help="Corpus spec YAML, e.g. datasets/leviathan.yaml.",
                                         callback=checked_path(check_input_file))],
    limit: Annotated[int | None, typer.Option("--limit", help="Keep only the first N train rows (stratified; "
                                              "a larger N extends a smaller one).", callback=bounded(0, JSON_SAFE_INT))] = None,
    add: Annotated[int | None, typer.Option("--add", help="Extend the previous --limit build in the output "
                                            "folder by N train rows (the documents' '500, then +500').",
                                            callback=bounded(1, JSON_SAFE_INT))] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes (default: CPU count).",
                                                callback=bounded(1))] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Build train/eval/sample JSONL, quarantine, QC report, review file and manifest from a spec."""
    import signal

    from ..corpus.build import BuildOptions, build_corpus

    def _terminated(signum, frame):  # a killed build cleans up its temporary folder like Ctrl-C does
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminated)
    options = BuildOptions(limit=limit, add=add, workers=workers)
    if json_out or no_progress or not err_console.is_terminal:
        result = build_corpus(spec, options)
    else:
        with _RichProgress() as progress:
            result = build_corpus(spec, options, progress)
    summary = _summary(result)
    if json_out:
        print_json(summary)
    else:
        _print_summary(summary)


@corpus_app.command("inspect")
def inspect_command(
    path: Annotated[Path, typer.Argument(help="A built corpus folder or its manifest.json.")],
    verify: Annotated[bool, typer.Option("--verify", help="Also check every file's sha256.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Validate a built corpus against its manifest and show its counts."""
    from ..corpus.manifest import load_manifest, manifest_hash

    m = load_manifest(path, verify="sha256" if verify else "size")
    summary = {"corpus": m["dir"], "manifest_sha256": manifest_hash(path), "verified": "sha256" if verify else "size",
               "name": m["name"], "limit": m["build"]["limit"], "counts": m["counts"], "files": m["files"],
               "phases": m["phases"], "lengths": m["lengths"], "general_share": m["mix"]["general"]["share"],
               "warnings": m["warnings"], "persona": m["persona"]}
    if json_out:
        print_json(summary)
        return
    _print_summary({**summary, "seconds": 0, "input_mb": sum(s["bytes"] for s in m["sources"]) / 1e6,
                    "mb_per_s": None, "workers": 0, "corpus": m["dir"]})
    console.print(f"[green]ok[/]: every file matches the manifest ({summary['verified']})")


@corpus_app.command("templates")
def templates_command(json_out: JsonOpt = False) -> None:
    """List the teacher-prompt templates of templates/elicit/."""
    from ..corpus.elicit import list_templates

    items = list_templates()
    if json_out:
        print_json({"templates": [t.__dict__ for t in items]})
        return
    table = Table(title="Elicitation templates (templates/elicit/)")
    table.add_column("name")
    table.add_column("template")
    table.add_column("use when")
    for t in items:
        table.add_row(t.name, t.title, t.use_when)
    console.print(table)


@corpus_app.command("elicit")
def elicit_command(
    passages: Annotated[Path, typer.Argument(help='JSONL of passages: {"passage": ..., "id": ..., "work": ...}.',
                                             callback=checked_path(check_input_file))],
    template: Annotated[str, typer.Option("--template", "-t", help="Template name (see `corpus templates`).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Batch request file to write.",
                                             callback=checked_path(check_file_to_write))] = None,
    model: Annotated[str, typer.Option("--model", help="Teacher model of the requests.", callback=one_line)] = "gpt-4o",
    persona: Annotated[str | None, typer.Option("--persona", help="Name of the persona the examples speak as.",
                                                callback=one_line)] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Longest answer per request.",
                                            callback=bounded(1, JSON_SAFE_INT))] = 1500,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature, 0 to 2.",
                                               callback=bounded(0, 2))] = 0.8,
    json_out: JsonOpt = False,
) -> None:
    """Write teacher requests in the OpenAI Batch API JSONL format, one per passage."""
    from ..corpus.elicit import elicit_requests

    res = elicit_requests(passages, template, out, model=model, max_tokens=max_tokens, temperature=temperature,
                          persona=persona)
    if _print_written(res, "requests", res.requests, "passages", json_out):
        console.print("Submit it as an OpenAI batch (endpoint /v1/chat/completions); then "
                      "`llamaforge corpus collect RESULTS.jsonl -o teacher.jsonl` gives a messages source.")


@corpus_app.command("collect")
def collect_command(
    results: Annotated[Path, typer.Argument(help="The OpenAI batch output JSONL.", callback=checked_path(check_input_file))],
    out: Annotated[Path, typer.Option("--out", "-o", help="messages JSONL source to write.",
                                      callback=checked_path(check_file_to_write))],
    category: Annotated[str | None, typer.Option("--category", help="_category of every row.", callback=one_line)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Turn teacher answers (OpenAI batch output) into a `messages` source for a corpus spec."""
    from ..corpus.elicit import collect_answers

    res = collect_answers(results, out, category=category)
    _print_written(res, "rows", res.rows, "answers", json_out)


def _print_written(res, unit: str, count: int, rejected_what: str, json_out: bool) -> bool:
    """Report a file written with its rejected inputs; True when printed for a person."""
    if json_out:
        print_json({"out": str(res.out), unit: count, "rejected": res.rejected,
                    "rejected_file": str(res.rejected_path) if res.rejected_path else None})
        return False
    console.print(f"{count:,} {unit} -> {res.out}")
    if res.rejected:
        err_console.print(f"[bold yellow]warning:[/] {res.rejected:,} {rejected_what} rejected -> {res.rejected_path}")
    return True
