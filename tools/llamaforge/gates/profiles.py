"""Gate profiles: the named lists of gates in evals/gates.yaml (demo, validate, release, ...).

A gate names an lm-eval task, the metric key with its filter (`acc,none`, `pass@1,create_test`), a
threshold, and optionally a comparison with the base model. Parsing is pure (`parse_gate_profiles`
takes the loaded YAML); `load_gate_profiles` / `get_gate_profile` read the file."""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..paths import evals_dir
from .data_files import read_yaml

CHAT_TEMPLATE_CHOICES = ("auto", "always", "never")
_GATE_KEYS = {"name", "task", "metric", "threshold", "compare", "optional", "chat_template", "description",
              "higher_is_better", "limit", "max_gen_toks"}
# Settings of the task's run, not of one gate: every gate on the same task must agree on them.
_TASK_SETTINGS = ("chat_template", "limit", "max_gen_toks")
_COMPARE_KEYS = {"min_gain", "no_regression", "stderr_multiplier"}


@dataclass(frozen=True)
class BaseComparison:
    """How the gated model must relate to its base model on the same metric.
    `min_gain`: value - base >= min_gain. `no_regression`: value >= base - stderr_multiplier *
    sqrt(stderr² + base_stderr²), i.e. no drop beyond the combined standard error."""

    min_gain: float | None = None
    no_regression: bool = False
    stderr_multiplier: float = 1.0

    def describe(self, short: bool = False, higher_is_better: bool = True) -> str:
        """"gain ≥ +0.05 over base; no regression vs base beyond stderr", or for narrow table
        cells (short) "≥ base+0.05, ≥ base−se". For a metric where lower is better (persona bleed)
        a gain is a drop: "≤ base−0.05, ≤ base+se"."""
        mult = "" if self.stderr_multiplier == 1.0 else f"{self.stderr_multiplier:g}" + ("·" if short else "×")
        cmp, sign = ("≥", 1) if higher_is_better else ("≤", -1)
        parts = []
        if self.min_gain is not None:
            gain = sign * self.min_gain
            parts.append(f"{cmp} base{gain:+g}" if short else
                         f"{'gain' if higher_is_better else 'drop'} ≥ {self.min_gain:+.3g} {'over' if higher_is_better else 'below'} base")
        if self.no_regression:
            slack = "−" if higher_is_better else "+"
            parts.append(f"{cmp} base{slack}{mult}se" if short else f"no regression vs base beyond {mult}stderr")
        return (", " if short else "; ").join(parts)


@dataclass(frozen=True)
class GateSpec:
    name: str
    task: str
    metric: str  # "<metric>,<filter>" exactly as lm-eval keys its results
    threshold: float | None = None
    compare: BaseComparison | None = None
    optional: bool = False  # may be skipped (never passed) when its data or code execution is unavailable
    chat_template: str = "auto"  # auto: apply when the tokenizer has one; always; never
    description: str = ""
    higher_is_better: bool = True  # False: the threshold is a maximum (persona bleed ≤ 0.10)
    limit: int | None = None       # examples of the task (its first N): a subset, e.g. of HumanEval
    max_gen_toks: int | None = None  # cap on the task's generated tokens (overrides the profile's)

    @property
    def metric_name(self) -> str:
        return self.metric.split(",", 1)[0]

    @property
    def filter_name(self) -> str:
        return self.metric.split(",", 1)[1]

    @property
    def stderr_key(self) -> str:
        return f"{self.metric_name}_stderr,{self.filter_name}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GateProfile:
    name: str
    description: str
    gates: tuple[GateSpec, ...] = field(default_factory=tuple)
    max_gen_toks: int | None = None   # cap on generated tokens for every task (None: each task's own)

    def tasks(self) -> list[str]:
        """The lm-eval tasks the profile needs, in gate order, each once."""
        return list(dict.fromkeys(g.task for g in self.gates))

    def task_settings(self, task: str) -> GateSpec:
        """The first gate on `task`: its chat_template, limit and max_gen_toks are the task's."""
        return next(g for g in self.gates if g.task == task)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "max_gen_toks": self.max_gen_toks,
                "gates": [g.to_dict() for g in self.gates]}


def default_gates_file() -> Path:
    return evals_dir() / "gates.yaml"


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where} must be a finite number, not {value!r}")
    return float(value)


def _parse_compare(raw: Any, where: str) -> BaseComparison | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UserError(f"{where}.compare must be a mapping with min_gain and/or no_regression")
    unknown = set(raw) - _COMPARE_KEYS
    if unknown:
        raise UserError(f"{where}.compare: unknown key(s) {', '.join(sorted(unknown))}; use {', '.join(sorted(_COMPARE_KEYS))}")
    min_gain = None if raw.get("min_gain") is None else _number(raw["min_gain"], f"{where}.compare.min_gain")
    no_regression = raw.get("no_regression", False)
    if not isinstance(no_regression, bool):
        raise UserError(f"{where}.compare.no_regression must be true or false")
    mult = _number(raw.get("stderr_multiplier", 1.0), f"{where}.compare.stderr_multiplier")
    if mult < 0:
        raise UserError(f"{where}.compare.stderr_multiplier must be >= 0")
    if min_gain is None and not no_regression:
        raise UserError(f"{where}.compare names no rule; give min_gain: <number> or no_regression: true")
    return BaseComparison(min_gain=min_gain, no_regression=no_regression, stderr_multiplier=mult)


def _parse_gate(raw: Any, where: str) -> GateSpec:
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping (name, task, metric, threshold, ...)")
    unknown = set(raw) - _GATE_KEYS
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_GATE_KEYS))}")
    for key in ("task", "metric"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise UserError(f"{where}: `{key}` is required (a string)")
    metric = raw["metric"].strip()
    parts = metric.split(",")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise UserError(
            f"{where}: metric {metric!r} must be '<metric>,<filter>' as lm-eval keys its results, e.g. 'acc,none'"
        )
    name = str(raw.get("name") or raw["task"]).strip()
    threshold = None if raw.get("threshold") is None else _number(raw["threshold"], f"{where}.threshold")
    compare = _parse_compare(raw.get("compare"), where)
    if threshold is None and compare is None:
        raise UserError(f"{where}: a gate must check something; give a threshold, a compare rule, or both")
    higher = raw.get("higher_is_better", True)
    if not isinstance(higher, bool):
        raise UserError(f"{where}.higher_is_better must be true or false")
    counts = {key: _positive_int(raw.get(key), f"{where}.{key}") for key in ("limit", "max_gen_toks")}
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        raise UserError(f"{where}.optional must be true or false")
    chat = raw.get("chat_template", "auto")
    if chat not in CHAT_TEMPLATE_CHOICES:
        raise UserError(f"{where}.chat_template must be one of {', '.join(CHAT_TEMPLATE_CHOICES)}, not {chat!r}")
    return GateSpec(
        name=name,
        task=raw["task"].strip(),
        metric=metric,
        threshold=threshold,
        compare=compare,
        optional=optional,
        chat_template=chat,
        description=str(raw.get("description") or "").strip(),
        higher_is_better=higher,
        **counts,
    )


def _positive_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{where} must be a positive integer, not {value!r}")
    return value


def parse_gate_profiles(data: Any, source: str = "gates.yaml") -> dict[str, GateProfile]:
    """Profiles from the loaded YAML of a gates file: `{profiles: {NAME: {description, gates: [...]}}}`."""
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict) or not data["profiles"]:
        raise UserError(f"{source}: expected a top-level `profiles:` mapping of profile name -> gates")
    profiles: dict[str, GateProfile] = {}
    for pname, body in data["profiles"].items():
        where = f"{source}: profiles.{pname}"
        if not isinstance(body, dict) or not isinstance(body.get("gates"), list) or not body["gates"]:
            raise UserError(f"{where} must have a non-empty `gates:` list")
        gates = tuple(_parse_gate(g, f"{where}.gates[{i}]") for i, g in enumerate(body["gates"]))
        names = [g.name for g in gates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise UserError(f"{where}: gate name(s) {', '.join(dupes)} used twice; give each gate its own `name:`")
        first: dict[str, GateSpec] = {}
        for g in gates:
            other = first.setdefault(g.task, g)
            for key in _TASK_SETTINGS:
                if getattr(other, key) != getattr(g, key):
                    raise UserError(f"{where}: gates on task {g.task!r} disagree on {key}; a task runs once per model")
        unknown = sorted(set(body) - {"description", "gates", "max_gen_toks"})
        if unknown:
            raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: description, gates, max_gen_toks")
        cap = body.get("max_gen_toks")
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            raise UserError(f"{where}.max_gen_toks must be a positive integer, not {cap!r}")
        profiles[str(pname)] = GateProfile(str(pname), str(body.get("description") or "").strip(), gates, cap)
    return profiles


def load_gate_profiles(path: Path | None = None) -> dict[str, GateProfile]:
    path = Path(path) if path else default_gates_file()
    return parse_gate_profiles(read_yaml(path, "gates file"), str(path))


def get_gate_profile(name: str, path: Path | None = None) -> GateProfile:
    profiles = load_gate_profiles(path)
    if name in profiles:
        return profiles[name]
    close = difflib.get_close_matches(name, list(profiles), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"unknown gate profile {name!r}{hint}; profiles in the gates file: {', '.join(profiles)}")
