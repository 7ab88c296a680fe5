"""A stage's reports: report.json (the record later stages trust), report.md (for a person) and
loss_curve.png (train and eval loss against step, with the thresholds drawn).

report.json is written last and atomically, and any older one is removed first, so a run that
stops half-way never leaves a report.json that looks like a pass. matplotlib is imported lazily."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from ..errors import UserError, clip
from ..files import json_safe, read_json, write_bytes_atomic
from .adapter_chain import chain_lines
from .health import FAIL, NOT_MEASURED, PASS, STAGES, Thresholds
from .metrics import Curve, health_facts

REPORT_JSON, REPORT_MD, LOSS_PNG = "report.json", "report.md", "loss_curve.png"
SCHEMA = "llamaforge-stage-report/1"
_STATUSES = (PASS, FAIL, NOT_MEASURED)
_SECTIONS_NOT_IN_RUN = ("health", "gates", "curve", "thresholds", "files", "schema", "passed", "oom_advice")


def remove_stage_report(stage_dir: Path) -> None:
    """Remove a stage's old report.json, so nothing can mistake it for this run's verdict. Call
    this when a stage starts."""
    (Path(stage_dir) / REPORT_JSON).unlink(missing_ok=True)


def write_stage_report(stage_dir: Path, report: dict, curve: Curve, thresholds: Thresholds) -> dict[str, Path]:
    """Write loss_curve.png, report.md, then report.json into `stage_dir`; return their paths
    ({"png", "md", "json"}; no "png" when matplotlib is missing). `report` is the caller's record
    (stage, recipe, corpus, command, timings, `health` = HealthReport.to_dict(), gates ...); this adds
    the measured curve, the thresholds applied and the file names, and nothing else."""
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    remove_stage_report(stage_dir)
    record = dict(report)
    record.setdefault("schema", SCHEMA)
    record["curve"] = curve.to_dict()
    record["thresholds"] = thresholds.to_dict()
    problem = report_shape_problem(record)
    if problem:
        raise ValueError(f"write_stage_report: {problem}")
    paths: dict[str, Path] = {}
    png = stage_dir / LOSS_PNG
    if plot_loss_curve(curve, thresholds, png, title=_title(record), preference_limit=_preference_loss_limit(record)):
        paths["png"] = png
    files = {k: p.name for k, p in paths.items()}
    files.update(md=REPORT_MD, json=REPORT_JSON)
    record["files"] = files
    md = stage_dir / REPORT_MD
    write_bytes_atomic(md, render_markdown(record, thresholds, has_plot="png" in paths).encode("utf-8"))
    paths["md"] = md
    out = stage_dir / REPORT_JSON
    text = json.dumps(json_safe(record), indent=2, allow_nan=False, default=str) + "\n"
    write_bytes_atomic(out, text.encode("utf-8"))
    paths["json"] = out
    return paths


def read_stage_report(path: Path) -> dict:
    """A stage's report.json (or the report.json in a stage folder), checked for shape: a stage,
    a health section whose verdict agrees with its checks. UserError when it is missing, partly
    written, or not a stage report."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_JSON
    record = read_json(path, missing=f"no stage report at {path}; run the stage first",
                       unreadable=f"stage report {path} is not valid JSON (partly written?); rerun the stage")
    problem = report_shape_problem(record)
    if problem:
        raise UserError(f"stage report {path} is not a valid stage report: {problem}; rerun the stage")
    return record


def report_shape_problem(record) -> str | None:
    """Why `record` is not a stage report, or None: it needs a stage and a health section whose
    verdict agrees with its checks (a report cannot claim a pass its checks do not show)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("stage") not in STAGES:
        return f"`stage` is {record.get('stage')!r}, expected one of {', '.join(STAGES)}"
    health = record.get("health")
    if not isinstance(health, dict) or not isinstance(health.get("checks"), list) or not isinstance(
            health.get("passed"), bool):
        return "no `health` section with `passed` and `checks`"
    for check in health["checks"]:
        if not isinstance(check, dict) or not isinstance(check.get("name"), str) or check.get("status") not in _STATUSES:
            return f"malformed check {clip(str(check), 80)}"
    all_pass = bool(health["checks"]) and all(c["status"] == PASS for c in health["checks"])
    if health["passed"] != all_pass:
        return f"health.passed is {health['passed']} but its checks say {all_pass}"
    if "passed" in record and (not isinstance(record["passed"], bool) or (record["passed"] and not all_pass)):
        return "`passed` disagrees with the health checks"
    gates = record.get("gates")
    if record.get("passed") and isinstance(gates, dict) and gates.get("passed") is not True:
        return "`passed` is true but the gates did not pass"
    return None


def _title(record: dict) -> str:
    verdict = "PASSED" if _passed(record) else "FAILED"
    return f"{record['stage']} stage: {verdict}"


def _passed(record: dict) -> bool:
    return bool(record.get("passed", record["health"]["passed"])) and record["health"]["passed"]


# ---- markdown -------------------------------------------------------------------------------


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _run_lines(record: dict) -> list[str]:
    """The caller's own fields (recipe, corpus, command, timings ...), flattened one level."""
    lines = []
    for key, value in record.items():
        if key in _SECTIONS_NOT_IN_RUN or key == "stage":
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                if not isinstance(v, (dict, list)):
                    lines.append(f"- {key}.{sub}: {_inline(v)}")
                elif isinstance(v, list) and not _holds_a_dict(v):   # e.g. preference.loss [[sigmoid, 1.0], [sft, 1.0]]
                    lines.append(f"- {key}.{sub}: {_inline(json.dumps(v, ensure_ascii=False))}")
        elif isinstance(value, list) and all(isinstance(v, str) for v in value) and len(value) > 1:
            lines.append(f"- {key}:")
            lines += [f"  - {_cell(v)}" for v in value]
        elif isinstance(value, list):
            lines.append(f"- {key}: {_inline(' '.join(map(str, value)))}")
        else:
            lines.append(f"- {key}: {_inline(value)}")
    return lines


def _holds_a_dict(value) -> bool:
    return isinstance(value, dict) or (isinstance(value, list) and any(_holds_a_dict(v) for v in value))


def _inline(value) -> str:
    text = _cell(value)
    return f"`{text}`" if text and "`" not in text else text


def _checks_table(checks: list[dict]) -> list[str]:
    lines = ["| check | status | value | threshold | detail |", "| --- | --- | --- | --- | --- |"]
    mark = {PASS: "pass", FAIL: "**FAIL**", NOT_MEASURED: "**not measured**", "skipped": "skipped (optional)"}
    for c in checks:
        lines.append(f"| {_cell(c['name'])} | {mark.get(c['status'], c['status'])} | {_cell(c.get('value'))} "
                     f"| {_cell(c.get('threshold'))} | {_cell(c.get('message'))} |")
    return lines


def gate_rows(gates) -> tuple[list[dict], str | None]:
    """The gates section the caller recorded (gates.GateReport.to_dict(), or {"passed": False,
    "skipped"|"error": why}) as check-like rows, plus a line when no gate ran."""
    if not isinstance(gates, dict):
        return [], None
    rows = []
    for g in gates.get("gates") or []:
        if isinstance(g, dict) and isinstance(g.get("name"), str):
            status = {PASS: PASS, FAIL: FAIL, "skipped": "skipped"}.get(g.get("verdict"), NOT_MEASURED)
            rows.append({"name": g["name"], "status": status, "value": g.get("value"),
                         "threshold": g.get("threshold"), "message": g.get("comparison") or g.get("reason")})
    note = None if rows else (gates.get("skipped") or gates.get("error") or "no gate results recorded")
    return rows, note


def _gates_table(gates: dict) -> list[str]:
    """The gates with the tuned model's value next to the base model's, and the rule each met or missed."""
    lines = ["| gate | verdict | tuned | base | target | detail |", "| --- | --- | --- | --- | --- | --- |"]
    mark = {PASS: "pass", FAIL: "**FAIL**", "skipped": "skipped (optional)"}
    for g in gates.get("gates") or []:
        if not isinstance(g, dict):
            continue
        cmp = "≤" if g.get("higher_is_better") is False else "≥"
        target = ", ".join(x for x in (f"{cmp} {g['threshold']:g}" if isinstance(g.get("threshold"), (int, float)) else "",
                                       g.get("comparison_short") or "") if x) or "-"
        lines.append(f"| {_cell(g.get('name'))} | {mark.get(g.get('verdict'), _cell(g.get('verdict')))} | "
                     f"{_cell(g.get('value'))} | {_cell(g.get('base_value'))} | {_cell(target)} | {_cell(g.get('reason'))} |")
    return lines


def _advice_for(check: dict) -> str | None:
    table = health_facts()["advice"]
    name = check["name"]
    entry = table.get(name) or next((v for k, v in table.items() if k in name), None)
    if not entry:
        return None
    if name == "process" and str(check.get("value") or "").startswith("SIG"):
        text = entry.get("interrupted")
    elif check["status"] == NOT_MEASURED:
        text = entry.get("not_measured")
    elif name == "no_oom" and check.get("value") == "host RAM":
        text = entry.get("host")
    else:
        text = entry.get("fail")
    return " ".join(str(text).split()) if text else None


def render_markdown(record: dict, thresholds: Thresholds, *, has_plot: bool) -> str:
    health = record["health"]
    gate_checks, gates_note = gate_rows(record.get("gates"))
    lines = [f"# {_title(record)}", ""]
    counts = {s: sum(c["status"] == s for c in health["checks"]) for s in _STATUSES}
    lines.append(f"Health: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[NOT_MEASURED]} not measured "
                 "(a check that could not measure fails the gate).")
    if record.get("passed") is False and health["passed"]:
        lines.append("The health checks passed; the stage failed on the gates below.")
    lines += ["", "## Run", ""] + (_run_lines(record) or ["- (no run details recorded)"])
    if record.get("starts_from"):
        lines += ["", "## Starts from (lora_model_dir; newest first)", ""] + chain_lines(record["starts_from"])
    lines += ["", "## Health checks", ""] + _checks_table(health["checks"])
    if gate_checks or gates_note:
        gates = record.get("gates") or {}
        profile = f" (profile `{_cell(gates['profile'])}`)" if gates.get("profile") else ""
        lines += ["", f"## Gates{profile}", ""]
        lines += _gates_table(gates) if gate_checks else [f"- {_cell(gates_note)}"]
    todo = [c for c in health["checks"] + gate_checks if c["status"] in (FAIL, NOT_MEASURED)]
    if todo:
        lines += ["", "## What to do", ""]
        for c in todo:
            advice = _advice_for(c) or "See the detail in the table."
            if c["name"] == "no_oom" and c["status"] == FAIL and record.get("oom_advice"):
                advice += f" Planner: {record['oom_advice']}"
            lines.append(f"- **{c['name']}** ({c['status'].replace('_', ' ')}): {advice}")
    curve = record.get("curve") or {}
    lines += ["", "## Curve", ""]
    train, evals = curve.get("train") or [], curve.get("eval") or []
    lines.append(f"- {len(train)} train losses, {len(evals)} evaluations logged; total steps "
                 f"{_cell(curve.get('total_steps'))}, configured epochs {_cell(curve.get('epochs'))}")
    if train:
        lines.append(f"- train loss: {_cell(train[0]['loss'])} at step {train[0]['step']} -> "
                     f"{_cell(train[-1]['loss'])} at step {train[-1]['step']}")
    if evals:
        lines.append(f"- eval loss: {_cell(evals[0]['loss'])} at step {_cell(evals[0]['step'])} -> "
                     f"{_cell(evals[-1]['loss'])} at step {_cell(evals[-1]['step'])}")
    peak = curve.get("peak_memory_gib")
    lines.append(f"- peak accelerator memory: {_cell(peak)} GiB" if peak is not None
                 else "- peak accelerator memory: not reported (no accelerator memory statistics in the log)")
    if has_plot:
        lines += ["", f"![loss curve]({LOSS_PNG})"]
    else:
        lines.append("- no plot: matplotlib is not installed (`pip install matplotlib`)")
    lines += ["", f"## Thresholds ({thresholds.stage})", "", "| threshold | value | source |", "| --- | --- | --- |"]
    for name in type(thresholds).names():
        lines.append(f"| {name} | {_cell(getattr(thresholds, name))} | {_cell(thresholds.source(name))} |")
    return "\n".join(lines) + "\n"


# ---- the plot -------------------------------------------------------------------------------


def epoch_boundaries(curve: Curve) -> list[tuple[int, float]]:
    """(whole epoch, step where it ends) for each epoch boundary the logged points cross,
    interpolated between the two points around it."""
    pts = sorted(((p.step, p.epoch) for p in curve.train if p.epoch is not None), key=lambda x: x[0])
    out: list[tuple[int, float]] = []
    for (s0, e0), (s1, e1) in zip(pts, pts[1:]):
        for k in range(math.floor(e0) + 1, math.floor(e1) + 1):  # whole epochs k with e0 < k <= e1
            out.append((k, s0 + (s1 - s0) * (k - e0) / (e1 - e0)))
    return out


_LOSS_LIMIT_LABELS = {"dpo_loss_below_ln2": "DPO loss limit {:g} (ln 2 = 0.693 at the start)",
                      "preference_loss_falling": "loss limit {:g} (a fall from the first steps' mean)"}


def _preference_loss_limit(record: dict) -> tuple[float, str] | None:
    """The loss limit the preference health check applied (its threshold and what it means)."""
    for check in (record.get("health") or {}).get("checks") or []:
        label, limit = _LOSS_LIMIT_LABELS.get(check.get("name")), check.get("threshold")
        if label and isinstance(limit, (int, float)):
            return float(limit), label.format(limit)
    return None


def plot_loss_curve(curve: Curve, thresholds: Thresholds, path: Path, *, title: str,
                    preference_limit: tuple[float, str] | None = None) -> bool:
    """Train and eval loss against step, the loss limits as horizontal lines, epoch boundaries as
    vertical ones. False (and no file) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        train = [(p.step, p.loss) for p in curve.train if math.isfinite(p.loss)]
        evals = [(p.step, p.loss) for p in curve.eval if p.step is not None and math.isfinite(p.loss)]
        if train:
            ax.plot(*zip(*train), label="train loss", color="tab:blue", linewidth=1.2)
        if evals:
            ax.plot(*zip(*evals), label="eval loss", color="tab:orange", marker="o", linewidth=1.2)
        if isinstance(thresholds, Thresholds):
            eval_limit = math.log(thresholds.eval_ppl_max)
            ax.axhline(thresholds.final_train_loss_max, color="tab:blue", linestyle="--", linewidth=0.9,
                       label=f"final train loss limit {thresholds.final_train_loss_max:g}")
            ax.axhline(eval_limit, color="tab:orange", linestyle="--", linewidth=0.9,
                       label=f"eval ppl limit {thresholds.eval_ppl_max:g} (loss {eval_limit:.3g})")
        else:   # a preference run: the loss limit its health check applied
            limit, label = preference_limit or (thresholds.loss_max, f"DPO loss limit {thresholds.loss_max:g} "
                                                                      "(ln 2 = 0.693 at the start)")
            ax.axhline(limit, color="tab:blue", linestyle="--", linewidth=0.9, label=label)
        for k, step in epoch_boundaries(curve):
            ax.axvline(step, color="grey", linestyle=":", linewidth=0.8)
            ax.annotate(f"epoch {k}", (step, 0.02), xycoords=("data", "axes fraction"), fontsize=7,
                        color="grey", ha="right", va="bottom", rotation=90)
        losses = [v for _, v in train + evals if v > 0]
        if losses and max(losses) / min(losses) > 20:
            ax.set_yscale("log")
        if not train and not evals:
            ax.text(0.5, 0.5, "no loss was logged", transform=ax.transAxes, ha="center", va="center")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        write_bytes_atomic(path, buf.getvalue())
    finally:
        plt.close(fig)
    return True
