"""Turn Axolotl's training outputs into a loss curve.

Two sources, one result (`Curve`):
- the console log, read incrementally by `LogWatcher` while the child runs (and for crashed runs):
  the HF Trainer's metric dicts (`{'loss': '4.902', 'grad_norm': '2.482', ..., 'epoch': '0.5'}`,
  floats printed as strings with 4 significant digits), tqdm progress bars separated by carriage
  returns, Axolotl's config dump, `[rankN]:` prefixes of multi-process runs, exception lines and
  out-of-memory lines;
- `trainer_state.json`, which the Trainer writes into every checkpoint-N/ (its `log_history` has
  exact steps and full-precision values; prefer it when present).

Pure except the two readers of files (`curve_from_trainer_state`, `latest_trainer_state`).
No torch."""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path


from ..errors import UserError
from ..files import json_safe, read_json
from ..paths import read_facts


@lru_cache(maxsize=1)
def health_facts() -> dict:
    """facts/health.yaml: thresholds with their sources, advice, OOM patterns."""
    return read_facts("health.yaml")


# ---- the curve ------------------------------------------------------------------------------


@dataclass
class TrainPoint:
    step: int
    epoch: float | None
    loss: float
    grad_norm: float | None = None
    learning_rate: float | None = None
    tokens_per_s: float | None = None  # trainable tokens/s per GPU, as Axolotl reports it
    # a preference run's (TRL DPO) step metrics: rewards/margins, rewards/accuracies, logps/chosen ...
    prefs: dict[str, float] | None = None


@dataclass
class EvalPoint:
    step: int | None
    epoch: float | None
    loss: float
    perplexity: float | None = None  # exp(loss)


@dataclass
class Curve:
    train: list[TrainPoint] = field(default_factory=list)
    eval: list[EvalPoint] = field(default_factory=list)
    total_steps: int | None = None
    epochs: float | None = None  # configured num_epochs, if known
    peak_memory_gib: float | None = None  # largest memory/* figure; None where the device reports none (CPU)

    def to_dict(self) -> dict:
        """JSON-safe: non-finite numbers become the strings "nan", "inf", "-inf"."""
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> Curve:
        def num(v):
            return None if v is None else float(v)

        return cls(
            train=[TrainPoint(int(p["step"]), num(p.get("epoch")), float(p["loss"]), num(p.get("grad_norm")),
                              num(p.get("learning_rate")), num(p.get("tokens_per_s")),
                              {k: float(v) for k, v in p["prefs"].items()} if p.get("prefs") else None)
                   for p in data.get("train", [])],
            eval=[EvalPoint(None if p.get("step") is None else int(p["step"]), num(p.get("epoch")),
                            float(p["loss"]), num(p.get("perplexity"))) for p in data.get("eval", [])],
            total_steps=data.get("total_steps"),
            epochs=num(data.get("epochs")),
            peak_memory_gib=num(data.get("peak_memory_gib")),
        )


def perplexity_of(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


# ---- one metric dict ------------------------------------------------------------------------

_BARE_NONFINITE = re.compile(r"(?<=[:\s\[,])(-?inf|nan)(?=\s*[,}\]])")


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())  # float() reads 'nan', 'inf', '-inf', '1e-05'
        except ValueError:
            return None
    return None


def parse_metric_dict(text: str) -> dict[str, float] | None:
    """The numeric entries of one printed Trainer metrics dict, e.g.
    `{'loss': '4.902', 'epoch': '0.5', 'tokens/total': 5120}` -> {'loss': 4.902, 'epoch': 0.5, ...}.
    Values may be numbers or strings of numbers, including 'nan' and 'inf' (bare nan/inf tokens are
    accepted too); other entries are dropped. None when the text is not a dict literal with at
    least one number."""
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        raw = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        try:
            raw = ast.literal_eval(_BARE_NONFINITE.sub(r"'\1'", text))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    if not isinstance(raw, dict):
        return None
    out = {str(k): v for k, v in ((k, _number(v)) for k, v in raw.items()) if v is not None}
    return out or None


# ---- out of memory and errors ----------------------------------------------------------------

_RANK_PREFIX = re.compile(r"^\s*\[(?:rank|default)\d+\]:\s?")


@lru_cache(maxsize=1)
def _oom_patterns() -> list[tuple[str, re.Pattern]]:
    return [(p["where"], re.compile(p["regex"])) for p in health_facts()["oom_patterns"]]


def oom_kind(line: str) -> str | None:
    """"gpu" or "host" when `line` (one log line) says the run ran out of memory, else None."""
    line = _RANK_PREFIX.sub("", line).strip()
    for where, pattern in _oom_patterns():
        if pattern.search(line):
            return where
    return None


def detect_oom(text: str) -> str | None:
    """The first line of `text` that reports an out-of-memory (GPU or host), stripped of any
    `[rankN]:` prefix; None if there is none. `oom_kind(line)` says which memory."""
    for line in re.split(r"[\r\n]+", text):
        if oom_kind(line):
            return _RANK_PREFIX.sub("", line).strip()
    return None


def describe_oom(line: str | None, exit_code: int | None = None) -> str | None:
    """A one-line cause: "GPU out of memory: <line>", "host RAM (OOM killer?): <line>", or, from a
    SIGKILL exit code alone, "host RAM (OOM killer?): process killed by SIGKILL (exit code 137)"."""
    if line:
        if oom_kind(line) == "host":
            return f"host RAM (OOM killer?): {line}"
        return f"GPU out of memory: {line}"
    if exit_code is not None and exit_code in health_facts()["host_kill_exit_codes"]:
        return f"host RAM (OOM killer?): process killed by SIGKILL (exit code {exit_code})"
    return None


_ERROR_LINE = re.compile(
    r"^(?P<name>(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Interrupt|Exit|Failure|Fault))(?::\s*(?P<msg>.*))?$"
)


def error_line(line: str) -> tuple[str, str] | None:
    """(exception name, message) when `line` is the last line of a Python traceback."""
    m = _ERROR_LINE.match(_RANK_PREFIX.sub("", line).rstrip())
    if not m:
        return None
    return m.group("name"), (m.group("msg") or "").strip()


# ---- the log watcher -------------------------------------------------------------------------

# `  24%|██▍       | 54/225 [00:02<00:07, 22.50it/s]` ; the description before the percentage is
# empty for the Trainer's bars and names data-preparation bars ("Dropping Invalid Sequences ...").
_PROGRESS = re.compile(
    r"(?P<desc>[^\r\n%]*?)\s*(?P<pct>\d{1,3})%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*"
    r"\[(?P<elapsed>[\d:]+)<(?P<eta>[\d:?]+),\s*(?P<rate>[^\]]*)\]"
)
_MAX_STEPS = re.compile(r"Maximum number of steps set at (\d+)")
_CHECKPOINT = re.compile(r"Saving model checkpoint to (\S+)")
_CONFIG_START = re.compile(r"\[axolotl\.cli\.config\] config:\s*$")
_CONFIG_LINE = re.compile(r'^(?:\{|\s*|\s+["{}\[\]].*)$')  # a line of the pretty-printed JSON
_CONFIG_KEY = re.compile(r'^  "(?P<key>[a-z_]+)": (?P<value>[^{\[]*?),?$')
_CONFIG_KEYS = {"num_epochs", "max_steps", "logging_steps", "eval_steps", "save_steps", "world_size",
                "output_dir", "micro_batch_size", "gradient_accumulation_steps", "sequence_len"}


def _seconds(clock: str) -> float | None:
    """tqdm's `MM:SS` or `H:MM:SS` -> seconds; None for `?`."""
    if "?" in clock:
        return None
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + int(part)
    return total


def _it_per_s(rate: str) -> float | None:
    m = re.match(r"\s*([\d.]+)\s*(it/s|s/it)", rate)
    if not m:
        return None
    value = float(m.group(1))
    if m.group(2) == "it/s":
        return value
    return 1.0 / value if value > 0 else None


class LogWatcher:
    """Reads a training log as it is printed. `feed(chunk)` takes any slice of the raw output
    (chunks may split lines anywhere) and returns the new events:

        {"kind": "train", "step", "epoch", "loss", "grad_norm", "learning_rate", "tokens_per_s"}
        {"kind": "eval", "step", "epoch", "loss", "perplexity"}
        {"kind": "progress", "step", "total", "elapsed_s", "eta_s", "it_per_s"}   (training bar)
        {"kind": "checkpoint", "path"}
        {"kind": "oom", "line", "where": "gpu"|"host"}
        {"kind": "error", "line"}

    Metric dicts carry no step: a point first gets the step of the last training progress bar
    printed before it (or logging_steps x its ordinal when no bar was seen), and is corrected by
    the bar tqdm redraws right after printing the dict, which shows the exact step. `curve` holds
    the corrected points; events report the step known when the dict was read. Call `finish()`
    at the end of the output to read a last line without a newline."""

    def __init__(self) -> None:
        self.curve = Curve()
        self.progress: dict | None = None
        self.oom: str | None = None
        self.last_error: str | None = None
        self.checkpoints: list[str] = []
        self.settings: dict = {}  # from Axolotl's config dump: num_epochs, max_steps, logging_steps, ...
        self._buffer = ""
        self._in_config = False
        self._train_bar_total: int | None = None
        self._trainer_started = False
        self._awaiting_step: list[TrainPoint | EvalPoint] = []
        self._max_steps_line: int | None = None
        self._wrappers = tuple(health_facts()["wrapper_errors"])

    # -- input ----------------------------------------------------------------------------
    def feed(self, text: str) -> list[dict]:
        events: list[dict] = []
        data = self._buffer + text
        parts = re.split(r"[\r\n]", data)
        self._buffer = parts.pop()  # the unterminated tail
        for segment in parts:
            self._read_segment(segment, events)
        # a progress bar is complete at its closing bracket, before tqdm's next carriage return
        if self._buffer.endswith("]"):
            self._read_progress(_RANK_PREFIX.sub("", self._buffer), events)
        return events

    def finish(self) -> list[dict]:
        """Read whatever is left without a line end."""
        events: list[dict] = []
        if self._buffer:
            tail, self._buffer = self._buffer, ""
            self._read_segment(tail, events)
        return events

    # -- one line (or carriage-return-separated piece of one) -----------------------------
    def _read_segment(self, raw: str, events: list[dict]) -> None:
        segment = _RANK_PREFIX.sub("", raw)
        if self._read_config(segment):
            return
        if "Starting trainer" in segment:
            self._trainer_started = True
        m = _MAX_STEPS.search(segment)
        if m:
            self._max_steps_line = int(m.group(1))
            self.curve.total_steps = self._max_steps_line
        self._read_progress(segment, events)
        start, end = segment.find("{'"), segment.rfind("}")
        if start >= 0 and end > start:
            metrics = parse_metric_dict(segment[start:end + 1])
            if metrics:
                self._read_metrics(metrics, events)
        m = _CHECKPOINT.search(segment)
        if m:
            self.checkpoints.append(m.group(1))
            events.append({"kind": "checkpoint", "path": m.group(1)})
        where = oom_kind(segment)
        if where:
            line = segment.strip()
            if self.oom is None:
                self.oom = line
            events.append({"kind": "oom", "line": line, "where": where})
        err = error_line(segment)
        if err:
            name, msg = err
            line = f"{name}: {msg}" if msg else name
            is_wrapper = name.rsplit(".", 1)[-1] in self._wrappers or not msg
            if self.last_error is None or not is_wrapper:
                self.last_error = line
            events.append({"kind": "error", "line": line})

    def _read_config(self, segment: str) -> bool:
        """Axolotl's config dump: a JSON object printed after `[axolotl.cli.config] config:`."""
        if _CONFIG_START.search(segment):
            self._in_config = True
            return True
        if not self._in_config:
            return False
        if segment.rstrip() == "}":
            self._in_config = False
            self._apply_settings()
            return True
        if not _CONFIG_LINE.match(segment):
            self._in_config = False  # the dump was cut short; read this line normally
            self._apply_settings()
            return False
        m = _CONFIG_KEY.match(segment)
        if m and m.group("key") in _CONFIG_KEYS:
            try:
                self.settings[m.group("key")] = json.loads(m.group("value"))
            except ValueError:
                pass
        return True

    def _apply_settings(self) -> None:
        epochs = _number(self.settings.get("num_epochs"))
        if epochs is not None:
            self.curve.epochs = epochs
        max_steps = self.settings.get("max_steps")
        if self.curve.total_steps is None and isinstance(max_steps, int) and max_steps > 0:
            self.curve.total_steps = max_steps

    def _is_training_bar(self, desc: str, total: int, rate: str) -> bool:
        if desc.strip() or not re.search(r"it/s|s/it", rate):
            return False  # a named bar (data preparation, loading weights) or a non-step unit
        expected = self._max_steps_line or self.curve.total_steps
        if self._train_bar_total is None and (self._trainer_started or expected is None or total == expected):
            self._train_bar_total = total  # the Trainer opens its bar first, before any evaluation bar
        return total in (self._train_bar_total, expected)

    def _read_progress(self, segment: str, events: list[dict]) -> None:
        for m in _PROGRESS.finditer(segment):
            total = int(m.group("total"))
            if not self._is_training_bar(m.group("desc"), total, m.group("rate")):
                continue
            step = int(m.group("n"))
            for point in self._awaiting_step:  # tqdm redraws the bar right after printing a dict
                if point.step is None or step >= point.step:
                    point.step = step
            self._awaiting_step = []
            progress = {"step": step, "total": total, "elapsed_s": _seconds(m.group("elapsed")),
                        "eta_s": _seconds(m.group("eta")), "it_per_s": _it_per_s(m.group("rate"))}
            if self.curve.total_steps is None:
                self.curve.total_steps = total
            changed = self.progress is None or self.progress["step"] != step
            self.progress = progress
            if changed:
                events.append({"kind": "progress", **progress})

    def _provisional_step(self) -> int:
        if self.progress is not None:
            return self.progress["step"]
        logging_steps = self.settings.get("logging_steps")
        ordinal = len(self.curve.train) + 1
        if isinstance(logging_steps, int) and logging_steps > 0:
            return ordinal * logging_steps
        return ordinal

    def _read_metrics(self, metrics: dict[str, float], events: list[dict]) -> None:
        memory = [v for k, v in metrics.items() if k.startswith("memory/") and math.isfinite(v) and v > 0]
        if memory:
            peak = max(memory)
            if self.curve.peak_memory_gib is None or peak > self.curve.peak_memory_gib:
                self.curve.peak_memory_gib = peak
        if "loss" in metrics:
            point = train_point(metrics, self._provisional_step())
            self.curve.train.append(point)
            self._awaiting_step.append(point)
            events.append({"kind": "train", **asdict(point)})
        elif "eval_loss" in metrics:
            step = self.progress["step"] if self.progress is not None else (
                self.curve.train[-1].step if self.curve.train else None)
            point = eval_point(metrics, step)
            self.curve.eval.append(point)
            self._awaiting_step.append(point)
            events.append({"kind": "eval", **asdict(point)})


PREFERENCE_PREFIXES = ("rewards/", "logps/", "logits/")   # what TRL's DPOTrainer logs beside the loss


def train_point(metrics: dict[str, float], step: int) -> TrainPoint:
    prefs = {k: v for k, v in metrics.items() if k.startswith(PREFERENCE_PREFIXES)}
    return TrainPoint(step=step, epoch=metrics.get("epoch"), loss=metrics["loss"],
                      grad_norm=metrics.get("grad_norm"), learning_rate=metrics.get("learning_rate"),
                      tokens_per_s=metrics.get("tokens/train_per_sec_per_gpu"), prefs=prefs or None)


def eval_point(metrics: dict[str, float], step: int | None) -> EvalPoint:
    loss = metrics["eval_loss"]
    return EvalPoint(step=step, epoch=metrics.get("epoch"), loss=loss,
                     perplexity=perplexity_of(loss) if math.isfinite(loss) else None)


def parse_log(text: str) -> LogWatcher:
    """A whole log at once (a crashed run, a finished one): the watcher after reading all of it."""
    watcher = LogWatcher()
    watcher.feed(text)
    watcher.finish()
    return watcher


# ---- trainer_state.json ----------------------------------------------------------------------


def curve_from_trainer_state(path: Path) -> Curve:
    """The curve recorded in a checkpoint's trainer_state.json (`log_history`: exact steps, full
    precision). UserError when the file is missing or is not a trainer state."""
    path = Path(path)
    state = read_json(path, missing=f"{path} not found; the Trainer writes trainer_state.json into each checkpoint-N/",
                      unreadable=f"{path} is not readable JSON ({{reason}}); the checkpoint may be partly written")
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise UserError(f"{path} has no `log_history` list; is it a Trainer's trainer_state.json?")
    curve = Curve()
    max_steps = state.get("max_steps")
    curve.total_steps = max_steps if isinstance(max_steps, int) and max_steps > 0 else None
    curve.epochs = _number(state.get("num_train_epochs"))
    for entry in history:
        if not isinstance(entry, dict):
            continue
        metrics = {k: v for k, v in ((k, _number(v)) for k, v in entry.items()) if v is not None}
        step = metrics.get("step")
        step = int(step) if step is not None and math.isfinite(step) else None
        memory = [v for k, v in metrics.items() if k.startswith("memory/") and math.isfinite(v) and v > 0]
        if memory:
            curve.peak_memory_gib = max([*memory, curve.peak_memory_gib or 0.0])
        if "loss" in metrics and step is not None:
            curve.train.append(train_point(metrics, step))
        elif "eval_loss" in metrics:
            curve.eval.append(eval_point(metrics, step))
    return curve


def latest_trainer_state(output_dir: Path) -> Path | None:
    """trainer_state.json of the highest checkpoint-N/ under `output_dir`, if any."""
    best: tuple[int, Path] | None = None
    for child in Path(output_dir).glob("checkpoint-*/trainer_state.json"):
        suffix = child.parent.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (best is None or int(suffix) > best[0]):
            best = (int(suffix), child)
    return best[1] if best else None


def choose_curve(log_curve: Curve, state_curve: Curve | None) -> Curve:
    """The structured record when it covers the run at least as far as the log, else the log's
    curve (a crash after the last checkpoint, or no checkpoint at all). The log's peak memory and
    configured epochs fill what the state lacks."""
    if state_curve is None or not state_curve.train:
        return log_curve
    last_log = log_curve.train[-1].step if log_curve.train else -1
    if state_curve.train[-1].step < last_log:
        return log_curve
    if state_curve.peak_memory_gib is None:
        state_curve.peak_memory_gib = log_curve.peak_memory_gib
    if state_curve.epochs is None:
        state_curve.epochs = log_curve.epochs
    return state_curve


def run_curve(log_curve: Curve, output_dir: Path) -> Curve:
    """The curve to judge a finished or crashed run by: the latest checkpoint's trainer_state.json
    when it reads and reaches as far as the log (`choose_curve`), else the log's curve. Never
    raises: a checkpoint half-written by a crash falls back to the log."""
    path = latest_trainer_state(output_dir)
    if path is None:
        return log_curve
    try:
        state = curve_from_trainer_state(path)
    except UserError:
        return log_curve
    return choose_curve(log_curve, state)
