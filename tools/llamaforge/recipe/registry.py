"""The committed recipes as a user sees them: list them (`llamaforge ls`) and copy one with the
files it needs (`llamaforge cp`), in the manner of torchtune's `tune ls` / `tune cp`.

Reads recipe headers only (the `# llamaforge-*:` lines and the estimate lines), so it needs no
planner, no Axolotl and no torch."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ..errors import LINE_BREAKS, UserError
from ..files import check_file_to_write, write_text_atomic
from ..paths import recipes_dir, repo_root
from .templating import comment_text, yaml_value

_HEADER_KEY = re.compile(r"^# llamaforge-([a-z]+(?:-[a-z]+)*):\s*(.+?)\s*$")
_MEMORY = re.compile(r"^# Memory:\s+~([\d.]+) GiB peak per GPU of ([\d.]+) usable; host RAM ~([\d.]+) GiB")
_THROUGHPUT = re.compile(r"^# Throughput:\s+~([\d,]+) tokens/s")
_PARALLEL = re.compile(r"^# Parallelism:\s+(.+?)\s*$")
_TITLE = re.compile(r"^# (.+?)\s*$")


@dataclass
class RecipeEntry:
    id: str                 # <model>/<name>
    path: str               # relative to the repository
    title: str
    model: str
    hardware: str
    method: str
    parallelism: str
    peak_gpu_gib: float | None
    usable_gpu_gib: float | None
    host_ram_gib: float | None
    tokens_per_s: int | None
    trainer: str = "axolotl"           # axolotl | mlx-lm (the Mac path: `mlx_lm.lora --config`)

    def to_dict(self) -> dict:
        return asdict(self)


def read_header(text: str) -> dict:
    """The header facts of a rendered recipe (empty dict for a hand-written config)."""
    info: dict = {}
    lines = text.splitlines()
    if lines and _TITLE.match(lines[0]):
        info["title"] = _TITLE.match(lines[0]).group(1)
    for line in lines:
        if not line.startswith("#"):
            if line.strip():
                break
            continue
        if m := _HEADER_KEY.match(line):
            info[m.group(1)] = m.group(2)
        elif m := _MEMORY.match(line):
            info["peak_gpu_gib"], info["usable_gpu_gib"], info["host_ram_gib"] = (float(g) for g in m.groups())
        elif m := _THROUGHPUT.match(line):
            info["tokens_per_s"] = int(m.group(1).replace(",", ""))
        elif m := _PARALLEL.match(line):
            info["parallelism"] = m.group(1)
    return info


def list_recipes(root: Path | None = None) -> list[RecipeEntry]:
    base = Path(root) if root else recipes_dir()
    entries = []
    for path in sorted(base.glob("*/*.yaml")):
        if path.parent.name in ("accelerate", "deepspeed"):
            continue
        info = read_header(path.read_text(encoding="utf-8"))
        if "model" not in info:
            continue
        entries.append(RecipeEntry(
            id=f"{path.parent.name}/{path.stem}",
            path=path.relative_to(base.parent).as_posix(),
            title=info.get("title", ""),
            model=info["model"],
            hardware=info.get("hardware", "?"),
            method=(f"{info['stage']} ({info.get('method', '?')})" if info.get("stage") else info.get("method", "?")),
            parallelism=info.get("parallelism", "?"),
            peak_gpu_gib=info.get("peak_gpu_gib"),
            usable_gpu_gib=info.get("usable_gpu_gib"),
            host_ram_gib=info.get("host_ram_gib"),
            tokens_per_s=info.get("tokens_per_s"),
            trainer=info.get("trainer", "axolotl"),
        ))
    return entries


def resolve_recipe(name: str) -> Path:
    """`llama-3.1-70b/lora-8xH100-80GB` (with or without .yaml), or a path."""
    path = Path(name)
    if path.is_file():
        return path
    candidates = [recipes_dir() / name, recipes_dir() / f"{name}.yaml"]
    for cand in candidates:
        if cand.is_file():
            return cand
    known = [e.id for e in list_recipes()]
    raise UserError(f"no recipe {name!r}; `llamaforge ls` lists them ({', '.join(known[:4])}, ...)")


@dataclass
class CopyResult:
    recipe: str
    files: list[str]
    launch: str

    def to_dict(self) -> dict:
        return asdict(self)


def _referenced_assets(text: str) -> list[str]:
    """Repository-relative paths of the files a recipe needs besides itself: its DeepSpeed JSON
    (the `deepspeed:` key) and the accelerate config / SLURM script its launch lines name."""
    assets = []
    data = yaml.safe_load(text) or {}
    ds = data.get("deepspeed")
    if isinstance(ds, str):
        assets.append(ds)
    for m in re.finditer(r"--config_file (\S+)", text):
        assets.append(m.group(1))
    for m in re.finditer(r"^#\s+sbatch (\S+)", text, flags=re.M):
        assets.append(m.group(1))
    seen = []
    for a in assets:
        if a not in seen:
            seen.append(a)
    return seen


def _word(ref: str) -> re.Pattern:
    """`ref` as a whole shell word or YAML value (not part of a longer path)."""
    return re.compile(r"(?<![\w./-])" + re.escape(ref) + r"(?![\w./-])")


def rewrite_references(text: str, mapping: dict[str, str], *, kind: str) -> str:
    """`text` (a recipe, kind "yaml", or a shell script, kind "shell") with every reference to a path
    in `mapping` rewritten to its new path, quoted for where it lands: in a comment (launch lines a
    user copies) shell-quoted and kept on one line; a YAML value (`deepspeed: ...`) through the YAML
    filter; a shell assignment (`export RECIPE=...`) shell-quoted. A reference anywhere else is a
    template this function does not know: RuntimeError, never an unquoted paste."""
    out = []
    for line in text.splitlines(keepends=True):
        body, nl = (line[:-1], "\n") if line.endswith("\n") else (line, "")
        if body.lstrip().startswith("#"):
            for old, new in mapping.items():
                body = _word(old).sub(lambda m, new=new: comment_text(shlex.quote(new)), body)
        elif any(_word(old).search(body) for old in mapping):
            m = (re.fullmatch(r"(\s*[A-Za-z_][\w-]*:\s*)(\S.*?)\s*", body) if kind == "yaml"
                 else re.fullmatch(r"(\s*(?:export\s+)?[A-Za-z_]\w*=)(.*?)\s*", body))
            value = None
            if m is not None:
                try:
                    value = yaml.safe_load(m.group(2)) if kind == "yaml" else shlex.split(m.group(2))
                except (yaml.YAMLError, ValueError):
                    value = None
            if kind == "shell" and isinstance(value, list) and len(value) == 1:
                value = value[0]
            if not isinstance(value, str) or value not in mapping:
                raise RuntimeError(f"cannot rewrite a path reference in this {kind} line: {body!r}")
            new = mapping[value]
            body = m.group(1) + (yaml_value(new) if kind == "yaml" else shlex.quote(new))
        out.append(body + nl)
    return "".join(out)


def copy_recipe(name: str, dest: str, *, force: bool = False) -> CopyResult:
    """Copy a recipe to `dest` (a file, or a folder to copy into) with the DeepSpeed JSON,
    accelerate config and SLURM script it refers to, placed beside it; every reference in the
    copy is rewritten to the new location, relative to the current directory (launch from there),
    quoted for the file it lands in."""
    src = resolve_recipe(name)
    text = src.read_text(encoding="utf-8")
    if LINE_BREAKS.search(dest):
        raise UserError(f"destination {dest!r} contains a line break or control character; choose a plain file name")
    dest_path = Path(dest)
    if dest.endswith(("/", os.sep)) or dest_path.is_dir():
        dest_path = dest_path / src.name
    if dest_path.suffix not in (".yaml", ".yml"):
        raise UserError(f"destination {dest!r} must end in .yaml (or be a folder)")
    check_file_to_write(dest_path, "destination")
    root = repo_root()
    plan: list[tuple[Path, Path, str]] = []   # (source, target, old reference)
    for ref in _referenced_assets(text):
        asset_src = (root / ref) if not Path(ref).is_absolute() else Path(ref)
        if not asset_src.is_file():
            asset_src = src.parent / Path(ref).name
        if not asset_src.is_file():
            raise UserError(f"{src}: refers to {ref}, which does not exist; run `llamaforge render`")
        plan.append((asset_src, dest_path.parent / Path(ref).name, ref))
    targets = [dest_path] + [t for _, t, _ in plan]
    clash = [str(t) for t in targets if t.exists() and not force]
    if clash:
        raise UserError(f"{', '.join(clash)} already exist(s); pass --force to overwrite")

    def rel(p: Path) -> str:
        try:
            text = os.path.relpath(p, Path.cwd())
        except ValueError:
            text = str(p)
        return f"./{text}" if text.startswith("-") else text   # never mistaken for an option

    old_recipe_ref = src.resolve().relative_to(root).as_posix() if src.resolve().is_relative_to(root) else str(src)
    mapping = {old_recipe_ref: rel(dest_path), **{ref: rel(target) for _, target, ref in plan}}
    new_text = rewrite_references(text, mapping, kind="yaml")
    for asset_src, target, ref in plan:
        content = asset_src.read_text(encoding="utf-8")
        if target.suffix == ".sbatch":
            content = rewrite_references(content, mapping, kind="shell")
        elif target.suffix in (".yaml", ".yml"):
            content = rewrite_references(content, mapping, kind="yaml")
        write_text_atomic(target, content, mode=0o755 if target.suffix == ".sbatch" else 0o644)
    write_text_atomic(dest_path, new_text)
    launch = next((ln.strip()[2:].strip() for ln in new_text.splitlines() if "axolotl.cli.train" in ln or ln.strip().startswith("#   sbatch")), "")
    return CopyResult(recipe=rel(dest_path), files=[rel(t) for t in targets], launch=launch)
