"""Render Axolotl recipes, DeepSpeed JSON, accelerate configs and SLURM scripts from the jinja2
templates in templates/, and the committed matrix (templates/matrix.yaml) into recipes/.

Pure up to `write_files` / `compare_with_disk`: planning and rendering return `RenderedFile`s
(a relative path and its text); only those two functions touch the disk."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path, PurePosixPath

import yaml

from ..planning.catalog import CPU_DEVICE, Hardware, ModelSpec, get_model, parse_hardware
from ..errors import LINE_BREAKS, UserError
from ..paths import recipes_dir, repo_root, templates_dir
from ..planning.train_setup import ALL_LINEAR, TrainSetup, estimate_cli_args

MATRIX_FILE = "matrix.yaml"
SFT_TEMPLATE = "axolotl/sft.yaml.j2"
DEEPSPEED_TEMPLATE = "deepspeed/zero.json.j2"
ACCELERATE_TEMPLATE = "accelerate/multi_gpu.yaml.j2"
SLURM_TEMPLATE = "slurm/multinode.sbatch.j2"
# Rendered into recipes/deepspeed/ whether or not a matrix recipe uses them: the set a user
# reaches for when adapting a recipe by hand (Axolotl's own deepspeed_configs/ offer the same).
STANDARD_DEEPSPEED = ((1, "none"), (2, "none"), (3, "none"), (3, "all"))
DECODER_LAYER_CLASS = {"llama": "LlamaDecoderLayer", "qwen3": "Qwen3DecoderLayer"}
METHOD_NAMES = {"full": "full fine-tune", "lora": "LoRA", "qlora": "QLoRA"}


# ---- the YAML-safe filters ------------------------------------------------------------------



def yaml_value(value) -> str:
    """A YAML scalar or flow collection that parses back to exactly `value`: plain when that is
    unambiguous, JSON (a subset of YAML flow syntax) otherwise. Names and paths therefore cannot
    start a new key, a comment or a document."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mant, exp = text.split("e")
            text = f"{mant}.0e{exp}"  # YAML 1.1 (PyYAML) reads 1e-05 as a string
        return text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_value(str(k))}: {yaml_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if text and not LINE_BREAKS.search(text) and "#" not in text and ": " not in text:
        try:
            if yaml.safe_load(f"k: {text}") == {"k": text}:
                return text
        except yaml.YAMLError:
            pass
    return json.dumps(text, ensure_ascii=True)


def dump_yaml(data, *, sort_keys: bool = False) -> str:
    """YAML text (block style, readable Unicode) that loads back to exactly `data`. PyYAML writes
    NEL (U+0085) raw when it allows Unicode, and a loader folds it into a space: data holding one is
    written with escapes instead."""
    text = yaml.safe_dump(data, sort_keys=sort_keys, allow_unicode=True, width=100)
    if "\x85" in text:
        text = yaml.safe_dump(data, sort_keys=sort_keys, allow_unicode=False, width=100)
    return text


def comment_text(value) -> str:
    """Text safe inside a `#` comment: every YAML line break (\\n, \\r, NEL, LS, PS) and control
    character becomes a space, so a comment can never end early and start a key."""
    return LINE_BREAKS.sub(" ", str(value))


@lru_cache(maxsize=1)
def jinja_environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    env.filters["y"] = yaml_value
    env.filters["c"] = comment_text
    env.filters["sh"] = lambda v: shlex.quote(str(v))
    return env


def render_template(template: str, /, **context) -> str:
    import jinja2

    try:
        text = jinja_environment().get_template(template).render(**context)
    except jinja2.UndefinedError as exc:  # a template/context mismatch is a bug, say which
        raise RuntimeError(f"template {template}: {exc}") from exc
    return text if text.endswith("\n") else text + "\n"


# ---- requests and hyperparameters -----------------------------------------------------------


@dataclass(frozen=True)
class Hyperparameters:
    epochs: float = 3
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora_dropout: float = 0.05
    logging_steps: int = 10
    evals_per_epoch: int = 4
    saves_per_epoch: int = 4
    save_total_limit: int = 5
    seed: int = 42
    # LoRA on the top N decoder layers only (None: every layer). The backward pass then stops at the
    # lowest adapted layer: on SmolLM2-135M's 30 layers, the top 10 train a step ~3x faster on a CPU
    # (docs/runs.md, "The demo on SmolLM2-135M").
    lora_top_layers: int | None = None
    # Batches of rows of similar length (HF Trainer's LengthGroupedSampler) instead of random ones:
    # without sample packing, random batches of the demo corpus pad to 1.53x its tokens, grouped
    # ones to 1.08x (docs/runs.md); the order within an epoch is less random.
    group_by_length: bool = False

    @classmethod
    def from_mapping(cls, data: dict, where: str) -> Hyperparameters:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{where}: unknown hyperparameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)


@dataclass(frozen=True)
class RecipeRequest:
    """One recipe to render: a matrix entry, or `llamaforge render --model … --gpus …`."""

    model: str
    gpus: str
    nodes: int = 1
    method: str | None = None
    seq_len: int = 2048
    global_batch: int | None = None
    lora_r: int = 16
    lora_alpha: int | None = None
    corpus: str = "leviathan"
    # the curriculum phases the corpus's train.jsonl holds in order (None: those of datasets/<corpus>.yaml);
    # with two or more the recipe keeps that order under stock Axolotl (`_curriculum_context`)
    phases: tuple[str, ...] | None = None
    # Hyperparameter layers, applied in order when they apply to the chosen method:
    # (("common", {...}), ("lora", {...}), ("entry", {...})). Resolved after planning, because
    # the planner may choose the method.
    hyper_layers: tuple[tuple[str, dict], ...] = ()

    def hyperparameters(self, method: str) -> Hyperparameters:
        merged: dict = {}
        for scope, mapping in self.hyper_layers:
            if scope in ("common", method, "entry"):
                merged.update(mapping)
        return Hyperparameters.from_mapping(merged, f"hyperparameters for {self.model} {method}")

    @property
    def hardware(self) -> Hardware:
        return parse_hardware(self.gpus, nodes=self.nodes)

    @property
    def spec(self) -> ModelSpec:
        return get_model(self.model)


@dataclass(frozen=True)
class Layout:
    """Where files go and how recipes refer to each other. `root` is the folder every path in a
    recipe is relative to (the launch directory): the repository for the committed matrix."""

    recipe_dir_for_model: bool = True        # recipes/<model>/<name>.yaml vs DIR/<name>.yaml
    base: str = "recipes"                    # prefix of every written path, as a recipe sees it
    launch_from_root: bool = True

    def recipe_path(self, model_id: str, name: str) -> str:
        parts = [self.base, model_id, f"{name}.yaml"] if self.recipe_dir_for_model else [self.base, f"{name}.yaml"]
        return _not_an_option(str(PurePosixPath(*[p for p in parts if p])))

    def asset_path(self, kind: str, filename: str) -> str:
        return _not_an_option(str(PurePosixPath(*[p for p in (self.base, kind, filename) if p])))


def _not_an_option(path: str) -> str:
    """A relative path that starts with '-' gets './', so no launcher takes it for an option."""
    return f"./{path}" if path.startswith("-") else path


@dataclass(frozen=True)
class RenderedFile:
    path: str          # relative, POSIX
    content: str


@dataclass
class RenderedRecipe:
    request: RecipeRequest
    plan: object       # plan.Plan
    name: str
    recipe_path: str
    files: list[RenderedFile]
    launch: list[str]
    deepspeed_path: str | None
    accelerate_path: str | None
    stage: str = "sft"   # sft | dpo: what the recipe trains (the index shows it with the method)

    def summary(self) -> dict:
        est = self.plan.estimate
        s = self.plan.setup
        na = est is None
        return {
            "recipe": self.recipe_path,
            "model": s.model.id,
            "method": s.method,
            "stage": self.stage,
            "hardware": s.hardware.label,
            "parallel": s.parallel,
            "offload": s.offload,
            "seq_len": s.seq_len,
            "micro_batch": s.micro_batch,
            "grad_accum": s.grad_accum,
            "global_batch": s.global_batch,
            "peak_gpu_gib": None if na else round(est.peak_gpu_gib, 1),
            "usable_gpu_gib": None if na else round(est.usable_gpu_gib, 1),
            "host_ram_gib": None if na else round(est.host_ram_gib, 1),
            "tokens_per_s": None if na else round(est.tokens_per_s),
            "deepspeed": self.deepspeed_path,
            "accelerate": self.accelerate_path,
            "launch": self.launch,
        }


# ---- naming ---------------------------------------------------------------------------------


def recipe_name(method: str, hardware: Hardware) -> str:
    """`<method>-<N>x<GPU>[-<nodes>nodes]`, the file-name convention of recipes/."""
    return f"{method}-{hardware.label}"


def deepspeed_filename(stage: int, offload: str) -> str:
    if stage == 3:
        suffix = {"none": "", "optimizer": "_cpuoffload_optimizer", "params": "_cpuoffload_params", "all": "_cpuoffload_all"}[offload]
        return f"zero3{suffix}.json"
    if offload == "optimizer":
        return f"zero{stage}_cpuoffload_optimizer.json"
    if offload != "none":
        raise UserError(f"ZeRO-{stage} cannot offload parameters (only ZeRO-3 can)")
    return f"zero{stage}.json"


def accelerate_filename(hardware: Hardware) -> str:
    node = "node" if hardware.nodes == 1 else "nodes"
    return f"{hardware.nodes}{node}-{hardware.gpus_per_node}gpu.yaml"


def model_display_name(spec: ModelSpec) -> str:
    m = re.fullmatch(r"([a-z]+)-?([\d.]+)?-(\d+b)", spec.id)
    if not m:
        return spec.id
    family, version, size = m.groups()
    family = {"llama": "Llama", "qwen": "Qwen"}.get(family, family.capitalize())
    version = f" {version}" if version else ""
    if spec.id.startswith("qwen3"):
        return f"Qwen3 {size.upper()}"
    return f"{family}{version} {size.upper()}"


def _params_text(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else (f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k")


# ---- one recipe -----------------------------------------------------------------------------


def plan_request(req: RecipeRequest):
    from ..planning.plan import plan

    return plan(
        req.spec, req.hardware, method=req.method, seq_len=req.seq_len,
        global_batch=req.global_batch, lora_r=req.lora_r,
    )


def _apply_lora_alpha(p, req: RecipeRequest):
    if req.lora_alpha is not None and p.setup.is_adapter:
        p.setup = p.setup.with_(lora_alpha=req.lora_alpha)
    return p


def _method_line(s: TrainSetup) -> str:
    if s.method == "full":
        return f"full fine-tune: all {_params_text(s.model.parameter_count())} parameters train, bf16 mixed precision, {s.optimizer}"
    targets = "all linear layers (q,k,v,o,gate,up,down)" if tuple(s.lora_targets) == ALL_LINEAR else ", ".join(s.lora_targets)
    share = 100.0 * s.lora_param_count() / s.model.parameter_count()
    base = "QLoRA: NF4 4-bit base (double quantization, bf16 compute); " if s.method == "qlora" else "LoRA on a bf16 base; "
    return f"{base}r={s.lora_r}, alpha={s.alpha} on {targets}: {_params_text(s.lora_param_count())} trainable ({share:.2f}%)"


def _parallel_line(s: TrainSetup, deepspeed_path: str | None) -> str:
    offload = {"none": "", "optimizer": ", optimizer states offloaded to CPU",
               "params": ", parameters offloaded to CPU", "all": ", parameters and optimizer offloaded to CPU"}[s.offload]
    if s.parallel == "single":
        return "one GPU, no sharding" + offload
    if s.parallel == "ddp":
        return f"DDP over {s.world_size} GPUs (each holds the whole model)" + offload
    if s.parallel == "fsdp" and s.fsdp_version == 1:
        return f"FSDP1 full shard over {s.world_size} GPUs, sharded quantized loading" + offload
    if s.parallel == "fsdp":
        return f"FSDP2 full shard over {s.world_size} GPUs" + offload
    return f"DeepSpeed ZeRO-{s.deepspeed_stage} over {s.world_size} GPUs ({deepspeed_path})" + offload


def _launch_lines(recipe_path: str, hardware: Hardware, accelerate_path: str | None, sbatch_path: str | None, cpu: bool) -> list[str]:
    if cpu and hardware.world_size == 1:
        return [f"accelerate launch --cpu --num_processes 1 -m axolotl.cli.train {shlex.quote(recipe_path)}"]
    if cpu:
        # accelerate mis-counts DeepSpeed ranks on CUDA-less hosts; see llamaforge/run/cpu_distributed.py
        return [f"torchrun --nproc_per_node {hardware.world_size} -m llamaforge.run.cpu_distributed "
                f"axolotl.cli.train {shlex.quote(recipe_path)}"]
    if hardware.world_size == 1:
        return [f"accelerate launch -m axolotl.cli.train {shlex.quote(recipe_path)}"]
    cfg = shlex.quote(accelerate_path or "")
    if hardware.nodes == 1:
        return [f"accelerate launch --config_file {cfg} -m axolotl.cli.train {shlex.quote(recipe_path)}"]
    return [
        f"sbatch {shlex.quote(sbatch_path or '')}",
        f"or on each node i = 0..{hardware.nodes - 1}: accelerate launch --config_file {cfg} "
        f"--machine_rank i --main_process_ip NODE0_ADDRESS -m axolotl.cli.train {shlex.quote(recipe_path)}",
    ]


def _fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def corpus_phases(corpus: str) -> tuple[str, ...]:
    """The curriculum phases of the corpus spec datasets/<corpus>.yaml, in order; () when the spec is
    not in the repository or has no phases."""
    from ..corpus.spec import load_spec
    from ..paths import datasets_dir

    path = datasets_dir() / f"{corpus}.yaml"
    if not path.is_file():
        return ()
    return tuple(p.name for p in load_spec(path).phases)


def render_recipe(
    req: RecipeRequest,
    layout: Layout = Layout(),
    *,
    regenerate: str | None = None,
    plan_obj=None,
    base_model: str | None = None,
    train_files: list[str] | None = None,
    eval_file: str | None = None,
    output_dir: str | None = None,
    name: str | None = None,
    extra_header: dict[str, str] | None = None,
    template: str = SFT_TEMPLATE,
    template_context: dict | None = None,
    estimator=None,
    stage: str = "sft",
) -> RenderedRecipe:
    """Plan (unless `plan_obj` is given) and render one recipe with the assets it needs. CPU
    hardware (`cpu`, `2xcpu`: the demo and tests) gets no GPU estimate and a CPU launch line.
    `extra_header` adds `# llamaforge-<key>: <value>` lines (e.g. health thresholds, gate profile).
    Another stage's recipe (DPO: llamaforge.recipe.dpo) passes its `template`, the values only it
    uses (`template_context`) and its `estimator` (same signature as estimate.estimate)."""
    from ..planning.estimate import estimate

    price = estimator or estimate

    p = _apply_lora_alpha(plan_obj if plan_obj is not None else plan_request(req), req)
    s: TrainSetup = p.setup
    hw = s.hardware
    cpu = hw.gpu.id == CPU_DEVICE.id
    hyper = req.hyperparameters(s.method)
    name = name or recipe_name(s.method, hw)
    recipe_path = layout.recipe_path(s.model.id, name)
    files: list[RenderedFile] = []

    deepspeed_path = None
    if s.deepspeed_stage:
        ds_name = deepspeed_filename(s.deepspeed_stage, s.offload)
        deepspeed_path = layout.asset_path("deepspeed", ds_name)
        files.append(render_deepspeed(deepspeed_path, s.deepspeed_stage, s.offload))
    accelerate_path = None
    if hw.world_size > 1 and not cpu:
        accelerate_path = layout.asset_path("accelerate", accelerate_filename(hw))
        files.append(render_accelerate(accelerate_path, hw))
    sbatch_path = None
    if hw.nodes > 1:
        sbatch_path = str(PurePosixPath(recipe_path).with_suffix(".sbatch"))

    est = p.estimate
    est_context = None
    if est is not None:
        per_billion = price(s, tokens=1_000_000_000, epochs=1.0)
        est_context = {
            "peak_gpu_gib": f"{est.peak_gpu_gib:.1f}",
            "usable_gpu_gib": f"{est.usable_gpu_gib:.1f}",
            "host_ram_gib": f"{est.host_ram_gib:.0f}",
            "tokens_per_s": _fmt_int(est.tokens_per_s),
            "mfu_pct": f"{100 * est.mfu:.0f}",
            "cost_line": f"1B training tokens take ~{per_billion.hours:,.1f} h, ~${per_billion.cost_usd:,.0f} at ${hw.usd_per_hour:,.2f}/h",
            "tight_note": f"; {est.verdict_text()}" if est.verdict != "fits" else "",
            # the one command that reproduces this header's memory and throughput lines (tests assert it)
            "command": " ".join(shlex.quote(a) for a in estimate_cli_args(s, stage=stage)),
        }
    corpus_dir = f"build/corpus/{req.corpus}"
    model_repo = base_model or s.model.instruct_repo or s.model.hf_repo or s.model.id
    context = {
        "title": f"{model_display_name(s.model)}: {METHOD_NAMES[s.method]} on {hw}",
        "template_name": f"templates/{template}",
        "regenerate": regenerate or f"llamaforge render --only {s.model.id}/{name}",
        "name": name,
        "model": {
            "id": s.model.id,
            "base_model": model_repo,
            "params_b": _params_text(s.model.parameter_count()),
            "gated": s.model.gated,
            "chat_template": s.model.chat_template,
            "pad_token": s.model.pad_token,
        },
        "method_line": _method_line(s),
        "hardware_line": (f"{hw.world_size} x {hw.gpu.name}" + (f" across {hw.nodes} nodes" if hw.nodes > 1 else "")) if not cpu
        else f"CPU, {hw.world_size} process{'es' if hw.world_size > 1 else ''} (demo and tests; no GPU)",
        "hardware_label": hw.label,
        "parallel_line": _parallel_line(s, deepspeed_path),
        "est": est_context,
        "extra_header": dict(extra_header or {}),
        "stage": stage,
        "setup": s,
        "reasons": list(p.reasons),
        "launch": _launch_lines(recipe_path, hw, accelerate_path, sbatch_path, cpu),
        "launch_from_root": layout.launch_from_root,
        "recipe_path": recipe_path,
        "all_linear": tuple(s.lora_targets) == ALL_LINEAR,
        "hp": hyper,
        "datasets": train_files or [f"{corpus_dir}/train.jsonl"],
        "eval_dataset": eval_file or f"{corpus_dir}/eval.jsonl",
        **_curriculum_context(req, train_files),
        "prepared_path": "build/prepared",
        "output_dir": output_dir or f"outputs/{s.model.id}/{name}",
        "cpu": cpu,
        "tf32": float(hw.gpu.compute_capability) >= 8.0,
        "process_word": "process" if hw.world_size == 1 else "processes",
        "deepspeed_path": deepspeed_path,
        "fsdp": None if s.parallel != "fsdp" else {
            "offload_params": s.offload in ("params", "all"),
            "cpu_ram_efficient_loading": s.method != "qlora",
            "layer_cls": DECODER_LAYER_CLASS.get(s.model.family, "LlamaDecoderLayer"),
        },
    }
    context.update(template_context or {})
    files.insert(0, RenderedFile(recipe_path, render_template(template, **context)))
    if sbatch_path:
        files.append(RenderedFile(sbatch_path, render_template(
            SLURM_TEMPLATE,
            title=context["title"], template_name=f"templates/{SLURM_TEMPLATE}", sbatch_path=sbatch_path,
            job_name=re.sub(r"[^A-Za-z0-9._-]+", "-", f"{s.model.id}-{name}"), nodes=hw.nodes, gpus_per_node=hw.gpus_per_node,
            cpus_per_task=max(8, 8 * hw.gpus_per_node), time_limit="3-00:00:00",
            accelerate_path=accelerate_path, recipe_path=recipe_path,
        )))
    return RenderedRecipe(req, p, name, recipe_path, files, context["launch"], deepspeed_path, accelerate_path, stage)


def _curriculum_context(req: RecipeRequest, train_files: list[str] | None) -> dict:
    """Whether the recipe must keep its rows in file order, and the comment saying why: several phase
    files in order, or one train.jsonl holding the corpus's phases in order."""
    if train_files and len(train_files) > 1:
        return {"curriculum": True, "curriculum_note": "phases are consumed in the order listed above"}
    phases = () if train_files else req.phases if req.phases is not None else corpus_phases(req.corpus)
    if len(phases) < 2:
        return {"curriculum": False, "curriculum_note": ""}
    return {"curriculum": True,
            "curriculum_note": f"train.jsonl holds the phases in order ({', '.join(phases)}); keep that order"}


def render_deepspeed(path: str, stage: int, offload: str) -> RenderedFile:
    return RenderedFile(path, render_template(
        DEEPSPEED_TEMPLATE, stage=stage,
        offload_optimizer=offload in ("optimizer", "all"),
        offload_param=offload in ("params", "all"),
    ))


def render_accelerate(path: str, hardware: Hardware) -> RenderedFile:
    return RenderedFile(path, render_template(
        ACCELERATE_TEMPLATE, template_name=f"templates/{ACCELERATE_TEMPLATE}", path=path,
        nodes=hardware.nodes, gpus_per_node=hardware.gpus_per_node,
    ))


# ---- the matrix ------------------------------------------------------------------------------


@dataclass
class Matrix:
    corpus: str
    requests: list[RecipeRequest]
    hyper_layers: tuple[tuple[str, dict], ...] = ()
    preference: list = field(default_factory=list)     # preference.DpoRequest: DPO after an SFT recipe
    specialists: list[str] = field(default_factory=list)  # specialists specs (datasets/*.yaml), repo-relative
    serving: list = field(default_factory=list)        # committed serving plans (llamaforge.recipe.serve_plans)
    mlx: list = field(default_factory=list)            # MLX-LM configs for Apple Silicon (llamaforge.recipe.mlx)


def load_matrix(path: Path | None = None) -> Matrix:
    path = Path(path) if path else templates_dir() / MATRIX_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read the matrix ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: malformed YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("recipes"), list):
        raise UserError(f"{path}: a matrix is a mapping with a `recipes:` list")
    corpus = str(data.get("corpus", "leviathan"))
    layers = hyperparameter_layers(data.get("hyperparameters"), path.name)
    sections = ("corpus", "hyperparameters", "recipes", "preference", "specialists", "serving", "mlx")
    unknown_sections = sorted(set(data) - set(sections))
    if unknown_sections:
        raise UserError(f"{path.name}: unknown key(s) {', '.join(unknown_sections)}; known: {', '.join(sections)}")
    for section in ("serving", "mlx"):
        if not isinstance(data.get(section) or [], list):
            raise UserError(f"{path.name}: `{section}` must be a list of entries")
    requests = []
    allowed = {"model", "gpus", "nodes", "method", "seq_len", "global_batch", "lora_r", "lora_alpha", "hyperparameters"}
    for i, entry in enumerate(data["recipes"]):
        where = f"{path.name} recipes[{i}]"
        if not isinstance(entry, dict) or "model" not in entry or "gpus" not in entry:
            raise UserError(f"{where}: each recipe needs `model` and `gpus`")
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        entry_hp = entry.get("hyperparameters") or {}
        if not isinstance(entry_hp, dict):
            raise UserError(f"{where}: `hyperparameters` must be a mapping")
        req = RecipeRequest(
            model=str(entry["model"]), gpus=str(entry["gpus"]), nodes=int(entry.get("nodes", 1)),
            method=entry.get("method"), seq_len=int(entry.get("seq_len", 2048)),
            global_batch=entry.get("global_batch"), lora_r=int(entry.get("lora_r", 16)),
            lora_alpha=entry.get("lora_alpha"), corpus=corpus,
            hyper_layers=layers + (("entry", dict(entry_hp)),),
        )
        req.hyperparameters(req.method or "lora")  # unknown keys fail here, naming the entry
        requests.append(req)
    specialists = data.get("specialists") or []
    if not isinstance(specialists, list) or not all(isinstance(x, str) for x in specialists):
        raise UserError(f"{path.name}: `specialists` must be a list of specialists specs (e.g. datasets/specialists.yaml)")
    preference = data.get("preference")
    if preference is not None:
        from .dpo import dpo_requests

        by_id = {f"{r.model}/{recipe_name(r.method, r.hardware)}": r for r in requests if r.method}
        preference = dpo_requests(preference, by_id, layers, path.name)
    return Matrix(corpus=corpus, requests=requests, hyper_layers=layers, preference=preference or [],
                  specialists=list(specialists), serving=list(data.get("serving") or []), mlx=list(data.get("mlx") or []))


def hyperparameter_layers(section, where: str) -> tuple[tuple[str, dict], ...]:
    if section is None:
        return ()
    if not isinstance(section, dict):
        raise UserError(f"{where}: `hyperparameters` must be a mapping of common/full/lora/qlora")
    unknown = sorted(set(section) - {"common", "full", "lora", "qlora"})
    if unknown:
        raise UserError(f"{where}: unknown hyperparameter group(s) {', '.join(unknown)}; use common, full, lora, qlora")
    return tuple((scope, dict(section[scope] or {})) for scope in ("common", "full", "lora", "qlora") if scope in section)


def _dedupe(files: list[RenderedFile]) -> list[RenderedFile]:
    by_path: dict[str, RenderedFile] = {}
    for f in files:
        prev = by_path.get(f.path)
        if prev is not None and prev.content != f.content:
            raise RuntimeError(f"two different renderings of {f.path}")
        by_path[f.path] = f
    return [by_path[p] for p in sorted(by_path)]


def render_matrix(matrix: Matrix | None = None, *, only: str | None = None) -> tuple[list[RenderedFile], list[RenderedRecipe]]:
    """Every file of recipes/ (recipes, their assets, the standard DeepSpeed set and the index).
    `only` = `<model>/<name>` renders just that recipe and its assets."""
    matrix = matrix or load_matrix()
    recipes: list[RenderedRecipe] = []
    for req in matrix.requests:
        recipes.append(render_recipe(req))
    extra_files: list[RenderedFile] = []
    if matrix.preference:
        from .dpo import render_dpo_recipe

        recipes += [render_dpo_recipe(d) for d in matrix.preference]
    for spec_path in matrix.specialists:
        from .specialists import load_specialists, render_specialists

        sset, shared = load_specialists(repo_root() / spec_path)
        set_files, set_recipes = render_specialists(sset, shared, layers=matrix.hyper_layers)
        recipes += set_recipes
        extra_files += [f for f in set_files if not any(f is g for r in set_recipes for g in r.files)]
    extra_index: dict = {}
    if matrix.serving and only is None:
        from .serve_plans import render_serving_plans

        serving_files = render_serving_plans(matrix.serving, recipes)
        extra_files += serving_files
        extra_index["serving_rows"] = [f"`{PurePosixPath(f.path).relative_to('recipes')}`" for f in serving_files]
    if matrix.mlx and only is None:
        from .mlx import index_row, render_mlx_recipes

        mlx_files = render_mlx_recipes(matrix.mlx, matrix)
        extra_files += mlx_files
        extra_index["mlx_rows"] = [index_row(f) for f in mlx_files]
    names = [f"{r.plan.setup.model.id}/{r.name}" for r in recipes]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise UserError(f"matrix renders the same recipe twice: {', '.join(sorted(dupes))}")
    if only is not None:
        chosen = [r for r, n in zip(recipes, names) if n == only.removesuffix(".yaml")]
        if not chosen:
            raise UserError(f"no matrix recipe {only!r}; use one of {', '.join(names)}")
        return _dedupe([f for r in chosen for f in r.files]), chosen
    files = [f for r in recipes for f in r.files] + extra_files
    for stage, offload in STANDARD_DEEPSPEED:
        files.append(render_deepspeed(f"recipes/deepspeed/{deepspeed_filename(stage, offload)}", stage, offload))
    files.append(RenderedFile("recipes/README.md", render_index(recipes, **extra_index)))
    return _dedupe(files), recipes


def render_index(recipes: list[RenderedRecipe], *, mlx_rows=(), serving_rows=()) -> str:
    rows = []
    for r in sorted(recipes, key=lambda r: (r.plan.setup.model.parameter_count(), r.plan.setup.hardware.usd_per_hour)):
        s = r.summary()
        par = s["parallel"] if s["offload"] == "none" else f"{s['parallel']} + offload {s['offload']}"
        method = s["method"] if r.stage == "sft" else f"{r.stage} ({s['method']})"
        rows.append(
            f"| [{r.plan.setup.model.id}/{r.name}.yaml]({PurePosixPath(r.recipe_path).relative_to('recipes')}) "
            f"| {method} | {s['hardware']} | {par} | {s['seq_len']} | {s['global_batch']} "
            f"| {s['peak_gpu_gib']:.1f} / {s['usable_gpu_gib']:.1f} | {s['host_ram_gib']:.0f} | {s['tokens_per_s']:,} |"
        )
    return render_template("recipes_index.md.j2", rows=rows, count=len(recipes), mlx_rows=list(mlx_rows),
                           serving_rows=list(serving_rows))


# ---- disk ------------------------------------------------------------------------------------


def write_files(files: list[RenderedFile], root: Path) -> list[Path]:
    """Write each file atomically (temp file in the same folder, then rename), after proving each
    one parses (parse_problem): nothing is written when one does not."""
    from ..atomic import write_text_atomic

    check_files_parse(files)
    return [write_text_atomic(Path(root) / f.path, f.content, mode=0o755 if f.path.endswith((".sbatch", ".sh")) else 0o644)
            for f in files]


def parse_problem(f: RenderedFile) -> str | None:
    """Why a rendered file does not parse as what its name says (None when it does): YAML must
    load, JSON must load, a shell script must pass `bash -n`. Markdown is not checked."""
    name = f.path.rsplit("/", 1)[-1]
    try:
        if name.endswith((".yaml", ".yml")):
            yaml.safe_load(f.content)
        elif name.endswith(".json"):
            json.loads(f.content)
    except (yaml.YAMLError, ValueError) as exc:
        return " ".join(str(exc).split())
    if name.endswith((".sh", ".sbatch")):
        import shutil
        import subprocess

        bash = shutil.which("bash")
        if bash is None:
            return None
        proc = subprocess.run([bash, "-n"], input=f.content, capture_output=True, text=True)
        if proc.returncode != 0:
            return " ".join(proc.stderr.split()) or f"bash -n exited {proc.returncode}"
    return None


def check_files_parse(files: list[RenderedFile]) -> None:
    """UserError naming the first rendered file that does not parse (a value the filters let through)."""
    for f in files:
        problem = parse_problem(f)
        if problem:
            raise UserError(f"{f.path}: the rendered file does not parse ({problem}); a value in its spec or matrix "
                            "cannot be written there: change it")


def overwrites(files: list[RenderedFile], root: Path) -> list[str]:
    """The rendered files that would replace an existing, different file under `root`."""
    out = []
    for f in files:
        target = Path(root) / f.path
        if target.exists() and (not target.is_file() or target.read_text(encoding="utf-8", errors="replace") != f.content):
            out.append(f.path)
    return out


def prune_extra(drift: Drift, root: Path | None = None) -> list[str]:
    """Remove the files under recipes/ that the matrix does not produce (Drift.extra); return them."""
    root = Path(root) if root else repo_root()
    for rel in drift.extra:
        (root / rel).unlink(missing_ok=True)
    for folder in sorted({(root / rel).parent for rel in drift.extra}, key=lambda p: -len(p.parts)):
        if folder.is_dir() and not any(folder.iterdir()) and folder != root / "recipes":
            folder.rmdir()
    return list(drift.extra)


@dataclass
class Drift:
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    unparsable: list[str] = field(default_factory=list)    # rendered files that do not parse (path (why))

    @property
    def clean(self) -> bool:
        return not (self.changed or self.missing or self.extra or self.unparsable)

    def to_dict(self) -> dict:
        return {"clean": self.clean, "changed": self.changed, "missing": self.missing, "extra": self.extra,
                "unparsable": self.unparsable}


def compare_with_disk(files: list[RenderedFile], root: Path | None = None, *, scope: str | None = "recipes") -> Drift:
    """What differs between the rendered files and the committed tree, and the rendered files that
    do not parse. Files under `scope` that were not rendered are `extra` (scope None: not looked for,
    e.g. when only one recipe was rendered)."""
    root = Path(root) if root else repo_root()
    drift = Drift()
    expected = {f.path for f in files}
    for f in files:
        target = root / f.path
        if not target.is_file():
            drift.missing.append(f.path)
        elif target.read_text(encoding="utf-8") != f.content:
            drift.changed.append(f.path)
    for f in files:
        problem = parse_problem(f)
        if problem:
            drift.unparsable.append(f"{f.path} ({problem})")
    scope_dir = root / scope if scope else None
    if scope_dir is not None and scope_dir.is_dir():
        for p in sorted(scope_dir.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                rel = p.relative_to(root).as_posix()
                if rel not in expected:
                    drift.extra.append(rel)
    return drift


__all__ = [
    "Hyperparameters", "Layout", "Matrix", "RecipeRequest", "RenderedFile", "RenderedRecipe", "Drift",
    "yaml_value", "comment_text", "dump_yaml", "render_recipe", "render_matrix", "load_matrix", "write_files",
    "compare_with_disk", "prune_extra", "overwrites", "check_files_parse", "recipe_name", "deepspeed_filename",
    "accelerate_filename", "recipes_dir",
]
