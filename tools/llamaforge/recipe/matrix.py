"""The committed matrix (templates/matrix.yaml) rendered into recipes/: load it, render every SFT, DPO,
specialists, serving and MLX entry, index them, and write the files or compare them with disk.

Pure up to `write_files` / `compare_with_disk` / `prune_extra`: rendering returns `RenderedFile`s
(a relative path and its text); only those functions touch the disk."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from ..errors import UserError
from ..files import write_text_atomic, yaml_error_line
from ..paths import repo_root, templates_dir
from .dpo import dpo_requests, render_dpo_recipe
from .mlx import index_row, render_mlx_recipes
from .request import RecipeRequest, RenderedFile, RenderedRecipe, deepspeed_filename, recipe_name
from .serve_plans import render_serving_plans
from .sft import render_deepspeed, render_recipe
from .specialists import load_specialists, render_specialists
from .templating import render_template

MATRIX_FILE = "matrix.yaml"

# Rendered into recipes/deepspeed/ whether or not a matrix recipe uses them: the set a user
# reaches for when adapting a recipe by hand (Axolotl's own deepspeed_configs/ offer the same).
STANDARD_DEEPSPEED = ((1, "none"), (2, "none"), (3, "none"), (3, "all"))


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
        raise UserError(f"{path}: {yaml_error_line(exc)}") from None
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
        recipes += [render_dpo_recipe(d) for d in matrix.preference]
    for spec_path in matrix.specialists:
        sset, shared = load_specialists(repo_root() / spec_path)
        set_files, set_recipes = render_specialists(sset, shared, layers=matrix.hyper_layers)
        recipes += set_recipes
        extra_files += [f for f in set_files if not any(f is g for r in set_recipes for g in r.files)]
    extra_index: dict = {}
    if matrix.serving and only is None:
        serving_files = render_serving_plans(matrix.serving, recipes)
        extra_files += serving_files
        extra_index["serving_rows"] = [f"`{PurePosixPath(f.path).relative_to('recipes')}`" for f in serving_files]
    if matrix.mlx and only is None:
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
    "Matrix", "load_matrix", "hyperparameter_layers", "render_matrix", "render_index", "write_files",
    "parse_problem", "check_files_parse", "overwrites", "prune_extra", "Drift", "compare_with_disk",
]
