"""Derive a stage recipe (validate on the 10% sample, or the full run) from a recipe and the
corpus manifest, and the command that launches it.

Pure except `load_recipe` and `find_manifest`, which read files. The derived config is the
recipe with the changes listed in `StagePlan.changes`, each with its reason, so the report can
show exactly what ran."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..check.findings import schedules_no_evaluation
from ..errors import UserError
from ..files import yaml_error_line
from ..planning.catalog import Hardware, parse_hardware
from ..recipe.registry import read_header
from .preference_health import PREFERENCE_METHODS, preference_loss_terms

STAGES = ("validate", "full")
EVALS_PER_VALIDATION = 20     # evaluations over a validation run: enough points to judge the eval curve
LOSS_POINTS = 30              # logged train losses a run should have at least (each the mean over logging_steps)


@dataclass
class Recipe:
    path: Path
    text: str
    config: dict
    header: dict

    @property
    def hash(self) -> str:
        """sha256 of the recipe's configuration (canonical JSON of the parsed YAML): comments and
        formatting do not change it, any value does."""
        canonical = json.dumps(self.config, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def name(self) -> str:
        return self.path.stem

    def hardware(self) -> Hardware | None:
        label = self.header.get("hardware")
        return parse_hardware(label, allow_cpu=True) if label else None

    def health_overrides(self) -> dict:
        """`# llamaforge-health: final_train_loss_max=2.0, plateau_steps=100` -> dict of floats/ints."""
        text = self.header.get("health", "")
        out: dict = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise UserError(f"{self.path}: malformed `llamaforge-health` entry {part!r}; write key=value")
            try:
                num = float(value)
            except ValueError:
                raise UserError(f"{self.path}: `llamaforge-health` {key.strip()}={value!r} is not a number") from None
            out[key.strip()] = int(num) if num.is_integer() and "." not in value else num
        return out

    @property
    def gate_profile(self) -> str:
        return self.header.get("gates", "release")

    def gate_profile_for(self, stage: str) -> str:
        """The gate profile a stage runs: `llamaforge-validate-gates` (default `validate`, the
        training guide's checks after the 10% run) or `llamaforge-gates` (default `release`)."""
        return self.header.get("validate-gates", "validate") if stage == "validate" else self.gate_profile

    @property
    def persona(self) -> str | None:
        return self.header.get("persona")

    @property
    def validation_evals(self) -> int:
        """Evaluations the validation run makes at least: `# llamaforge-validate-evals: N`, else
        EVALS_PER_VALIDATION (a short CPU run sets fewer: each evaluation costs a pass over the eval split)."""
        text = self.header.get("validate-evals")
        if text is None:
            return EVALS_PER_VALIDATION
        if not text.isdigit() or int(text) < 2:
            raise UserError(f"{self.path}: `llamaforge-validate-evals: {text}` must be a whole number >= 2")
        return int(text)


def load_recipe(path: str | Path) -> Recipe:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"recipe {p} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"recipe {p}: cannot read it ({exc})") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"recipe {p}: {yaml_error_line(exc)}") from None
    if not isinstance(config, dict):
        raise UserError(f"recipe {p}: an Axolotl recipe is a YAML mapping")
    if not config.get("datasets"):
        raise UserError(f"recipe {p}: has no `datasets:`; a staged run needs the corpus it trains on")
    rl = config.get("rl")
    if rl and str(rl).lower() not in PREFERENCE_METHODS:
        raise UserError(
            f"recipe {p}: `rl: {rl}` — staged runs judge supervised fine-tunes and preference runs "
            f"({', '.join(PREFERENCE_METHODS)}) by the metrics their trainers log; launch this one with the "
            "command in its header"
        )
    if rl:
        try:
            preference_loss_terms(config)
        except UserError as exc:
            raise UserError(f"recipe {p}: {exc}") from None
    return Recipe(p, text, config, read_header(text))


def find_manifest(recipe: Recipe, corpus: str | Path | None) -> Path:
    """The corpus manifest a run consumes: --corpus, else manifest.json beside the recipe's first
    dataset file."""
    if corpus is not None:
        p = Path(corpus)
        return p / "manifest.json" if p.is_dir() or not p.suffix else p
    first = recipe.config["datasets"][0]
    ds_path = first.get("path") if isinstance(first, dict) else None
    if not isinstance(ds_path, str):
        raise UserError(f"recipe {recipe.path}: datasets[0] has no path; pass --corpus")
    return Path(ds_path).parent / "manifest.json"


@dataclass
class CorpusFiles:
    """Absolute paths of a built corpus's outputs, from its manifest."""

    dir: Path
    train: list[Path]          # one file, or one per curriculum phase in order
    eval: Path
    sample: list[Path]         # likewise for the validation sample
    sample_rows: int | None
    train_rows: int | None
    persona: str | None


def corpus_files(manifest: dict) -> CorpusFiles:
    base = Path(manifest["dir"])
    files = manifest["files"]

    def need(role: str) -> dict:
        if role not in files:
            raise UserError(f"corpus {base}: the manifest has no `{role}` file; rebuild the corpus")
        return files[role]

    phases = [p for p in (manifest.get("phases") or []) if isinstance(p, dict)]
    train_phases = [base / p["path"] for p in phases if p.get("path")]
    sample_phases = [base / p["sample_path"] for p in phases if p.get("sample_path")]
    if len(train_phases) < 2:
        train_phases = []
    if len(sample_phases) < 2:
        sample_phases = []
    persona = manifest.get("persona") or {}
    return CorpusFiles(
        dir=base,
        train=train_phases or [base / need("train")["path"]],
        eval=base / need("eval")["path"],
        sample=sample_phases or [base / need("sample")["path"]],
        sample_rows=need("sample").get("rows"),
        train_rows=need("train").get("rows"),
        persona=persona.get("name") if isinstance(persona, dict) else None,
    )


@dataclass
class StagePlan:
    stage: str
    name: str
    run_dir: Path
    stage_dir: Path
    output_dir: Path
    recipe: Recipe
    manifest_path: Path
    manifest_hash: str
    config: dict
    changes: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    launcher: str = "accelerate"          # accelerate | torchrun-cpu | slurm
    resume_from: str | None = None

    @property
    def stage_recipe_path(self) -> Path:
        return self.stage_dir / "stage.yaml"

    @property
    def log_path(self) -> Path:
        return self.stage_dir / "train.log"

    def command_line(self) -> str:
        return " ".join(shlex.quote(c) for c in self.command)


def _dataset_entry(template: dict, path: Path) -> dict:
    entry = copy.deepcopy(template)
    entry["path"] = str(path)
    entry.pop("data_files", None)
    entry.pop("split", None)
    return entry


def _estimated_steps(rows: int | None, config: dict, world_size: int) -> int | None:
    if not rows:
        return None
    per_step = int(config.get("micro_batch_size", 1)) * int(config.get("gradient_accumulation_steps", 1)) * world_size
    epochs = float(config.get("num_epochs", 1))
    return max(1, math.ceil(rows / per_step * epochs))


def derive_stage_config(
    recipe: Recipe,
    stage: str,
    corpus: CorpusFiles,
    output_dir: Path,
    *,
    world_size: int = 1,
    resume_from: str | None = None,
    prepared_key: str | None = None,
) -> tuple[dict, list[str]]:
    """The stage's Axolotl config and the list of changes made to the recipe, with reasons.
    `prepared_key` names the exact corpus (and tokenizer) the run consumes: see `prepared_dataset_key`."""
    if stage not in STAGES:
        raise UserError(f"unknown stage {stage!r}; use validate or full")
    cfg = copy.deepcopy(recipe.config)
    changes: list[str] = []
    template = cfg["datasets"][0] if isinstance(cfg["datasets"][0], dict) else {"type": "chat_template"}
    files = corpus.sample if stage == "validate" else corpus.train
    cfg["datasets"] = [_dataset_entry(template, p) for p in files]
    what = "the validation sample" if stage == "validate" else "the train split"
    rows = corpus.sample_rows if stage == "validate" else corpus.train_rows
    if len(files) > 1:
        changes.append(f"datasets -> {what} as {len(files)} curriculum phase files in order "
                       f"({', '.join(p.name for p in files)}; {rows} rows)")
        # what Axolotl 0.19 needs to keep the order (tests/corpus/test_corpus_axolotl.py)
        cfg["shuffle_merged_datasets"] = False
        cfg["curriculum_sampling"] = True
        if cfg.get("sample_packing"):
            cfg["sample_packing_sequentially"] = True
        changes.append("shuffle_merged_datasets: false, curriculum_sampling: true"
                       + (", sample_packing_sequentially: true" if cfg.get("sample_packing") else "")
                       + " (keep the phases in order; with num_epochs > 1 every epoch repeats the phases in order)")
    else:
        changes.append(f"datasets -> {what} {files[0].name} ({rows} rows"
                       + (", stratified by category)" if stage == "validate" else ")"))
        for key in ("shuffle_merged_datasets", "curriculum_sampling", "sample_packing_sequentially"):
            cfg.pop(key, None)
    eval_template = (cfg.get("test_datasets") or [template])[0]
    cfg["test_datasets"] = [_dataset_entry(eval_template, corpus.eval)]
    cfg.pop("val_set_size", None)
    changes.append(f"test_datasets -> the held-out eval split {corpus.eval.name}")

    cfg["output_dir"] = str(output_dir)
    changes.append(f"output_dir -> {output_dir}")
    if prepared_key:
        base = Path(str(cfg.get("dataset_prepared_path") or "build/prepared"))
        cfg["dataset_prepared_path"] = str(base / f"corpus-{prepared_key}")
        changes.append(f"dataset_prepared_path -> {cfg['dataset_prepared_path']} (Axolotl keys its tokenized cache on "
                       "dataset paths and the tokenizer's name, not their contents: a corpus rebuilt at the same "
                       "path would otherwise train on the old tokens)")

    if cfg.get("excess_length_strategy") not in ("drop", "truncate", "raise"):
        cfg["excess_length_strategy"] = "drop"
        changes.append("excess_length_strategy: drop, set explicitly (Axolotl drops over-length rows silently; "
                       "`corpus build` reports how many)")

    rows = corpus.sample_rows if stage == "validate" else corpus.train_rows
    steps = _estimated_steps(rows, cfg, world_size)
    if stage == "validate":
        cfg["save_first_step"] = True
        changes.append("save_first_step: true (prove a checkpoint saves before spending the run)")
        epochs = max(1, math.ceil(float(cfg.get("num_epochs", 1))))
        wanted = recipe.validation_evals
        evals = max(int(cfg.get("evals_per_epoch") or 0), math.ceil(wanted / epochs))
        if evals != cfg.get("evals_per_epoch") or "eval_steps" in cfg:
            cfg["evals_per_epoch"] = evals
            cfg.pop("eval_steps", None)
            changes.append(f"evals_per_epoch: {evals} (at least {wanted} evaluations over the run, "
                           "enough to judge the curve)")
    if schedules_no_evaluation(cfg):
        epochs = float(cfg.get("num_epochs", 1))
        asked, evals = cfg["evals_per_epoch"], math.floor(1 / epochs) + 1
        cfg["evals_per_epoch"] = evals
        changes.append(f"evals_per_epoch: {evals} (evals_per_epoch: {asked} with num_epochs: {epochs:g} makes Axolotl "
                       "schedule no evaluation at all, and the health checks need one; `llamaforge check` says so)")
    if steps is not None:
        logging = max(1, min(int(cfg.get("logging_steps") or 10), steps // LOSS_POINTS))
        if logging != cfg.get("logging_steps"):
            cfg["logging_steps"] = logging
            changes.append(f"logging_steps: {logging} (~{steps} optimizer steps expected; at least ~{LOSS_POINTS} loss points)")
    if resume_from:
        cfg["resume_from_checkpoint"] = resume_from
        changes.append(f"resume_from_checkpoint: {resume_from}")
    return cfg, changes


def prepared_dataset_key(manifest_hash: str, base_model: str | None) -> str:
    """A short key for Axolotl's prepared-dataset folder that changes whenever the corpus (its
    manifest hash) or a local tokenizer (its files' bytes) changes."""
    h = hashlib.sha256(manifest_hash.encode())
    if base_model and Path(base_model).is_dir():
        for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
            f = Path(base_model) / name
            if f.is_file():
                h.update(name.encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def last_checkpoint(output_dir: Path) -> Path | None:
    best, best_step = None, -1
    if output_dir.is_dir():
        for p in output_dir.iterdir():
            m = re.fullmatch(r"checkpoint-(\d+)", p.name)
            if m and p.is_dir() and int(m.group(1)) > best_step:
                best, best_step = p, int(m.group(1))
    return best


def accelerate_config_of(recipe: Recipe) -> str | None:
    m = re.search(r"--config_file (\S+)", recipe.text)
    return m.group(1) if m else None


def launch_command(recipe: Recipe, stage_recipe: Path, hardware: Hardware | None) -> tuple[list[str], str, dict[str, str]]:
    """(argv, launcher kind, extra environment) that launch `stage_recipe` the way the recipe's
    header says it is launched."""
    env = {"AXOLOTL_DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}
    py_bin = str(Path(sys.executable).parent)
    if hardware is not None and hardware.gpu.id == "cpu":
        if hardware.world_size > 1:
            env["DS_ACCELERATOR"] = "cpu"
            return ([str(Path(py_bin) / "torchrun"), "--nproc_per_node", str(hardware.world_size),
                     "-m", "llamaforge.run.cpu_distributed", "axolotl.cli.train", str(stage_recipe)],
                    "torchrun-cpu", env)
        return ([str(Path(py_bin) / "accelerate"), "launch", "--cpu", "--num_processes", "1",
                 "-m", "axolotl.cli.train", str(stage_recipe)], "accelerate", env)
    argv = [str(Path(py_bin) / "accelerate"), "launch"]
    if hardware is not None and hardware.world_size > 1:
        cfg = accelerate_config_of(recipe)
        if cfg:
            argv += ["--config_file", cfg]
        else:
            argv += ["--multi_gpu", "--num_processes", str(hardware.world_size)]
    argv += ["-m", "axolotl.cli.train", str(stage_recipe)]
    kind = "slurm" if hardware is not None and hardware.nodes > 1 else "accelerate"
    return argv, kind, env
