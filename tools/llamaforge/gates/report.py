"""Showing a GateReport: the rich table, report.md, and the files written next to the model
(results.json, report.md, samples/<variant>/<task>.jsonl). Rendering is pure; writing is atomic."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import write_text_atomic
from ..errors import clip
from .verdict import FAIL, PASS, GateReport, GateResult

_VERDICT_STYLE = {PASS: "bold green", FAIL: "bold red"}


def format_value(value: float | None, stderr: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f} ± {stderr:.3f}" if stderr is not None else f"{value:.3f}"


def format_target(gate: GateResult) -> str:
    """The threshold and the base rule, short: "≥ 0.4, ≥ base−se"."""
    parts = [f"{'≥' if gate.higher_is_better else '≤'} {gate.threshold:g}"] if gate.threshold is not None else []
    if gate.comparison_short:
        parts.append(gate.comparison_short)
    return ", ".join(parts)


def render_gate_table(report: GateReport):
    """The gate table: gate, metric, value ± stderr, threshold, base value, verdict, reason."""
    from rich.table import Table

    subject = report.model + (f" + adapter {report.adapter}" if report.adapter else "")
    limit = f", limit {report.limit}/task" if report.limit else ""
    table = Table(title=f"Gates `{report.profile}` — {subject} (persona {report.persona}{limit})", title_justify="left")
    for col in ("gate", "metric", "value ± stderr", "threshold", "base", "verdict"):
        table.add_column(col, justify="right" if col in ("value ± stderr", "base") else "left",
                         no_wrap=col in ("gate", "metric", "verdict"))
    for g in report.gates:
        verdict = g.verdict.upper() + (" (optional)" if g.optional and g.verdict != PASS else "")
        table.add_row(
            g.name, g.metric, format_value(g.value, g.stderr), format_target(g),
            format_value(g.base_value, g.base_stderr), f"[{_VERDICT_STYLE.get(g.verdict, 'yellow')}]{verdict}[/]",
        )
    # The reasons go under the table, one line per gate, so they stay readable on narrow terminals.
    from rich.text import Text

    table.caption = Text("\n".join(f"{g.name}: {g.reason}" for g in report.gates))
    table.caption_justify = "left"
    return table


def summary_line(report: GateReport) -> str:
    n_pass = sum(g.verdict == PASS for g in report.gates)
    parts = [f"{n_pass}/{len(report.gates)} gates passed"]
    if report.failed:
        parts.append(f"failed: {', '.join(g.name for g in report.failed)}")
    if report.skipped:
        parts.append(f"skipped (optional): {', '.join(g.name for g in report.skipped)}")
    return ("PASSED" if report.passed else "FAILED") + " — " + "; ".join(parts)


def _md_cell(text: str) -> str:
    """One table cell: no pipes, no line breaks, no control characters (model output can hold any)."""
    return "".join(ch if ch.isprintable() else " " for ch in str(text).replace("|", "\\|"))


def render_markdown(report: GateReport, answers: dict[str, dict[str, list[dict]]] | None = None) -> str:
    """report.md: the verdict, the gate table, notes, the settings, and the identity answers."""
    lines = [
        f"# Gate report: profile `{report.profile}`",
        "",
        f"**{summary_line(report)}**",
        "",
        f"- model: `{report.model}`" + (f"\n- adapter: `{report.adapter}`" if report.adapter else ""),
        f"- base model: `{report.base_model}`" if report.base_model else "- base model: none",
        f"- persona: {report.persona}",
        f"- limit: {report.limit} examples per task (a subset: not a release verdict)" if report.limit else "- limit: none (full tasks)",
        "",
        "| gate | task | metric | value ± stderr | threshold | base | verdict | reason |",
        "|---|---|---|---:|---|---:|---|---|",
    ]
    for g in report.gates:
        lines.append("| " + " | ".join(_md_cell(x) for x in (
            g.name, g.task, f"`{g.metric}`", format_value(g.value, g.stderr), format_target(g),
            format_value(g.base_value, g.base_stderr), g.verdict.upper() + (" (optional)" if g.optional else ""), g.reason,
        )) + " |")
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    lines += ["", "## Tasks", "", "| model | task | status | examples | chat template | seconds | reason |",
              "|---|---|---|---:|---|---:|---|"]
    for variant, outcomes in report.tasks.items():
        for task, o in outcomes.items():
            chat = "—" if o.chat_template is None else ("yes" if o.chat_template else "no")
            seconds = "—" if o.seconds is None else f"{o.seconds:.0f}"
            lines.append("| " + " | ".join(_md_cell(x) for x in (
                variant, task, o.status, "—" if o.n_samples is None else str(o.n_samples), chat, seconds,
                o.reason or "")) + " |")
    lines += ["", "## Settings", ""] + [f"- {k}: {v}" for k, v in report.settings.items()]
    identity = {v: s.get("identity") for v, s in (answers or {}).items() if s.get("identity")}
    if identity:
        lines += ["", "## Identity answers", ""]
        for variant, samples in identity.items():
            lines += [f"### {variant}", ""]
            for s in samples:
                answer = s["answer"] if isinstance(s["answer"], str) else str(s["answer"])
                score = (s.get("metrics") or {}).get("acc")
                mark = "✓" if score == 1.0 else "✗"
                lines.append(f"- {mark} `{s.get('id')}`: {_md_cell(clip(answer, 160)) or '(empty)'}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"




def write_report_files(report: GateReport, out_dir: Path, samples: dict[str, dict[str, list[dict]]]) -> None:
    """results.json, report.md and samples/<variant>/<task>.jsonl under `out_dir`."""
    out_dir = Path(out_dir)
    for variant, tasks in samples.items():
        for task, rows in tasks.items():
            text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
            write_text_atomic(out_dir / "samples" / variant / f"{task}.jsonl", text)
    write_text_atomic(out_dir / "report.md", render_markdown(report, samples))
    write_text_atomic(out_dir / "results.json", json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n")
