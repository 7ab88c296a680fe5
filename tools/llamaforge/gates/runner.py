"""`run_gates`: evaluate a model (or a base model plus a PEFT adapter) on a gate profile with
lm-eval's Python API and the HF backend, decide every gate, and write results.json, report.md and
the per-sample answers.

Flow: profile -> check the inputs (model folder, adapter for this base, task names) -> load each
task once (a task that cannot load or whose data is not available fails its gates, it does not
stop the run) -> evaluate the gated model, then the base model, each loaded once, one
`lm_eval.simple_evaluate` call per task -> verdicts (pure, verdict.py) -> files.

lm_eval, torch, transformers and datasets are imported inside the functions (heavy)."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..checkpoint import final_output_problem, lora_shape_mismatch, read_safetensors_shapes
from ..errors import UserError, exception_line
from ..files import check_folder_to_write, write_text_atomic
from ..libraries import quiet_optional_kernels
from ..paths import evals_dir
from ..planning.catalog import model_from_hf_config
from .code_execution import CODE_EVAL_ENV, sandbox_launcher
from .identity import DEFAULT_PERSONA, validate_persona
from .profiles import GateProfile, get_gate_profile
from .report import write_report_files
from .verdict import (
    CODE_EXECUTION_NOT_ALLOWED,
    EVAL_FAILED,
    LOAD_FAILED,
    MEASURED,
    UNAVAILABLE,
    GateReport,
    TaskOutcome,
    answers_unchanged,
    decide_gate,
    with_failure,
)

IDENTITY_TASK = "identity"
# Generation batch on a CPU: measured on SmolLM2-135M, 2 cores, 48 new tokens per answer:
# batch 1 ~10 tokens/s, 8 ~50, 16 ~69, 32 ~78 (docs/gates.md); 32 also holds a 20-prompt task in one
# batch instead of 16 + 4. Greedy answers of a batch can differ from batch-1 answers by padding
# effects; base and tuned model run with the same batch (and base answers are cached per batch size).
CPU_BATCH_SIZE = 32
GATED, BASE = "model", "base"  # the two variants a report can hold
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Marks of "the data could not be had" in an exception chain (offline, not cached, not on the Hub).
_UNAVAILABLE_TYPES = {
    "ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError", "DatasetNotFoundError",
    "EntryNotFoundError", "RepositoryNotFoundError", "HfHubHTTPError", "Timeout", "ReadTimeout",
    "ConnectTimeout", "MaxRetryError", "NameResolutionError", "FileNotFoundError",
}
_UNAVAILABLE_WORDS = ("offline", "couldn't reach", "could not reach", "not available", "connection", "no such file",
                      "doesn't exist on the hub", "not found on the hugging face hub", "cannot find the requested files")


# --- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    ref: str  # what the user gave
    local: bool
    config: dict
    config_path: Path | None


def inspect_model(path: str, option: str = "--model") -> ModelInfo:
    """The model's config; a UserError when `path` is not a model folder (or a reachable Hub id)."""
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise UserError(f"{option} {path} is a file, not a model folder; give the folder with config.json and the weights")
        if (p / "adapter_config.json").is_file() and not (p / "config.json").is_file():
            raise UserError(f"{option} {path} is a PEFT adapter, not a model; pass it as --adapter and its base model as --model")
        if not (p / "config.json").is_file():
            raise UserError(f"{option} {path} is not a model folder (no config.json); give a Hugging Face model folder")
        try:
            config = json.loads((p / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{option} {path}: config.json is not readable JSON ({exc})") from None
        if not any(next(p.glob(pattern), None) for pattern in _WEIGHT_PATTERNS):
            raise UserError(f"{option} {path} has a config.json but no weights (*.safetensors or pytorch_model*.bin)")
        if (p / "model.safetensors").is_file() or (p / "model.safetensors.index.json").is_file():
            damage = _weights_problem(p, adapter=False)
            if damage:
                raise UserError(f"{option} {path}: the model does not load ({damage}); its files are damaged or incomplete")
        return ModelInfo(path, True, config if isinstance(config, dict) else {}, p / "config.json")
    if _HUB_ID.match(path):
        try:
            from huggingface_hub import hf_hub_download

            cfg_file = Path(hf_hub_download(path, "config.json"))
            return ModelInfo(path, False, json.loads(cfg_file.read_text(encoding="utf-8")), cfg_file)
        except Exception as exc:  # noqa: BLE001 - any failure means: not usable here
            first = exception_line(exc, 160)
            raise UserError(
                f"{option} {path}: no such folder, and not a Hugging Face model id that can be fetched here ({first}); "
                "give a local model folder"
            ) from None
    raise UserError(f"{option} {path}: no such folder; give a Hugging Face model folder (config.json + weights)")


def _same_ref(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a.rstrip("/") == b.rstrip("/")


def check_adapter(adapter: str, model: ModelInfo) -> list[str]:
    """Notes for the report; a UserError when `adapter` is not an adapter or was made for another base."""
    a = Path(adapter).expanduser()
    if a.exists() and not a.is_dir():
        raise UserError(f"--adapter {adapter} is a file, not a folder; give the folder with adapter_config.json")
    if not a.is_dir():
        raise UserError(f"--adapter {adapter}: no such folder; give the folder with adapter_config.json")
    if not (a / "adapter_config.json").is_file():
        if (a / "config.json").is_file():
            raise UserError(f"--adapter {adapter} is a full model, not a PEFT adapter; pass it as --model")
        raise UserError(f"--adapter {adapter} is not a PEFT adapter folder (no adapter_config.json)")
    try:
        acfg = json.loads((a / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"--adapter {adapter}: adapter_config.json is not readable JSON ({exc})") from None
    declared = str(acfg.get("base_model_name_or_path") or "")
    notes: list[str] = []
    weights = a / "adapter_model.safetensors"
    if not weights.is_file() and not (a / "adapter_model.bin").is_file():
        raise UserError(f"--adapter {adapter} has adapter_config.json but no weights (adapter_model.safetensors); "
                        "the run did not finish saving it")
    damage = _weights_problem(a, adapter=True) if weights.is_file() else None
    if damage:
        raise UserError(f"--adapter {adapter}: the adapter does not load ({damage}); its files are damaged or incomplete")
    try:
        spec = model_from_hf_config(model.config_path) if model.config_path else None
    except UserError:
        spec = None
    if weights.is_file() and spec is not None:
        problem = lora_shape_mismatch(read_safetensors_shapes(weights), spec.linear_shapes(), spec.num_layers)
        if problem:
            raise UserError(
                f"--adapter {adapter} was made for another base ({declared or 'unnamed'}), not --model {model.ref}: "
                f"{problem}; pass the adapter's base model as --model"
            )
        checked = "its LoRA shapes fit this model"
    else:
        checked = "its LoRA shapes could not be checked"
    if declared and not _same_ref(declared, model.ref):
        notes.append(f"the adapter names base {declared!r}, evaluated on --model {model.ref!r}; {checked}")
    return notes


def build_task_manager(tasks: list[str], persona: str, tasks_dir: Path):
    """A TaskManager that knows our tasks (and lm-eval's own, when the profile needs one); the
    persona goes to the tasks as metadata. Unknown task names are a UserError."""
    from lm_eval.tasks import TaskManager

    metadata = {"persona": persona}
    manager = TaskManager(include_path=str(tasks_dir), include_defaults=False, metadata=metadata)
    if not set(tasks) <= set(manager.all_tasks):
        manager = TaskManager(include_path=str(tasks_dir), include_defaults=True, metadata=metadata)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        import difflib

        hints = [f"{t!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(t, manager.all_tasks, n=1)) else "")
                 for t in unknown]
        raise UserError(f"unknown lm-eval task {', '.join(hints)} in the gate profile; ours are in {tasks_dir}")
    return manager


def classify_load_error(exc: BaseException) -> tuple[str, str]:
    """(status, reason) for an exception raised while loading a task: UNAVAILABLE when its data
    could not be had (offline, not cached, not on the Hub, a missing data package), else LOAD_FAILED."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    first_line = exception_line(exc, 300)
    for e in chain:
        names = {t.__name__ for t in type(e).__mro__}
        text = str(e).lower()
        if names & _UNAVAILABLE_TYPES or any(w in text for w in _UNAVAILABLE_WORDS):
            return UNAVAILABLE, f"dataset not available (offline and not cached?): {type(exc).__name__}: {first_line}"
    return LOAD_FAILED, f"task could not load: {type(exc).__name__}: {first_line}"


# --- evaluation ------------------------------------------------------------------------------


@dataclass
class VariantRun:
    outcomes: dict[str, TaskOutcome] = field(default_factory=dict)
    answers: dict[str, dict[str, str]] = field(default_factory=dict)  # task -> doc id -> answer
    samples: dict[str, list[dict]] = field(default_factory=dict)  # task -> slim sample records
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _code_execution_env(allowed: bool) -> Iterator[None]:
    """HF_ALLOW_CODE_EVAL=1 for the run when allowed; otherwise removed, so nothing executes."""
    before = os.environ.get(CODE_EVAL_ENV)
    if allowed:
        os.environ[CODE_EVAL_ENV] = "1"
    else:
        os.environ.pop(CODE_EVAL_ENV, None)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CODE_EVAL_ENV, None)
        else:
            os.environ[CODE_EVAL_ENV] = before


def _quiet_libraries() -> None:
    quiet_optional_kernels()
    for name in ("lm_eval", "lm-eval", "transformers", "datasets", "accelerate", "peft", "urllib3", "filelock"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass


def load_tasks(tasks: list[str], manager, allow_code_execution: bool) -> tuple[dict[str, Any], dict[str, TaskOutcome]]:
    """Each task loaded once: (loaded task objects, outcomes of the tasks that will not run)."""
    from lm_eval.tasks import get_task_dict

    loaded: dict[str, Any] = {}
    blocked: dict[str, TaskOutcome] = {}
    for name in tasks:
        try:
            with contextlib.redirect_stdout(sys.stderr):
                task_dict = get_task_dict([name], manager)
        except Exception as exc:  # noqa: BLE001 - a task that cannot load fails its gates, with the reason
            status, reason = classify_load_error(exc)
            blocked[name] = TaskOutcome(name, status, reason=reason)
            continue
        task = task_dict.get(name)
        if task is None or isinstance(task, dict):
            blocked[name] = TaskOutcome(name, LOAD_FAILED, reason=f"{name} is a group of tasks; gate a single task")
            continue
        if getattr(task, "UNSAFE_CODE", False) and not allow_code_execution:
            blocked[name] = TaskOutcome(
                name, CODE_EXECUTION_NOT_ALLOWED,
                reason="code execution not allowed: this task executes model-written code; pass --allow-code-execution "
                       f"(sets {CODE_EVAL_ENV}=1 and lm-eval's confirm_run_unsafe_code)",
            )
            continue
        loaded[name] = task
    return loaded, blocked


def _slim_sample(sample: dict) -> dict:
    args = sample.get("arguments")
    prompt = None
    if isinstance(args, dict) and args:
        first = next(iter(args.values()))
        prompt = first.get("arg_0") if isinstance(first, dict) else None
    elif isinstance(args, (list, tuple)) and args and isinstance(args[0], (list, tuple)):
        prompt = args[0][0]
    resps = sample.get("resps")
    answer = resps[0][0] if isinstance(resps, list) and resps and isinstance(resps[0], list) and resps[0] else resps
    doc = sample.get("doc") or {}
    return {
        "doc_id": sample.get("doc_id"),
        "id": doc.get("id", doc.get("task_id")),
        "input": prompt if isinstance(prompt, str) else None,
        "answer": answer,
        "filtered": sample.get("filtered_resps"),
        "metrics": {m: sample.get(m) for m in (sample.get("metrics") or [])},
    }


def load_adapter_lm(model_path: str, adapter: str, *, device: str, batch_size: int | str):
    """The base model with the PEFT adapter applied, wrapped in lm-eval's HF backend (HFLM).

    lm-eval's own `peft=` loader resizes the embedding to len(tokenizer) before applying the
    adapter; where the model has more embedding rows than the tokenizer has tokens (Qwen, and our
    tiny model) that SHRINKS the embedding and lm_head, so the "adapter" model differs from the
    base even with a no-op adapter (lm-eval issue #2748). Here the embedding only grows, for an
    adapter trained with added tokens. Returns (lm, note or None)."""
    from lm_eval.models.huggingface import HFLM
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok_path = adapter if (Path(adapter).expanduser() / "tokenizer_config.json").is_file() else model_path
    tokenizer = AutoTokenizer.from_pretrained(tok_path)
    cuda = device.startswith("cuda")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype="auto", device_map="auto" if cuda else None)
    rows = model.get_input_embeddings().weight.shape[0]
    note = None
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer))
    elif len(tokenizer) < rows:
        note = (f"adapter applied with PEFT directly: the model has {rows} embedding rows, the tokenizer {len(tokenizer)} "
                "tokens, and lm-eval's peft= loader would shrink the embedding (lm-eval issue #2748)")
    model = PeftModel.from_pretrained(model, adapter)
    if not cuda:
        model = model.to(device)
    model.eval()
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size), note


@dataclass(frozen=True)
class TaskRun:
    """How one task runs on every model of a gate run: chat template mode, examples, token cap."""

    chat_template: str = "auto"
    limit: int | None = None
    max_gen_toks: int | None = None

    @property
    def gen_kwargs(self) -> dict | None:
        return {"max_gen_toks": self.max_gen_toks} if self.max_gen_toks else None


def task_runs(profile: GateProfile, *, limit: int | None, max_gen_toks: int | None) -> dict[str, TaskRun]:
    """Each task's settings: its gates' chat_template, limit (the smaller of the gate's and --limit)
    and token cap (--max-gen-toks, else the gate's, else the profile's)."""
    runs = {}
    for task in profile.tasks():
        g = profile.task_settings(task)
        limits = [x for x in (limit, g.limit) if x is not None]
        runs[task] = TaskRun(g.chat_template, min(limits) if limits else None,
                             max_gen_toks or g.max_gen_toks or profile.max_gen_toks)
    return runs


class BaseAnswerCache:
    """The base model's outcomes and answers per task, kept in a folder, so that several gate runs
    against the same base (the validation, the full run, the merged model) evaluate it once. The
    key covers the model's files (config, tokenizer, weight sizes and times), every file under
    evals/tasks/, the persona, the task's settings, the device, the batch size and lm-eval's version:
    change any of them and the base is evaluated again."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @staticmethod
    def _model_fingerprint(model_path: str) -> str | None:
        import hashlib

        p = Path(model_path).expanduser()
        if not p.is_dir():
            return None   # a Hub id: not cached
        h = hashlib.sha256()
        for f in sorted(p.iterdir()):
            if not f.is_file():
                continue
            h.update(f.name.encode())
            if f.suffix in (".safetensors", ".bin"):
                st = f.stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            elif f.suffix in (".json", ".jinja", ".model", ".txt"):
                h.update(f.read_bytes())
        return h.hexdigest()

    @staticmethod
    def _tasks_fingerprint() -> str:
        import hashlib

        h = hashlib.sha256()
        root = evals_dir() / "tasks"
        for f in sorted(root.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(root)).encode())
                h.update(f.read_bytes())
        return h.hexdigest()

    def key(self, model_path: str, task: str, run: TaskRun, **settings) -> str | None:
        import hashlib
        from importlib.metadata import version

        model = self._model_fingerprint(model_path)
        if model is None:
            return None
        payload = json.dumps({"model": model, "tasks": self._tasks_fingerprint(), "task": task, "run": asdict(run),
                              "lm_eval": version("lm_eval"), **settings}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def get(self, key: str | None) -> tuple[TaskOutcome, list[dict]] | None:
        if key is None:
            return None
        try:
            data = json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
            return TaskOutcome(**{**data["outcome"], "seconds": None}), data["samples"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str | None, outcome: TaskOutcome, samples: list[dict]) -> None:
        if key is None or outcome.status != MEASURED:
            return
        write_text_atomic(self.folder / f"{key}.json",
                          json.dumps({"outcome": outcome.to_dict(), "samples": samples}, default=str) + "\n")


def _record(run: VariantRun, name: str, outcome: TaskOutcome, samples: list[dict]) -> None:
    run.outcomes[name] = outcome
    run.samples[name] = samples
    run.answers[name] = {str(s["id"] if s["id"] is not None else s["doc_id"]): s["answer"] for s in samples
                         if isinstance(s["answer"], str)}


def evaluate_variant(
    model_path: str,
    adapter: str | None,
    tasks: dict[str, Any],
    runs: dict[str, TaskRun],
    manager,
    *,
    device: str,
    batch_size: int | str,
    allow_code_execution: bool,
    persona: str = DEFAULT_PERSONA,
    cache: BaseAnswerCache | None = None,
) -> VariantRun:
    """Load the model once with lm-eval's HF backend (plus the adapter, see load_adapter_lm) and
    run each task with lm_eval.simple_evaluate. With a `cache` (base models only), tasks answered
    before under the same key are read from it, and the model is not loaded when all were."""
    import lm_eval
    from lm_eval.api.registry import get_model

    run = VariantRun()
    keys: dict[str, str | None] = {}
    if cache is not None and adapter is None:
        for name in list(tasks):
            keys[name] = cache.key(model_path, name, runs.get(name, TaskRun()), persona=persona, device=device,
                                   batch_size=batch_size, allow_code_execution=allow_code_execution)
            hit = cache.get(keys[name])
            if hit is not None:
                _record(run, name, hit[0], hit[1])
        tasks = {n: t for n, t in tasks.items() if n not in run.outcomes}
        if run.outcomes:
            run.notes.append(f"base answers of {', '.join(run.outcomes)} read from {cache.folder} (same model files, "
                             "tasks and settings)")
        if not tasks:
            return run
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if adapter:
                lm, note = load_adapter_lm(model_path, adapter, device=device, batch_size=batch_size)
                if note:
                    run.notes.append(note)
            else:
                lm = get_model("hf").create_from_arg_obj({"pretrained": model_path, "dtype": "auto"},
                                                         {"batch_size": batch_size, "device": device})
    except Exception as exc:  # noqa: BLE001 - the model failing to load fails every gate, with the reason
        reason = f"model could not load: {type(exc).__name__}: {exception_line(exc, 300)}"
        run.outcomes = {name: TaskOutcome(name, EVAL_FAILED, reason=reason) for name in tasks}
        return run
    has_template = bool(getattr(getattr(lm, "tokenizer", None), "chat_template", None))
    for name, task in tasks.items():
        settings = runs.get(name, TaskRun())
        mode = settings.chat_template
        chat = mode == "always" or (mode == "auto" and has_template)
        task_started = time.monotonic()
        try:
            with contextlib.redirect_stdout(sys.stderr):
                res = lm_eval.simple_evaluate(
                    model=lm, tasks=[task], limit=settings.limit, apply_chat_template=chat,
                    gen_kwargs=settings.gen_kwargs,
                    log_samples=True, confirm_run_unsafe_code=allow_code_execution, task_manager=manager,
                    bootstrap_iters=1000,
                )
        except Exception as exc:  # noqa: BLE001 - recorded as the gate's reason
            first = exception_line(exc, 300)
            run.outcomes[name] = TaskOutcome(name, EVAL_FAILED, reason=f"evaluation failed: {type(exc).__name__}: {first}",
                                             chat_template=chat)
            continue
        metrics = dict((res or {}).get("results", {}).get(name, {}))
        n = ((res or {}).get("n-samples", {}).get(name) or {}).get("effective")
        samples = [_slim_sample(s) for s in (res or {}).get("samples", {}).get(name, [])]
        outcome = TaskOutcome(name, MEASURED, metrics=metrics, n_samples=n, chat_template=chat,
                              seconds=round(time.monotonic() - task_started, 1))
        _record(run, name, outcome, samples)
        if cache is not None and adapter is None:
            cache.put(keys.get(name), outcome, samples)
    del lm
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
    return run


# --- the entry point -------------------------------------------------------------------------


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_DEVICE = re.compile(r"(cpu|mps|(cuda|xpu)(:\d+)?)")


def check_device(device: str) -> str:
    """A torch device lm-eval can use here: cpu, cuda, cuda:N, mps, xpu[:N], and available."""
    if not _DEVICE.fullmatch(device):
        raise UserError(f"--device {device!r}: give cpu, cuda, cuda:N or mps")
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda" and (not torch.cuda.is_available() or (index and int(index) >= torch.cuda.device_count())):
        raise UserError(f"--device {device}: no such CUDA device here ({torch.cuda.device_count()} visible); "
                        "use cpu or another index")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: Apple's MPS backend is not available here; use cpu")
    if kind == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise UserError(f"--device {device}: no Intel XPU here; use cpu")
    return device


def _weights_problem(folder: Path, *, adapter: bool) -> str | None:
    # the safetensors/JSON integrity check the run's health check uses (no torch needed)

    return final_output_problem(folder, adapter=adapter)


def default_output_dir(model: ModelInfo, adapter: str | None, profile: str) -> Path:
    if adapter:
        return Path(adapter).expanduser() / "eval" / profile
    if model.local:
        return Path(model.ref).expanduser() / "eval" / profile
    return Path.cwd() / "eval" / model.ref.replace("/", "--") / profile


def run_gates(
    model_path: str | os.PathLike,
    *,
    adapter: str | os.PathLike | None = None,
    profile: str = "demo",
    persona: str = DEFAULT_PERSONA,
    limit: int | None = None,
    allow_code_execution: bool = False,
    output_dir: str | os.PathLike | None = None,
    compare_base: bool = True,
    base_model: str | os.PathLike | None = None,
    device: str | None = None,
    batch_size: int | str | None = None,
    max_gen_toks: int | None = None,
    gates_file: str | os.PathLike | None = None,
    base_cache: str | os.PathLike | None = None,
) -> GateReport:
    """Evaluate `model_path` (plus `adapter`) on the gates of `profile` and write results.json,
    report.md and samples/ to `output_dir` (default: <adapter or model>/eval/<profile>/).

    The base model (`model_path` when an adapter is given, else `base_model`) is evaluated on the
    same tasks when `compare_base` (its values fill the table's base column and the gates'
    `compare` rules); with an adapter it is always evaluated on the identity prompts, and an
    adapter whose identity answers equal the base's fails the identity gate. `base_cache` (a
    folder) keeps the base's answers for later runs against the same base (BaseAnswerCache).
    Bad input (unknown profile or task, not a model, an adapter for another base) raises UserError."""
    started = time.time()
    model_ref, adapter_ref = str(model_path), (str(adapter) if adapter else None)
    gate_profile: GateProfile = get_gate_profile(profile, Path(gates_file) if gates_file else None)
    persona = validate_persona(persona)
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be a positive number of examples per task, not {limit}")
    if max_gen_toks is not None and max_gen_toks < 1:
        raise UserError(f"--max-gen-toks must be positive, not {max_gen_toks}")
    if base_model and adapter_ref:
        raise UserError("--base is for merged models; with --adapter the base model is --model")
    model = inspect_model(model_ref)
    notes = check_adapter(adapter_ref, model) if adapter_ref else []
    base_ref = str(base_model) if base_model else (model_ref if adapter_ref else None)
    if base_model:
        inspect_model(base_ref, "--base")
    out_dir = Path(output_dir).expanduser() if output_dir else default_output_dir(model, adapter_ref, gate_profile.name)
    check_folder_to_write(out_dir, "--output")
    if batch_size is not None and batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        raise UserError(f"--batch-size must be a positive number or auto, not {batch_size!r}")
    device = check_device(device) if device else _default_device()

    _quiet_libraries()
    tasks = gate_profile.tasks()
    manager = build_task_manager(tasks, persona, evals_dir() / "tasks")
    batch = batch_size if batch_size is not None else ("auto" if device.startswith("cuda") else CPU_BATCH_SIZE)
    runs = task_runs(gate_profile, limit=limit, max_gen_toks=max_gen_toks)
    common = dict(device=device, batch_size=batch, allow_code_execution=allow_code_execution, persona=persona)

    with _code_execution_env(allow_code_execution):
        loaded, blocked = load_tasks(tasks, manager, allow_code_execution)
        gated = evaluate_variant(model_ref, adapter_ref, loaded, runs, manager, **common) if loaded else VariantRun()
        notes += gated.notes
        gated.outcomes.update(blocked)
        base: VariantRun | None = None
        if base_ref:
            base_tasks = {t: o for t, o in loaded.items() if compare_base or (t == IDENTITY_TASK and adapter_ref)}
            if base_tasks:
                cache = BaseAnswerCache(Path(base_cache)) if base_cache else None
                base = evaluate_variant(base_ref, None, base_tasks, runs, manager, cache=cache, **common)
                notes += base.notes
                base.outcomes.update({t: o for t, o in blocked.items()})

    if not base_ref:
        no_base = "no base model to compare with (give --adapter, or --base for a merged model)"
    elif not compare_base:
        no_base = "base comparison turned off (compare_base=False / --no-base)"
    else:
        no_base = "base model not evaluated"
    gates = []
    for spec in gate_profile.gates:
        base_outcome = base.outcomes.get(spec.task) if (base and compare_base) else None
        gates.append(decide_gate(spec, gated.outcomes[spec.task], base_outcome, no_base_reason=no_base))

    if adapter_ref and IDENTITY_TASK in tasks:
        problem = adapter_effect_problem(gated, base)
        if problem:
            gates = [with_failure(g, problem) if g.task == IDENTITY_TASK else g for g in gates]
            notes.append(problem)

    from importlib.metadata import version

    report = GateReport(
        profile=gate_profile.name, model=model_ref, adapter=adapter_ref, base_model=base_ref, persona=persona,
        limit=limit, gates=gates, notes=notes, output_dir=str(out_dir),
        tasks={GATED: gated.outcomes, **({BASE: base.outcomes} if base else {})},
        settings={
            "device": device, "batch_size": batch, "compare_base": compare_base,
            "tasks": {t: asdict(r) for t, r in runs.items()},
            "allow_code_execution": allow_code_execution, "lm_eval": version("lm_eval"),
            "sandbox": _sandbox_description() if allow_code_execution else None,
            "seconds": round(time.time() - started, 1),
        },
    )
    write_report_files(report, out_dir, samples={GATED: gated.samples, **({BASE: base.samples} if base else {})})
    return report


def adapter_effect_problem(gated: VariantRun, base: VariantRun | None) -> str | None:
    """Why the adapter's effect is not shown on the identity prompts, or None when it changed answers."""
    if gated.outcomes.get(IDENTITY_TASK) is None or gated.outcomes[IDENTITY_TASK].status != MEASURED:
        return None  # the identity gate already fails with its own reason
    if base is None or base.outcomes.get(IDENTITY_TASK) is None or base.outcomes[IDENTITY_TASK].status != MEASURED:
        reason = base.outcomes[IDENTITY_TASK].reason if base and IDENTITY_TASK in base.outcomes else "not run"
        return f"the adapter's effect could not be checked: the base model's identity answers were not measured ({reason})"
    if answers_unchanged(gated.answers.get(IDENTITY_TASK, {}), base.answers.get(IDENTITY_TASK, {})):
        return "adapter had no effect / not applied: its answers to the identity prompts equal the base model's"
    return None


def _sandbox_description() -> str:
    return sandbox_launcher().description
