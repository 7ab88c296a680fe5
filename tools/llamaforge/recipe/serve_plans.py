"""Serving plans committed with the recipes (templates/matrix.yaml `serving:`): for each entry, the
serving plan of a matrix recipe's merged model on the given hardware, written as the files that
serve it under recipes/<model>/<name>/ — an Ollama Modelfile and the script that starts Ollama with
the plan's settings, or a vLLM serve script. `llamaforge render --check` keeps them current; a plan
that says the server would not start fails the render.

Pure: entries in, RenderedFile out."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

import yaml

from ..corpus.spec import NAME_RE, SpecReader
from ..errors import Infeasible, UserError
from ..planning.catalog import get_model, is_apple_hardware, parse_apple_machine, parse_hardware
from ..planning.serve_plan import ServeRequest, plan_serving, plan_summary
from .request import RenderedFile
from .serving import ServeSpec, modelfile_text, serving_facts, vllm_script_text
from .templating import render_template

OLLAMA_SCRIPT_TEMPLATE = "serve/ollama_serve.sh.j2"
WHERE = "templates/matrix.yaml serving"


@dataclass(frozen=True)
class ServingEntry:
    name: str                   # the served model's name and the folder recipes/<model>/<name>/
    model: str
    after: str                  # the matrix recipe (<model>/<recipe>) whose merged model is served
    engine: str                 # ollama | vllm
    gpus: str
    context: int
    reserve_gib: float = 0.0
    weights: str | None = None
    kv_cache_dtype: str | None = None
    concurrency: int = 1
    note: str = ""

    def folder(self) -> str:
        return f"recipes/{self.model}/{self.name}"


def serving_entries(items: list) -> list[ServingEntry]:
    """Validate the matrix's `serving:` entries (pure)."""
    out = []
    for i, item in enumerate(items):
        r = SpecReader(item, f"serving[{i}]", "templates/matrix.yaml")
        entry = ServingEntry(
            name=r.get("name", str, required=True), model=r.get("model", str, required=True),
            after=r.get("after", str, required=True), engine=r.get("engine", str, "ollama"),
            gpus=r.get("gpus", str, required=True), context=r.get("context", int, 4096),
            reserve_gib=r.get("reserve_gib", float, 0.0), weights=r.get("weights", str),
            kv_cache_dtype=r.get("kv_cache_dtype", str), concurrency=r.get("concurrency", int, 1),
            note=r.get("note", str, ""))
        r.finish()
        if not NAME_RE.match(entry.name):
            r.fail("name", f"{entry.name!r} may hold only letters, digits, '.', '_' and '-' (it names a folder)")
        if entry.engine not in ("ollama", "vllm"):
            r.fail("engine", f"{entry.engine!r}: use ollama or vllm")
        out.append(entry)
    return out


def _plan(entry: ServingEntry):
    if is_apple_hardware(entry.gpus):
        device, count = parse_apple_machine(entry.gpus), 1
    else:
        hw = parse_hardware(entry.gpus)
        device, count = hw.gpu, hw.gpus_per_node
    req = ServeRequest(model=get_model(entry.model), device=device, count=count, engine=entry.engine,
                       context=entry.context, weights=entry.weights, kv_dtype=entry.kv_cache_dtype,
                       min_concurrency=entry.concurrency, reserve_gib=entry.reserve_gib, in_flight_only=True)
    try:
        return plan_serving(req)
    except Infeasible as exc:
        raise UserError(f"{WHERE} {entry.name}: {exc}") from None


def render_serving_plan(entry: ServingEntry, recipes_by_id: dict) -> list[RenderedFile]:
    """The files of one committed serving plan."""
    rec = recipes_by_id.get(entry.after)
    if rec is None:
        raise UserError(f"{WHERE} {entry.name}: after: {entry.after!r} is not a matrix recipe; use one of "
                        f"{', '.join(sorted(recipes_by_id))}")
    if rec.plan.setup.model.id != entry.model:
        raise UserError(f"{WHERE} {entry.name}: after: {entry.after} trains {rec.plan.setup.model.id}, not {entry.model}")
    cfg = yaml.safe_load(rec.files[0].content)
    folder = entry.folder()
    up = "/".join(".." for _ in PurePosixPath(folder).parts)
    merged = f"{up}/{cfg['output_dir']}/merged"
    plan = _plan(entry)
    model = get_model(entry.model)
    spec = ServeSpec(name=entry.name, run=f"{entry.after} (merged)", sequence_len=entry.context, system_prompt=None,
                     chat_template=model.chat_template, eos_token=None, model_folder=merged, base_ref=None)
    facts = serving_facts()
    origin = f"{WHERE} `{entry.name}`"
    lines = plan_summary(plan) + [f"why: {r}" for r in plan.reasons]
    merge = f"axolotl merge-lora {shlex.quote(rec.recipe_path)}   # writes {cfg['output_dir']}/merged"
    if entry.engine == "ollama":
        modelfile = modelfile_text(spec, facts, plan, generated_by=origin)
        fl = plan.estimate.flags
        env = {"OLLAMA_NUM_PARALLEL": str(fl["num_parallel"])}
        if fl["flash_attention"]:
            env.update({"OLLAMA_FLASH_ATTENTION": "1", "OLLAMA_KV_CACHE_TYPE": fl["kv_cache_type"]})
        script = render_template(
            OLLAMA_SCRIPT_TEMPLATE, entry=entry, origin=origin, lines=lines, env=env, merge=merge,
            modelfile=f"{folder}/Modelfile", script=f"{folder}/serve_ollama.sh", trained=rec.recipe_path,
            quantize=None if fl["quantization"] == "f16" else fl["quantization"], note=entry.note)
        return [RenderedFile(f"{folder}/Modelfile", modelfile), RenderedFile(f"{folder}/serve_ollama.sh", script)]
    script = vllm_script_text(spec, facts, plan, generated_by=origin, before=[merge])
    return [RenderedFile(f"{folder}/serve_vllm.sh", script)]


def render_serving_plans(items: list, recipes: list) -> list[RenderedFile]:
    by_id = {f"{r.plan.setup.model.id}/{r.name}": r for r in recipes}
    files = []
    for entry in serving_entries(items):
        files += render_serving_plan(entry, by_id)
    return files


__all__ = ["ServingEntry", "serving_entries", "render_serving_plan", "render_serving_plans"]
