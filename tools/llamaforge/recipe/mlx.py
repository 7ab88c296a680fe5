"""MLX-LM configs for the Mac path, rendered from templates/matrix.yaml `mlx:` into
recipes/<model>/mlx-<method>-1x<Mac>.yaml: the file `mlx_lm.lora --config` reads, with a header that
states the plan (mlx_estimate.plan_mlx), the honest time, how to prepare the corpus builder's output
for MLX-LM, the conversion (`mlx_lm.convert -q`) QLoRA needs, and the launch.

Pure: entries in, RenderedFile out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..check.findings import CheckReport, Finding
from ..corpus.spec import SpecReader
from ..errors import UserError
from ..files import yaml_error_line
from ..planning.catalog import get_model, parse_apple_machine
from ..planning.mlx_estimate import MlxPlan, MlxSetup, estimate_mlx, mlx_facts, plan_mlx
from ..planning.plan import default_global_batch
from ..planning.train_setup import ALL_LINEAR, ATTN_LINEAR
from .registry import read_header
from .request import Hyperparameters, RenderedFile, model_display_name
from .templating import render_template

TEMPLATE = "mlx/lora.yaml.j2"
WHERE = "templates/matrix.yaml mlx"


@dataclass(frozen=True)
class MlxEntry:
    model: str
    machine: str                         # 1x<Mac>, e.g. 1xM3Ultra-512GB
    method: str | None = None            # lora | qlora (None: the plan's choice)
    bits: int | None = None              # qlora: 4 or 8 (None: the plan's choice)
    seq_len: int = 2048
    lora_r: int = 16
    lora_alpha: int | None = None
    rows: int = 3000                     # the corpus the iterations and the time assume (seed 004: 3,000 examples)
    tokens_per_row: int = 750            # seed 004: "3000 examples (~1.5-3M tokens total)"
    hyperparameters: dict = field(default_factory=dict)


def mlx_entries(items: list) -> list[MlxEntry]:
    out = []
    for i, item in enumerate(items):
        r = SpecReader(item, f"mlx[{i}]", "templates/matrix.yaml")
        entry = MlxEntry(model=r.get("model", str, required=True), machine=r.get("machine", str, required=True),
                         method=r.get("method", str), bits=r.get("bits", int), seq_len=r.get("seq_len", int, 2048),
                         lora_r=r.get("lora_r", int, 16), lora_alpha=r.get("lora_alpha", int),
                         rows=r.get("rows", int, 3000), tokens_per_row=r.get("tokens_per_row", int, 750),
                         hyperparameters=dict(r.get("hyperparameters", dict, {})))
        r.finish()
        if entry.rows < 1 or entry.tokens_per_row < 1:
            r.fail("rows", "rows and tokens_per_row must be 1 or more")
        out.append(entry)
    return out


def hyperparameters(layers: tuple, method: str, entry: dict) -> Hyperparameters:
    merged: dict = {}
    for scope, mapping in tuple(layers) + (("entry", entry),):
        if scope in ("common", method, "entry"):
            merged.update(mapping)
    return Hyperparameters.from_mapping(merged, f"{WHERE} hyperparameters ({method})")


def recipe_name(plan: MlxPlan) -> str:
    return f"mlx-{plan.setup.method}-{plan.setup.machine.label}"


def _keys(targets: tuple[str, ...]) -> list[str]:
    return [f"{'self_attn' if t in ATTN_LINEAR else 'mlp'}.{t}" for t in targets]


def render_mlx_recipe(entry: MlxEntry, *, corpus: str, layers: tuple = (), base_model: str | None = None,
                      base: str = "recipes", iters: int | None = None, plan: MlxPlan | None = None) -> RenderedFile:
    """One MLX-LM config. `base_model` replaces the Hub id (a local model: the slow test's tiny one),
    `iters` the iterations the corpus size gives (the slow test's short run)."""
    model = get_model(entry.model)
    machine = parse_apple_machine(entry.machine)
    f = mlx_facts()
    tokens = entry.rows * entry.tokens_per_row
    if plan is None:
        try:
            plan = plan_mlx(model, machine, method=entry.method, bits=entry.bits, seq_len=entry.seq_len,
                            lora_rank=entry.lora_r, tokens_per_row=entry.tokens_per_row, tokens=tokens,
                            epochs=float(hyperparameters(layers, entry.method or "lora", entry.hyperparameters).epochs))
        except UserError as exc:
            raise UserError(f"{WHERE}: {exc}") from None
    s, est = plan.setup, plan.estimate
    hp = hyperparameters(layers, s.method, entry.hyperparameters)
    name = recipe_name(plan)
    recipe_path = f"{base}/{model.id}/{name}.yaml"
    hf_model = base_model or model.instruct_repo or model.hf_repo or model.id
    if s.method == "qlora":
        model_path = f"mlx_models/{model.id}-{s.bits}bit"
        convert = (f"mlx_lm.convert --hf-path {hf_model} -q --q-bits {s.bits} --q-group-size "
                   f"{f['quantization']['group_size']} --mlx-path {model_path}")
    else:
        model_path, convert = hf_model, None
    batch = s.batch_size
    accumulation = max(1, default_global_batch(model) // batch)
    iters = iters or math.ceil(hp.epochs * entry.rows / batch)
    updates = max(1, iters // accumulation)
    warmup = math.ceil(hp.warmup_ratio * updates)
    per_epoch = max(1, math.ceil(entry.rows / batch))
    hours = est.hours
    time_line = (f"{entry.rows:,} rows x ~{entry.tokens_per_row:,} tokens x {hp.epochs:g} epochs = "
                 f"{tokens * hp.epochs:,.0f} tokens take ~{hours:,.0f} h" if hours is not None else "")
    method_line = (f"{s.method_label}; LoRA r={s.lora_rank}, scale {(entry.lora_alpha or 2 * s.lora_rank) / s.lora_rank:g} "
                   f"on all linear layers of all {s.trained_layers} layers: {s.lora_params() / 1e6:,.1f}M trainable")
    # the one command that reproduces the memory and throughput lines (tests/recipe/test_recipe_headers_reproduce.py)
    command = ["llamaforge", "estimate", "--gpus", machine.label, "--model", model.id, "--method", s.method]
    if s.method == "qlora":
        command += ["--bits", str(s.bits)]
    command += ["--seq-len", str(s.seq_len), "--lora-r", str(s.lora_rank), "--tokens-per-row", str(entry.tokens_per_row),
                "--tokens", str(tokens), "--epochs", f"{hp.epochs:g}"]
    text = render_template(
        TEMPLATE, title=f"{model_display_name(model)}: {s.method_label} with MLX-LM on {machine.label}",
        estimate_command=" ".join(command),
        hf_model=hf_model, params_b=f"{model.parameter_count() / 1e9:.1f}B", gated=model.gated and not base_model,
        method_line=method_line, machine=machine, est=est, time_line=time_line, setup=s, accumulation=accumulation,
        iters=iters, epochs=f"{hp.epochs:g}", rows=entry.rows, reasons=plan.reasons, corpus=corpus,
        corpus_spec=f"datasets/{corpus}.yaml", data_dir=f"build/mlx/{corpus}", convert=convert,
        recipe_path=recipe_path, model_path=model_path, adapter_path=f"outputs/{model.id}/{name}",
        fused_path=f"outputs/{model.id}/{name}-fused", model_id=model.id,
        scale=float((entry.lora_alpha or 2 * s.lora_rank) / s.lora_rank), dropout=float(hp.lora_dropout),
        keys=_keys(ALL_LINEAR), learning_rate=float(hp.learning_rate), warmup=warmup,
        schedule_arguments=[float(hp.learning_rate), max(1, updates - warmup), 0.0], seed=hp.seed,
        val_batches=f["defaults"]["val_batches"], steps_per_report=hp.logging_steps,
        steps_per_eval=max(1, per_epoch // max(1, hp.evals_per_epoch)),
        save_every=max(1, per_epoch // max(1, hp.saves_per_epoch)),
    )
    return RenderedFile(recipe_path, text)


def index_row(f: RenderedFile) -> str:
    """The recipes index's row of one MLX-LM config, read back from its header."""
    import re
    from pathlib import PurePosixPath

    h = read_header(f.content)
    mem = re.search(r"^# Memory:\s+~(\d+) GiB peak of (\d+) GiB", f.content, re.M)
    took = re.search(r"take ~([\d,]+) h", f.content)
    rel = PurePosixPath(f.path).relative_to("recipes")
    return (f"| [{rel.parent}/{rel.stem}.yaml]({rel}) | {h['method']} | {h['hardware']} | {mem.group(1)} / {mem.group(2)} "
            f"| {h['tokens_per_s']:,} | ~{took.group(1) if took else '?'} h |")


def is_mlx_config(path) -> bool:
    """True for a config whose header says MLX-LM trains it (`# llamaforge-trainer: mlx-lm`)."""
    from pathlib import Path

    try:
        return read_header(Path(path).read_text(encoding="utf-8")).get("trainer") == "mlx-lm"
    except (OSError, UnicodeDecodeError):
        return False


def check_mlx_config(path):
    """`llamaforge check` for an MLX-LM config: keys mlx_lm.lora reads (it keeps unknown ones
    silently), the lora_parameters it requires, and memory on the header's Mac. A check.CheckReport."""
    import difflib
    import re
    from pathlib import Path

    import yaml

    f = mlx_facts()
    text = Path(path).read_text(encoding="utf-8")
    report = CheckReport(path=str(path))
    add = lambda sev, key, msg: report.findings.append(Finding(sev, key, msg))  # noqa: E731
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        add("error", "yaml", yaml_error_line(exc))
        return report
    if not isinstance(cfg, dict):
        add("error", "yaml", "an MLX-LM config is a mapping of keys")
        return report
    known = list(f["config_keys"])
    for key in cfg:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            add("error", str(key), f"`{key}` is not a key mlx_lm.lora reads, so it keeps it silently"
                + (f"; did you mean `{close[0]}`?" if close else ""))
    for key in ("model", "data"):
        if not cfg.get(key):
            add("error", key, f"`{key}` is required")
    lp = cfg.get("lora_parameters") or {}
    want = f["lora_parameter_keys"]
    for key in want["required"]:
        if key not in lp:
            add("error", f"lora_parameters.{key}", f"mlx-lm needs lora_parameters.{key} (it stops with a KeyError)")
    for key in lp:
        if key not in want["required"] + want["optional"]:
            add("error", f"lora_parameters.{key}", f"`{key}` is not a LoRA parameter mlx-lm reads ({', '.join(want['required'] + want['optional'])})")
    header = read_header(text)
    if not (header.get("model") and header.get("hardware")) or report.errors:
        add("info", "memory", "memory not checked: the header names no model and Mac, or the config has errors")
        return report
    try:
        bits = int(m.group(1)) if (m := re.search(r"(\d+)bit", str(cfg["model"]))) else 4
        s = MlxSetup(model=get_model(header["model"]), machine=parse_apple_machine(header["hardware"]),
                     method=header.get("method", "lora"), bits=bits if header.get("method") == "qlora" else 16,
                     lora_rank=int(lp["rank"]), lora_layers=int(cfg.get("num_layers", 16)),
                     batch_size=int(cfg.get("batch_size", 4)), seq_len=int(cfg.get("max_seq_length", 2048)),
                     grad_checkpoint=bool(cfg.get("grad_checkpoint", False)))
    except (UserError, ValueError, TypeError, KeyError) as exc:
        add("error", "memory", f"cannot price it: {exc}")
        return report
    est = estimate_mlx(s)
    add("info" if est.fits else "error", "memory",
        f"~{est.peak_gib:,.0f} GiB peak of the {est.usable_gib:,.0f} GiB the GPU of {s.machine.label} may use "
        f"({s.method_label}, batch {s.batch_size} x {s.seq_len}{', grad_checkpoint' if s.grad_checkpoint else ''})")
    return report


def render_mlx_recipes(items: list, matrix) -> list[RenderedFile]:
    return [render_mlx_recipe(e, corpus=matrix.corpus, layers=matrix.hyper_layers) for e in mlx_entries(items)]


__all__ = ["MlxEntry", "mlx_entries", "render_mlx_recipe", "render_mlx_recipes", "recipe_name", "index_row",
           "is_mlx_config", "check_mlx_config"]
