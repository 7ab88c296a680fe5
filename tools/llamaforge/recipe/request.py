"""What a recipe is asked for and what rendering returns: the request types (RecipeRequest,
Hyperparameters, Layout), the rendered files (RenderedFile, RenderedRecipe), and the names of recipes and of
their DeepSpeed and accelerate files. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import PurePosixPath

from ..errors import UserError
from ..planning.catalog import Hardware, ModelSpec, get_model, parse_hardware

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
