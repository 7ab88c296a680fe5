"""The QC report (qc.json + qc.md) and the review file (review.md), assembled from counts (pure)."""

from __future__ import annotations

import orjson

from .qc import FLAG_BITS, SAMPLED_FLAGS, flag_names


def qc_report(
    *,
    categories: dict[str, dict],
    phrase_hits: dict[str, dict[str, int]],
    hits_scope: str,
    sample_scope: str,
    top_openers: list[tuple[str, int]],
    lengths: dict,
    drop: tuple[str, ...],
    warnings: list[str],
    general: dict,
) -> dict:
    """`categories[name]` holds: kept, all_rows (flag -> count over every kept row, for the flags
    measured on every row), sample_rows (the QC rows, on which the other flags and the openers are
    measured), sample (flag -> count), top_openers [(text, count)], filtered (flag -> rows dropped).
    `sample_scope` is the spec's qc.scope: "sample", or "all" when the QC rows are every train row."""
    per_cat = {}
    for name, c in sorted(categories.items()):
        flags = {}
        for flag in FLAG_BITS:
            if flag in c["all_rows"]:
                n, measured = c["all_rows"][flag], c["kept"]
                flags[flag] = {"flagged": n, "measured": measured, "share": _share(n, measured), "scope": "every row"}
            else:
                n, measured = c["sample"].get(flag, 0), c["sample_rows"]
                flags[flag] = {"flagged": n, "measured": measured, "share": _share(n, measured),
                               "scope": "train rows" if sample_scope == "all" else "sample"}
                if sample_scope != "all":
                    flags[flag]["estimated_total"] = round(n / measured * c["kept"]) if measured else None
            if flag in drop:
                flags[flag]["dropped"] = c["filtered"].get(flag, 0)
        per_cat[name] = {"kept": c["kept"], "flags": flags, "top_openers": c["top_openers"]}
    return {
        "flags_measured": {"every_row": sorted({f for c in categories.values() for f in c["all_rows"]}),
                           "qc_rows": [f for f in SAMPLED_FLAGS
                                       if any(f not in c["all_rows"] for c in categories.values())],
                           "qc_rows_are": "every train row" if sample_scope == "all" else "a sample per category"},
        "drop": list(drop),
        "general_instruction_share": general,
        "top_openers": [{"opener": t, "rows": n} for t, n in top_openers],
        "phrase_hits": {"scope": hits_scope, **{f: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0])))
                                                for f, v in sorted(phrase_hits.items())}},
        "per_category": per_cat,
        "lengths": lengths,
        "warnings": warnings,
    }


def _share(n: int, measured: int) -> float | None:
    return round(n / measured, 4) if measured else None


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def qc_markdown(report: dict, corpus: str) -> str:
    lines = [f"# QC report: {corpus}", ""]
    if report["warnings"]:
        lines += ["## Warnings", ""] + [f"- **{w}**" for w in report["warnings"]] + [""]
    g = report["general_instruction_share"]
    if g.get("share") is not None:
        lines += [f"General instruction data: **{_pct(g['share'])}** of the train split "
                  f"(categories {', '.join(g['categories'])}; advised {_pct(g['advised'][0])}-{_pct(g['advised'][1])}).", ""]
    lines += ["## Flags per category", "",
              "short_answer (and every dropped flag) is checked on every row; the others, and the openers, on the "
              "QC rows: " + ("every train row. " if report["flags_measured"]["qc_rows_are"] == "every train row" else
                             "a uniform sample of each category (the first rows of its train order), "
                             "shown as flagged of measured. ")
              + (f"Dropped on request: {', '.join(report['drop'])}." if report["drop"] else
                 "Nothing is dropped: flags only (add `qc.drop: [...]` to the spec to drop)."), ""]
    header = "| category | kept | " + " | ".join(FLAG_BITS) + " |"
    lines += [header, "|" + "---|" * (2 + len(FLAG_BITS))]
    for name, c in report["per_category"].items():
        cells = []
        for flag in FLAG_BITS:
            f = c["flags"][flag]
            cell = f"{f['flagged']:,} ({_pct(f['share'])})"
            if f["scope"] != "every row":
                cell += f" of {f['measured']:,}"
            if "dropped" in f:
                cell += f", {f['dropped']:,} dropped"
            cells.append(cell)
        lines.append(f"| {name} | {c['kept']:,} | " + " | ".join(cells) + " |")
    lines += ["", "## Most frequent openers (first words of the first answer, on the QC rows)", ""]
    lines += ["| rows | opener |", "|---:|---|"]
    lines += [f"| {o['rows']:,} | {o['opener'] or '(empty)'} |" for o in report["top_openers"]]
    hits = report["phrase_hits"]
    lines += ["", f"## Phrase hits (rows, {hits['scope']})", ""]
    for flag in ("cliche", "persona_break", "refusal"):
        found = hits.get(flag) or {}
        lines.append(f"- **{flag}**: " + (", ".join(f"“{p}” {n:,}" for p, n in list(found.items())[:15]) or "none"))
    lengths = report["lengths"]
    lines += ["", "## Token lengths", "", f"Method: {lengths['method']}. Axolotl drops rows longer than "
              f"`sequence_len` ({lengths['sequence_len']:,}) without an error.", "",
              "| category | rows | p50 | p95 | max | over sequence_len |", "|---|---:|---:|---:|---:|---:|"]
    for name, s in lengths["per_category"].items():
        lines.append(f"| {name} | {s['rows']:,} | {_n(s['p50'])} | {_n(s['p95'])} | {_n(s['max'])} | "
                     f"{s['over_sequence_len']:,} |")
    return "\n".join(lines) + "\n"


def _n(x) -> str:
    return "—" if x is None else f"{x:,}"


def review_markdown(corpus: str, rows_by_category: dict[str, list[dict]]) -> str:
    """The rows for a human read: per category, each row with where it came from and its flags."""
    lines = [f"# Review: {corpus}", "",
             "The first rows of each category in train order (a uniform random sample). Read them; fix or drop "
             "what is wrong at its source (file and line below), then rebuild.", ""]
    for cat, rows in sorted(rows_by_category.items()):
        lines += [f"## {cat} ({len(rows)} rows)", ""]
        for i, r in enumerate(rows, 1):
            flags = ", ".join(flag_names(r["flags"])) or "none"
            lines += [f"### {cat} {i}: {r['source']} {r['where']} · `{r['id'][:12]}` · flags: {flags}", ""]
            for m in r["messages"]:
                lines.append(f"**{m['role']}**")
                lines += ["> " + part if part else ">" for part in m["content"].split("\n")]
                lines.append("")
    return "\n".join(lines) + "\n"


def dumps_json(obj) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
