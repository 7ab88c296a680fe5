"""Specialists: small LoRA adapters on one shared base, each trained on its own slice of a shared
corpus and served side by side by one vLLM server (seed 001: one 70B base, five specialists).

A specialists spec (datasets/specialists.yaml) names the base (model, GPUs, method, sequence
length), the shared corpus spec, and the specialists, each with the categories of the shared corpus
it trains on (and/or sources of its own) and its LoRA rank. `llamaforge render` turns it into,
under recipes/<model>/:

  <set>-<specialist>-<method>-<hw>.yaml   one recipe per specialist: the base's plan with its own rank and slice
  <set>/<specialist>.corpus.yaml          its slice: a corpus spec that `extends` the shared one and keeps only
                                          its categories (the corpus builder validates, dedups and counts every
                                          row; the others are counted as filtered `category`)
  <set>/serve_vllm.sh                     one vLLM server for the base and every adapter; a request picks a
                                          specialist by its model name

`specialists_from_dict` and everything that renders are pure; `load_specialists` reads the two
YAML files (the spec and the shared corpus spec it names)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from ..corpus.spec import NAME_RE, SpecReader, corpus_facts
from ..errors import Infeasible, UserError
from ..files import yaml_error_line
from ..paths import repo_root
from ..planning.catalog import get_model, parse_hardware
from ..planning.serve_estimate import engine_formats
from ..planning.serve_plan import ServeRequest, plan_serving, plan_summary, served_checkpoint, vllm_arguments
from .request import Layout, RecipeRequest, RenderedFile, RenderedRecipe, recipe_name
from .serving import serving_facts, vllm_max_lora_rank
from .sft import plan_request, render_recipe
from .templating import comment_text, dump_yaml, render_template

SERVE_TEMPLATE = "serve/vllm_specialists.sh.j2"
SPECIALIST_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9._/-]+$")
MAX_LORA_RANK = 512  # vLLM's largest --max-lora-rank (facts/export.yaml)


@dataclass(frozen=True)
class Specialist:
    name: str                         # the served model name, the adapter's name
    role: str                         # what it is for, one line
    categories: tuple[str, ...]       # categories of the shared corpus it trains on
    sources: tuple[dict, ...] = ()    # extra corpus-spec source entries of its own
    lora_r: int = 16
    lora_alpha: int | None = None


@dataclass(frozen=True)
class SpecialistBase:
    model: str
    gpus: str
    method: str = "lora"
    nodes: int = 1
    seq_len: int = 4096
    global_batch: int | None = None


@dataclass(frozen=True)
class ServeTarget:
    """Where the set is served (the spec's `serve:`): the hardware, and what the serving plan must
    honour; the planner chooses the rest (docs/serving.md)."""

    gpus: str | None = None           # None: the base's training hardware
    weights: str | None = None        # None: the most precise vLLM format that fits
    context: int | None = None        # None: the base's seq_len
    concurrency: int = 1              # sequences of `context` the KV cache must hold at once
    reserve_gib: float = 0.0          # memory other processes hold on each GPU


@dataclass(frozen=True)
class SpecialistSet:
    name: str
    origin: str                       # the spec file as named (for messages and generated headers)
    base: SpecialistBase
    corpus: str                       # the shared corpus spec: repository-relative (or absolute) path
    specialists: tuple[Specialist, ...]
    keep_general: bool = True         # each slice also keeps the shared spec's general categories
    hyperparameters: dict = field(default_factory=dict)
    serve: ServeTarget = ServeTarget()

    def folder(self, base: str = "recipes") -> str:
        """<base>/<model>/<set>: the slices and the serve script (base: the layout's, recipes/ in the matrix)."""
        return str(PurePosixPath(base, self.base.model, self.name))

    def slice_path(self, sp: Specialist, base: str = "recipes") -> str:
        return f"{self.folder(base)}/{sp.name}.corpus.yaml"

    def serve_path(self, base: str = "recipes") -> str:
        return f"{self.folder(base)}/serve_vllm.sh"


# ---- the spec --------------------------------------------------------------------------------


def specialists_from_dict(data, *, origin: str, corpus: str) -> SpecialistSet:
    """Validate a parsed specialists spec (pure); `corpus` is its `corpus:` resolved by the caller."""
    r = SpecReader(data, "", origin)
    name = r.get("name", str, required=True)
    if not NAME_RE.match(name):
        r.fail("name", f"{name!r} may hold only letters, digits, '.', '_' and '-' (it names files)")
    r.get("corpus", str, required=True)
    base = _base(r.get("base", dict, required=True), origin)
    keep_general = r.get("keep_general", bool, True)
    hyper = r.get("hyperparameters", dict, {})
    serve = _serve_target(r.get("serve", dict, {}), origin)
    items = r.get("specialists", list, required=True)
    r.finish()
    if not items:
        raise UserError(f"{origin}: specialists: is empty; list at least one (name, role, categories, lora_r)")
    specialists = tuple(_specialist(item, i, origin) for i, item in enumerate(items))
    names = [s.name for s in specialists]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"{origin}: specialist {dupes[0]!r} is listed twice; names must be distinct")
    return SpecialistSet(name=name, origin=origin, base=base, corpus=corpus, specialists=specialists,
                         keep_general=keep_general, hyperparameters=dict(hyper), serve=serve)


def _serve_target(data: dict, origin: str) -> ServeTarget:
    r = SpecReader(data, "serve", origin)
    gpus = r.get("gpus", str)
    weights = r.get("weights", str)
    context = r.get("context", int)
    concurrency = r.get("concurrency", int, 1)
    reserve = r.get("reserve_gib", float, 0.0)
    r.finish()
    if gpus is not None:
        try:
            parse_hardware(gpus)
        except UserError as exc:
            r.fail("gpus", str(exc))
    if weights is not None and weights not in serving_formats():
        r.fail("weights", f"{weights!r}: use one of {', '.join(serving_formats())} (vLLM serves the set)")
    if (context is not None and context < 1) or concurrency < 1 or reserve < 0:
        r.fail("context", "context and concurrency must be 1 or more, reserve_gib 0 or more")
    return ServeTarget(gpus=gpus, weights=weights, context=context, concurrency=concurrency, reserve_gib=float(reserve))


def serving_formats() -> list[str]:
    return engine_formats("vllm")


def _base(data: dict, origin: str) -> SpecialistBase:
    r = SpecReader(data, "base", origin)
    model = r.get("model", str, required=True)
    gpus = r.get("gpus", str, required=True)
    method = r.get("method", str, "lora")
    nodes = r.get("nodes", int, 1)
    seq_len = r.get("seq_len", int, 4096)
    global_batch = r.get("global_batch", int)
    r.finish()
    if method not in ("lora", "qlora"):
        r.fail("method", f"{method!r}: specialists are adapters on a shared base; use lora or qlora")
    if seq_len < 1 or nodes < 1:
        r.fail("seq_len", "seq_len and nodes must be positive")
    return SpecialistBase(model=model, gpus=gpus, method=method, nodes=nodes, seq_len=seq_len,
                          global_batch=global_batch)


def _specialist(data, i: int, origin: str) -> Specialist:
    r = SpecReader(data, f"specialists[{i}]", origin)
    name = r.get("name", str, required=True)
    if not SPECIALIST_NAME_RE.match(name):
        r.fail("name", f"{name!r}: lower-case letters, digits, '_' and '-', starting with a letter (it is the "
                       "model name requests use and part of file names)")
    role = " ".join(r.get("role", str, "").split())   # one line wherever it is shown (a `role: |` block folds)
    categories = tuple(r.get("categories", list, []))
    sources = tuple(r.get("sources", list, []))
    lora_r = r.get("lora_r", int, 16)
    lora_alpha = r.get("lora_alpha", int)
    r.finish()
    if not all(isinstance(c, str) and c.strip() for c in categories):
        r.fail("categories", "every entry must be a category name (the shared corpus's `_category` values)")
    if not all(isinstance(s, dict) and s.get("category") for s in sources):
        r.fail("sources", "each source is a corpus-spec source (path: FILE) with its own `category:`")
    if not categories and not sources:
        r.fail("categories", "give the categories of the shared corpus it trains on, or sources of its own")
    if not 1 <= lora_r <= MAX_LORA_RANK:
        r.fail("lora_r", f"{lora_r} must be between 1 and {MAX_LORA_RANK} (vLLM serves adapters up to rank {MAX_LORA_RANK})")
    return Specialist(name=name, role=role, categories=categories, sources=sources, lora_r=lora_r,
                      lora_alpha=lora_alpha)


def load_specialists(path: str | Path) -> tuple[SpecialistSet, dict]:
    """The specialists spec at `path` and the parsed shared corpus spec it names. UserError when
    either is missing or malformed."""
    p = Path(path)
    data = _read_yaml(p, "specialists spec")
    if not isinstance(data, dict) or not isinstance(data.get("corpus"), str):
        raise UserError(f"{path}: a specialists spec is a mapping with `corpus: SHARED-SPEC.yaml` (see datasets/specialists.yaml)")
    shared_path = _find(data["corpus"], p)
    if shared_path is None:
        raise UserError(f"{path}: corpus: {data['corpus']} not found (looked next to the spec, in the working "
                        "directory and in the repository); fix the path")
    shared = _read_yaml(shared_path, "corpus spec")
    if not isinstance(shared, dict) or not isinstance(shared.get("name"), str):
        raise UserError(f"{shared_path}: not a corpus spec (a mapping with `name:` and `sources:`)")
    return specialists_from_dict(data, origin=_repo_relative(p), corpus=_repo_relative(shared_path)), shared


def _read_yaml(p: Path, what: str):
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} {p} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {p}: cannot read it ({exc})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{what} {p}: {yaml_error_line(exc)}") from None


def _find(value: str, spec_path: Path) -> Path | None:
    for base in (spec_path.resolve().parent, Path.cwd(), repo_root()):
        if (base / value).is_file():
            return base / value
    return None


def _repo_relative(path: Path) -> str:
    """A committed file as every generated file names it: relative to the repository root."""
    try:
        return path.resolve().relative_to(repo_root()).as_posix()
    except ValueError:
        return str(path.resolve())


# ---- slices ----------------------------------------------------------------------------------


def slice_name(shared: dict, sp: Specialist) -> str:
    return f"{shared['name']}-{sp.name}"


def kept_categories(sset: SpecialistSet, sp: Specialist, shared: dict) -> list[str]:
    """The categories a specialist's slice keeps: its own, its sources', and (keep_general) the
    shared spec's general categories."""
    keep = set(sp.categories) | {str(s["category"]) for s in sp.sources}
    if sset.keep_general:
        mix = shared.get("mix") or {}
        keep |= set(mix.get("general_categories") or corpus_facts()["mix"]["general_categories"])
    return sorted(keep)


def slice_spec_data(sset: SpecialistSet, sp: Specialist, shared: dict) -> dict:
    """The corpus spec of a specialist's slice (pure): the shared spec, extended with another name and
    `keep_categories`; its phases and mix restricted to the kept categories; its own sources added."""
    keep = kept_categories(sset, sp, shared)
    data: dict = {"extends": sset.corpus, "name": slice_name(shared, sp), "keep_categories": keep}
    if sp.sources:
        data["sources"] = list(shared.get("sources") or []) + [dict(s) for s in sp.sources]
    phases = shared.get("phases") or []
    if phases:
        named = {c for p in phases for c in p.get("categories", []) if c != "*"}
        unnamed_kept = any(c not in named for c in keep)   # what a "*" phase would hold
        restricted = []
        for phase in phases:
            cats = [c for c in phase.get("categories", []) if c in keep or (c == "*" and unnamed_kept)]
            if cats:
                restricted.append({**phase, "categories": cats})
        data["phases"] = restricted
    mix = dict(shared.get("mix") or {})
    if mix:
        mix["categories"] = {c: v for c, v in (mix.get("categories") or {}).items() if c in keep}
        if mix.get("general_share") is not None and not set(mix.get("general_categories") or ["general"]) & set(keep):
            mix.pop("general_share")
        data["mix"] = mix
    return data


def slice_spec_text(sset: SpecialistSet, sp: Specialist, shared: dict, path: str) -> str:
    data = slice_spec_data(sset, sp, shared)
    header = [
        f"The slice of specialist {sp.name} of {sset.name}" + (f" ({sp.role})" if sp.role else "")
        + f": {sset.corpus}, only categories {', '.join(data['keep_categories'])}.",
        f"Generated by LlamaForge from {sset.origin}; do not edit by hand (llamaforge render).",
        f"Build: llamaforge corpus build {shlex.quote(path)}   -> build/corpus/{data['name']}/",
        "Rows of other categories are read, validated and counted as filtered (`category`), never trained on.",
    ]
    # every header line through the comment filter, every value through the YAML dumper
    return "".join(f"# {comment_text(line)}\n" for line in header) + dump_yaml(data)


# ---- recipes and the serve script ------------------------------------------------------------


def specialist_request(sset: SpecialistSet, sp: Specialist, shared: dict, layers: tuple = ()) -> RecipeRequest:
    b = sset.base
    phases = slice_spec_data(sset, sp, shared).get("phases") or []
    return RecipeRequest(
        model=b.model, gpus=b.gpus, nodes=b.nodes, method=b.method, seq_len=b.seq_len, global_batch=b.global_batch,
        lora_r=sp.lora_r, lora_alpha=sp.lora_alpha, corpus=slice_name(shared, sp),
        phases=tuple(str(p.get("name")) for p in phases),
        hyper_layers=tuple(layers) + (("entry", dict(sset.hyperparameters)),),
    )


def render_specialists(sset: SpecialistSet, shared: dict, *, layers: tuple = (), layout: Layout = Layout(),
                       plan_for: Callable = plan_request, base_model: str | None = None,
                       ) -> tuple[list[RenderedFile], list[RenderedRecipe]]:
    """Every file of a specialists spec: one recipe per specialist (with its assets), its slice spec,
    and the set's vLLM serve script. `plan_for(request)` plans a recipe and `base_model` replaces the
    catalog's Hub id (the demo-size test passes a CPU plan and a local tiny model)."""
    serve_path = sset.serve_path(layout.base)
    files: list[RenderedFile] = []
    recipes: list[RenderedRecipe] = []
    for sp in sset.specialists:
        req = specialist_request(sset, sp, shared, layers)
        req.hyperparameters(sset.base.method)  # an unknown hyperparameter fails here, naming the spec
        plan = plan_for(req)
        name = f"{sset.name}-{sp.name}-{recipe_name(plan.setup.method, plan.setup.hardware)}"
        slice_path = sset.slice_path(sp, layout.base)
        plan.reasons = [
            f"specialist {sp.name} of {sset.name}" + (f" ({sp.role})" if sp.role else "")
            + f": trains only its slice of {sset.corpus}, categories {', '.join(kept_categories(sset, sp, shared))} "
            f"(`llamaforge corpus build {slice_path}` writes build/corpus/{req.corpus}/)",
            f"LoRA r={sp.lora_r}: this specialist's rank in {sset.origin}; served beside the others on one base by "
            f"`bash {serve_path}`",
            *plan.reasons,
        ]
        rec = render_recipe(req, layout, plan_obj=plan, name=name, base_model=base_model,
                            extra_header={"specialist": f"{sset.name}/{sp.name}"})
        # the slice travels with its recipe, so `render --only` writes it too
        rec.files.append(RenderedFile(slice_path, slice_spec_text(sset, sp, shared, slice_path)))
        recipes.append(rec)
        files += rec.files
    files.append(RenderedFile(serve_path, serve_script_text(sset, recipes, serve_path)))
    return files, recipes


def serve_plan_for(sset: SpecialistSet, max_rank: int):
    """The serving plan of the set on its `serve:` hardware: one base, one LoRA slot per specialist of
    the largest rank. UserError (naming the spec) when the plan says vLLM would not start."""
    target = sset.serve
    if target.gpus is None and parse_hardware(sset.base.gpus, allow_cpu=True).gpu.id == "cpu":
        return None                   # a demo set trained on the CPU: no GPU to plan serving on
    hw = parse_hardware(target.gpus or sset.base.gpus)
    req = ServeRequest(model=get_model(sset.base.model), device=hw.gpu, count=hw.gpus_per_node, engine="vllm",
                       context=target.context or sset.base.seq_len, weights=target.weights,
                       max_loras=len(sset.specialists), max_lora_rank=max_rank, min_concurrency=target.concurrency,
                       reserve_gib=target.reserve_gib)
    try:
        return plan_serving(req)
    except Infeasible as exc:
        raise UserError(f"{sset.origin}: serve: {exc}") from None


def serve_command(sset: SpecialistSet, recipes: list[RenderedRecipe]) -> dict:
    """The parts of the multi-LoRA `vllm serve` command (pure): the base, one adapter per specialist
    (its name, the environment variable that overrides its folder, the recipe's output_dir), and the
    flags of the serving plan on the spec's `serve:` hardware: --max-loras = every specialist in one
    batch (fewer when they do not fit; the others wait in CPU memory), --max-lora-rank = the smallest
    value vLLM accepts that holds the largest rank, the weight format, context, memory share."""
    facts = serving_facts()
    adapters = []
    for sp, rec in zip(sset.specialists, recipes):
        cfg = yaml.safe_load(rec.files[0].content)
        if not SAFE_PATH_RE.match(cfg["output_dir"]):
            raise UserError(f"{sset.origin}: {sp.name}: output_dir {cfg['output_dir']!r} is not a plain path the serve "
                            "script can default to (letters, digits, '._-/')")
        env = f"{sp.name.upper().replace('-', '_')}_ADAPTER"
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", env):   # a shell variable name cannot be quoted
            raise UserError(f"{sset.origin}: specialist {sp.name!r} does not make a shell variable name ({env})")
        adapters.append({"name": sp.name, "role": sp.role, "rank": rec.plan.setup.lora_r, "env": env,
                         "default": cfg["output_dir"], "recipe": rec.recipe_path})
    max_rank = vllm_max_lora_rank(max(a["rank"] for a in adapters), facts.max_lora_ranks)
    plan = serve_plan_for(sset, max_rank)
    trained_base = yaml.safe_load(recipes[0].files[0].content)["base_model"]
    if plan is None:
        args = [("--dtype", facts.vllm_dtype), ("--max-model-len", str(sset.base.seq_len)), ("--enable-lora", None),
                ("--max-loras", str(len(adapters))), ("--max-lora-rank", str(max_rank))]
        lines = ["no serving plan: the set trains on the CPU (a demo); give `serve: gpus:` to size its server"]
    else:
        args = vllm_arguments(plan)
        lines = plan_summary(plan) + [f"why: {r}" for r in plan.reasons]
    return {
        "model": served_checkpoint(plan, trained_base) if plan else trained_base,
        "trained_base": trained_base,
        "served_model_name": f"{sset.name}-base",
        "args": args,
        "plan": plan,
        "plan_lines": lines,
        "max_loras": plan.setup.max_loras if plan else len(adapters),
        "max_lora_rank": max_rank,
        "adapters": adapters,
        "port": facts.vllm_port,
        "generation": json.dumps({"temperature": facts.temperature, "top_p": facts.top_p}),
    }


def serve_script_text(sset: SpecialistSet, recipes: list[RenderedRecipe], path: str) -> str:
    cmd = serve_command(sset, recipes)
    return render_template(SERVE_TEMPLATE, sset=sset, cmd=cmd, script=path,
                           template_name=f"templates/{SERVE_TEMPLATE}", example_model=cmd["adapters"][0]["name"])


__all__ = ["Specialist", "SpecialistBase", "SpecialistSet", "ServeTarget", "serve_plan_for", "specialists_from_dict", "load_specialists",
           "slice_spec_data", "slice_spec_text", "kept_categories", "specialist_request", "render_specialists",
           "serve_command", "serve_script_text"]
