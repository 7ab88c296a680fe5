"""One SFT recipe: plan the request (planning.plan), price it (planning.estimate), and render the Axolotl
YAML with its DeepSpeed JSON, accelerate config and SLURM script from the jinja2 templates. Pure: returns
RenderedFiles. Another stage (recipe.dpo) reuses `render_recipe` with its own template."""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath

from ..corpus.spec import load_spec
from ..paths import datasets_dir
from ..planning.catalog import CPU_DEVICE, Hardware
from ..planning.estimate import estimate
from ..planning.plan import plan
from ..planning.train_setup import ALL_LINEAR, TrainSetup, estimate_cli_args
from .request import (
    Layout, RecipeRequest, RenderedFile, RenderedRecipe, _params_text, accelerate_filename, deepspeed_filename,
    model_display_name, recipe_name,
)
from .templating import render_template

SFT_TEMPLATE = "axolotl/sft.yaml.j2"
DEEPSPEED_TEMPLATE = "deepspeed/zero.json.j2"
ACCELERATE_TEMPLATE = "accelerate/multi_gpu.yaml.j2"
SLURM_TEMPLATE = "slurm/multinode.sbatch.j2"
DECODER_LAYER_CLASS = {"llama": "LlamaDecoderLayer", "qwen3": "Qwen3DecoderLayer"}
METHOD_NAMES = {"full": "full fine-tune", "lora": "LoRA", "qlora": "QLoRA"}


# ---- one recipe -----------------------------------------------------------------------------


def plan_request(req: RecipeRequest):
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
