"""The corpus spec: a YAML file in datasets/ that says what goes into a corpus and how it is mixed.

`load_spec(path)` reads and validates it (every mistake is one UserError line naming the key and the
fix) and returns a `CorpusSpec`. `spec_from_dict(data, origin)` is the pure part, used by tests.
The spec's hash is the sha256 of its canonical JSON (sorted keys), so comments and formatting do
not change it."""

from __future__ import annotations

import difflib
import glob
import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ..errors import LINE_BREAKS, UserError, clip
from ..files import yaml_error_line
from ..paths import display_path, read_facts, repo_root

FORMATS = ("auto", "messages", "sharegpt", "alpaca", "prompt_response", "text", "preference")
KINDS = ("sft", "preference")  # conversations to imitate | chosen/rejected pairs (DPO)
FILE_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
QC_FLAGS = ("short_answer", "cliche", "persona_break", "refusal", "repetition")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@lru_cache(maxsize=1)
def corpus_facts() -> dict:
    """Defaults and thresholds from facts/corpus.yaml."""
    return read_facts("corpus.yaml")


@dataclass(frozen=True)
class SourceSpec:
    """One entry of `sources:`. Exactly one of `path` (a file or a glob) and `hf` (a Hugging Face
    dataset name or a local dataset folder) is set."""

    index: int
    path: str | None = None
    hf: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    name: str | None = None
    category: str | None = None
    category_field: str | None = None
    format: str = "auto"

    @property
    def label(self) -> str:
        return self.name or self.path or f"hf:{self.hf}"


@dataclass(frozen=True)
class CategoryMix:
    """Target of one category in the train split: a `count`, a `share` of the train split, or a
    `weight` (multiplier of the rows it has). `min_unique` warns when fewer distinct rows survive."""

    count: int | None = None
    share: float | None = None
    weight: float | None = None
    min_unique: int | None = None


@dataclass(frozen=True)
class MixSpec:
    categories: dict[str, CategoryMix] = field(default_factory=dict)
    general_share: float | None = None
    general_categories: tuple[str, ...] = ("general",)
    total: int | None = None


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    categories: tuple[str, ...]  # "*" = every category no other phase names


@dataclass(frozen=True)
class DedupSpec:
    exact: bool = True
    near: bool = False
    near_threshold: float = 0.85
    num_perm: int = 64


@dataclass(frozen=True)
class LengthsSpec:
    tokenizer: str | None = None
    sequence_len: int = 4096
    chars_per_token: float = 4.0
    template_tokens_per_message: int = 5
    drop_over_sequence_len: bool = False


@dataclass(frozen=True)
class QcSpec:
    drop: tuple[str, ...] = ()
    scope: str = "sample"  # sample | all
    sample_rows_per_category: int = 1000
    review_rows_per_category: int = 200
    min_answer_chars: int = 20
    cliches_file: str | None = None
    extra_cliches: tuple[str, ...] = ()


@dataclass(frozen=True)
class PersonaSpec:
    name: str | None = None
    system_prompt: str | None = None
    add_system_prompt: str = "never"  # never | missing


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    origin: str  # the spec file as the user named it (display path)
    base_dir: str  # the spec file's directory, for relative source paths
    sha256: str
    seed: int = 0
    output: str = "build/corpus"
    eval_fraction: float = 0.02
    sample_fraction: float = 0.1
    sources: tuple[SourceSpec, ...] = ()
    mix: MixSpec = field(default_factory=MixSpec)
    phases: tuple[PhaseSpec, ...] = ()
    phase_files: bool = False
    dedup: DedupSpec = field(default_factory=DedupSpec)
    lengths: LengthsSpec = field(default_factory=LengthsSpec)
    qc: QcSpec = field(default_factory=QcSpec)
    persona: PersonaSpec = field(default_factory=PersonaSpec)
    kind: str = "sft"
    # Only rows of these categories are kept; the others are counted as filtered (`category`).
    keep_categories: tuple[str, ...] | None = None
    extends: str | None = None  # the spec this one extends (display path), for the manifest

    def output_dir(self, cwd: Path | None = None) -> Path:
        base = Path(self.output)
        if not base.is_absolute():
            base = (cwd or Path.cwd()) / base
        return base / self.name

    def to_dict(self) -> dict:
        return asdict(self)


# ---- parsing helpers -------------------------------------------------------------------------

class _Reader:
    """Walks a mapping, type-checks its values and rejects unknown keys with a suggestion."""

    def __init__(self, data: Any, where: str, origin: str):
        if not isinstance(data, dict):
            raise UserError(f"{origin}: {where or 'the spec'} must be a mapping (key: value), not {_kind(data)}")
        self.data, self.where, self.origin, self.used = data, where, origin, set()

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, msg: str):
        raise UserError(f"{self.origin}: {self._name(key)}: {msg}")

    def get(self, key: str, kind, default=None, *, required=False):
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                typo = difflib.get_close_matches(key, [k for k in self.data if isinstance(k, str) and k not in self.used], n=1)
                self.fail(key, f"is required; did you mean `{key}` instead of `{typo[0]}`?" if typo else "is required")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.fail(key, f"expected {_KIND_NAMES.get(names, names)}, got {_kind(value)} {clip(repr(value), 60)}")
        return value

    def finish(self):
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            key = str(unknown[0])
            close = difflib.get_close_matches(key, sorted(self.used), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else f"; known keys: {', '.join(sorted(self.used))}"
            raise UserError(f"{self.origin}: unknown key `{self._name(key)}`{hint}")


SpecReader = _Reader  # other YAML specs (datasets/specialists.yaml) validate with the same messages


_KIND_NAMES = {"str": "text", "int": "an integer", "float": "a number", "bool": "true or false",
               "list": "a list", "dict": "a mapping"}


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


def _fraction(r: _Reader, key: str, default: float, *, allow_zero=True, allow_one=False) -> float:
    value = r.get(key, float, default)
    lo_ok = value >= 0 if allow_zero else value > 0
    hi_ok = value <= 1 if allow_one else value < 1
    if not (lo_ok and hi_ok) or math.isnan(value):
        r.fail(key, f"{value} is not a fraction between 0 and 1")
    return value


def _str_list(r: _Reader, key: str, default=()) -> tuple[str, ...]:
    value = r.get(key, list, None)
    if value is None:
        return tuple(default)
    for item in value:
        if not isinstance(item, str) or not item:
            r.fail(key, f"every entry must be non-empty text, got {clip(repr(item), 60)}")
    return tuple(value)


def canonical_sha256(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---- the spec --------------------------------------------------------------------------------

def load_spec(path: str | Path) -> CorpusSpec:
    """Read and validate a corpus spec file. Raises UserError naming the key and the fix.

    A spec with `extends: OTHER.yaml` is that spec with this one's top-level keys on top (e.g. a
    specialist's slice: another name and `keep_categories`); its sources resolve as the other's do."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"corpus spec {path} not found; pass the path of a YAML spec such as datasets/leviathan.yaml")
    data = _read_spec_yaml(p, str(path))
    if isinstance(data, dict) and "extends" in data:
        parent_path = _extended_spec(data["extends"], p, str(path))
        parent = _read_spec_yaml(parent_path, str(parent_path))
        if not isinstance(parent, dict):
            raise UserError(f"{parent_path}: the extended spec must be a mapping (key: value)")
        if "extends" in parent:
            raise UserError(f"{path}: extends {data['extends']}, which extends another spec; extend the base spec directly")
        merged = {**parent, **{k: v for k, v in data.items() if k != "extends"}}
        spec = spec_from_dict(merged, origin=str(path), base_dir=str(parent_path.resolve().parent))
        return replace(spec, extends=display_path(parent_path))
    return spec_from_dict(data, origin=str(path), base_dir=str(p.resolve().parent))


def _extended_spec(value: Any, spec_path: Path, origin: str) -> Path:
    """The file an `extends:` names: next to the spec, in the working directory, or in the repository."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{origin}: extends: expected the path of a corpus spec, got {clip(repr(value), 60)}")
    bases = [spec_path.resolve().parent, Path.cwd()]
    try:
        bases.append(repo_root())
    except UserError:
        pass
    for base in bases:
        candidate = base / value
        if candidate.is_file():
            return candidate
    raise UserError(f"{origin}: extends: {value} not found (looked next to the spec, in the working directory and "
                    "in the repository); fix the path")


def _read_spec_yaml(p: Path, path: str) -> Any:
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the spec as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: {yaml_error_line(exc)}") from None
    return data


def spec_from_dict(data: Any, *, origin: str = "<spec>", base_dir: str = ".") -> CorpusSpec:
    """Validate a parsed spec (pure). Raises UserError on the first mistake."""
    facts = corpus_facts()
    r = _Reader(data, "", origin)
    name = r.get("name", str, required=True)
    if not NAME_RE.match(name):
        r.fail("name", f"{name!r} may hold only letters, digits, '.', '_' and '-' (it names the output folder)")
    seed = r.get("seed", int, 0)
    output = r.get("output", str, "build/corpus")
    eval_fraction = _fraction(r, "eval_fraction", 0.02)
    sample_fraction = _fraction(r, "sample_fraction", 0.1, allow_one=True)
    raw_sources = r.get("sources", list, required=True)
    if not raw_sources:
        r.fail("sources", "is empty; list at least one source (path: FILE or hf: NAME)")
    sources = tuple(_source(item, i, origin) for i, item in enumerate(raw_sources))
    mix = _mix(r.get("mix", dict, {}), origin, facts)
    phases = _phases(r.get("phases", list, []), origin)
    phase_files = r.get("phase_files", bool, None)
    dedup = _dedup(r.get("dedup", dict, {}), origin, facts)
    lengths = _lengths(r.get("lengths", dict, {}), origin, facts)
    qc = _qc(r.get("qc", dict, {}), origin, facts)
    persona = _persona(r.get("persona", dict, {}), origin)
    kind = r.get("kind", str, "sft")
    if kind not in KINDS:
        r.fail("kind", f"{kind!r}: choose sft (conversations) or preference (chosen/rejected pairs for DPO)")
    keep = _str_list(r, "keep_categories") if r.get("keep_categories", list) is not None else None
    if keep is not None and not keep:
        r.fail("keep_categories", "is empty; list the categories to keep, or remove the key to keep all")
    r.finish()
    for src in sources:
        if (kind == "preference") != (src.format == "preference") and src.format != "auto":
            raise UserError(f"{origin}: sources[{src.index}].format: {src.format} does not fit a corpus of kind "
                            f"{kind}; use auto" + (" or preference" if kind == "preference" else " or a conversation format"))
    if phase_files and not phases:
        raise UserError(f"{origin}: phase_files: true needs `phases:`; remove it or list the phases")
    if phase_files is None:
        phase_files = bool(phases)
    return CorpusSpec(
        name=name, origin=origin, base_dir=base_dir, sha256=canonical_sha256(data), seed=seed,
        output=output, eval_fraction=eval_fraction, sample_fraction=sample_fraction, sources=sources,
        mix=mix, phases=phases, phase_files=phase_files, dedup=dedup, lengths=lengths, qc=qc,
        persona=persona, kind=kind, keep_categories=keep,
    )


def _source(item: Any, i: int, origin: str) -> SourceSpec:
    r = _Reader(item, f"sources[{i}]", origin)
    path = r.get("path", str)
    hf = r.get("hf", str)
    if (path is None) == (hf is None):
        r.fail("path", "give exactly one of `path: FILE-OR-GLOB` and `hf: DATASET-NAME`")
    fmt = r.get("format", str, "auto")
    if fmt not in FORMATS:
        close = difflib.get_close_matches(fmt, FORMATS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        r.fail("format", f"unknown format {fmt!r}{hint}; choose one of {', '.join(FORMATS)}")
    category = r.get("category", str)
    category_field = r.get("category_field", str)
    if category is None and category_field is None:
        r.fail("category", "give `category: NAME` or `category_field: FIELD` (e.g. _category) so rows get a category")
    if category is not None and not category.strip():
        r.fail("category", "is empty")
    name = r.get("name", str)
    hf_config = r.get("config", str)
    hf_split = r.get("split", str, "train")
    if path is not None and (hf_config is not None or "split" in r.data):
        r.fail("config", "`config` and `split` apply to `hf:` sources only")
    if path is not None and not glob.has_magic(path) and Path(path).suffix.lower() not in FILE_KINDS:
        r.fail("path", f"{path}: unsupported file type {Path(path).suffix or '(none)'}; "
                       f"use one of {', '.join(sorted(FILE_KINDS))}")
    r.finish()
    return SourceSpec(index=i, path=path, hf=hf, hf_config=hf_config, hf_split=hf_split, name=name,
                      category=category, category_field=category_field, format=fmt)


def _mix(data: dict, origin: str, facts: dict) -> MixSpec:
    r = _Reader(data, "mix", origin)
    general_share = r.get("general_share", float)
    if general_share is not None and not 0 < general_share < 1:
        r.fail("general_share", f"{general_share} must be between 0 and 1 (seed advice: 0.10-0.20)")
    general_categories = _str_list(r, "general_categories", facts["mix"]["general_categories"])
    total = r.get("total", int)
    if total is not None and total <= 0:
        r.fail("total", "must be a positive number of rows")
    cats: dict[str, CategoryMix] = {}
    for cat, target in (r.get("categories", dict, {}) or {}).items():
        cr = _Reader(target, f"mix.categories.{cat}", origin)
        count, share = cr.get("count", int), cr.get("share", float)
        weight, min_unique = cr.get("weight", float), cr.get("min_unique", int)
        cr.finish()
        if sum(x is not None for x in (count, share, weight)) > 1:
            cr.fail("count", "give one of count, share and weight")
        if count is not None and count < 0 or min_unique is not None and min_unique < 0:
            cr.fail("count", "must not be negative")
        if share is not None and not 0 < share < 1:
            cr.fail("share", f"{share} must be between 0 and 1")
        if weight is not None and not weight >= 0:
            cr.fail("weight", f"{weight} must be 0 or more")
        if general_share is not None and cat in general_categories and (count or share or weight) is not None:
            cr.fail("share", f"{cat} is a general category, whose share `mix.general_share` sets already")
        cats[str(cat)] = CategoryMix(count=count, share=share, weight=weight, min_unique=min_unique)
    r.finish()
    shares = sum(c.share for c in cats.values() if c.share is not None) + (general_share or 0)
    if shares > 1 + 1e-9:
        raise UserError(f"{origin}: mix shares add up to {shares:.3g}, more than 1; lower them")
    return MixSpec(categories=cats, general_share=general_share, general_categories=general_categories,
                   total=total)


def _phases(items: list, origin: str) -> tuple[PhaseSpec, ...]:
    phases, seen_names, seen_cats = [], set(), {}
    for i, item in enumerate(items):
        r = _Reader(item, f"phases[{i}]", origin)
        name = r.get("name", str, required=True)
        cats = _str_list(r, "categories")
        r.finish()
        if not NAME_RE.match(name):
            r.fail("name", f"{name!r} may hold only letters, digits, '.', '_' and '-' (it names a file)")
        if name in seen_names:
            r.fail("name", f"phase {name!r} appears twice")
        if not cats:
            r.fail("categories", "list the categories of this phase (\"*\" = all the others)")
        for cat in cats:
            if cat in seen_cats:
                r.fail("categories", f"{cat!r} is already in phase {seen_cats[cat]!r}; a category belongs to one phase")
            seen_cats[cat] = name
        seen_names.add(name)
        phases.append(PhaseSpec(name=name, categories=cats))
    return tuple(phases)


def _dedup(data: dict, origin: str, facts: dict) -> DedupSpec:
    d = facts["dedup"]
    r = _Reader(data, "dedup", origin)
    exact = r.get("exact", bool, True)
    near = r.get("near", bool, False)
    threshold = _fraction(r, "near_threshold", d["near_threshold"], allow_zero=False)
    num_perm = r.get("num_perm", int, d["num_perm"])
    if not 16 <= num_perm <= 256:
        r.fail("num_perm", f"{num_perm} must be between 16 and 256")
    r.finish()
    return DedupSpec(exact=exact, near=near, near_threshold=threshold, num_perm=num_perm)


def _lengths(data: dict, origin: str, facts: dict) -> LengthsSpec:
    d = facts["lengths"]
    r = _Reader(data, "lengths", origin)
    tokenizer = r.get("tokenizer", str)
    seq = r.get("sequence_len", int, d["sequence_len"])
    cpt = r.get("chars_per_token", float, d["chars_per_token"])
    overhead = r.get("template_tokens_per_message", int, d["template_tokens_per_message"])
    drop = r.get("drop_over_sequence_len", bool, False)
    r.finish()
    if seq <= 0:
        r.fail("sequence_len", "must be positive (the recipe's sequence_len)")
    if not cpt > 0:
        r.fail("chars_per_token", "must be positive")
    return LengthsSpec(tokenizer=tokenizer, sequence_len=seq, chars_per_token=cpt,
                       template_tokens_per_message=overhead, drop_over_sequence_len=drop)


def _qc(data: dict, origin: str, facts: dict) -> QcSpec:
    d = facts["qc"]
    r = _Reader(data, "qc", origin)
    drop = _str_list(r, "drop")
    for flag in drop:
        if flag not in QC_FLAGS:
            r.fail("drop", f"unknown flag {flag!r}; choose from {', '.join(QC_FLAGS)}")
    scope = r.get("scope", str, "sample")
    if scope not in ("sample", "all"):
        r.fail("scope", f"{scope!r}: choose sample (phrase flags on a sample per category) or all")
    sample_rows = r.get("sample_rows_per_category", int, d["sample_rows_per_category"])
    review_rows = r.get("review_rows_per_category", int, d["review_rows_per_category"])
    min_chars = r.get("min_answer_chars", int, d["min_answer_chars"])
    cliches_file = r.get("cliches_file", str)
    extra = _str_list(r, "extra_cliches")
    r.finish()
    if sample_rows < 0 or review_rows < 0 or min_chars < 0:
        r.fail("sample_rows_per_category", "row counts must not be negative")
    return QcSpec(drop=drop, scope=scope, sample_rows_per_category=sample_rows,
                  review_rows_per_category=review_rows, min_answer_chars=min_chars,
                  cliches_file=cliches_file, extra_cliches=tuple(e.lower() for e in extra))


def _persona(data: dict, origin: str) -> PersonaSpec:
    r = _Reader(data, "persona", origin)
    name = r.get("name", str)
    prompt = r.get("system_prompt", str)
    add = r.get("add_system_prompt", str, "never")
    r.finish()
    if name is not None and (not name.strip() or LINE_BREAKS.search(name)):
        r.fail("name", f"{name!r}: the persona's name is one line of text (the identity gate looks for it in answers)")
    if add not in ("never", "missing"):
        r.fail("add_system_prompt", f"{add!r}: choose never (rows as they are) or missing (add the persona's "
                                    "system prompt to rows without a system turn)")
    if add == "missing" and not prompt:
        r.fail("add_system_prompt", "needs persona.system_prompt")
    return PersonaSpec(name=name, system_prompt=prompt, add_system_prompt=add)


# ---- sources on disk -------------------------------------------------------------------------

@dataclass(frozen=True)
class ResolvedSource:
    """One input file (a glob gives several) or one HF dataset, ready to read."""

    spec: SourceSpec
    label: str  # the `_source` value of its rows
    kind: str  # jsonl | json | parquet | csv | hf
    path: str | None  # absolute path of a file; the dataset name or folder for hf
    size: int  # bytes on disk (0 for hf)


def resolve_sources(spec: CorpusSpec, cwd: Path | None = None) -> list[ResolvedSource]:
    """Find every source file. A relative path is looked up in the working directory, then next to
    the spec, then in the repository. A missing file or an empty glob is a UserError."""
    cwd = cwd or Path.cwd()
    bases = [cwd, Path(spec.base_dir)]
    try:
        bases.append(repo_root())
    except UserError:
        pass
    out: list[ResolvedSource] = []
    for src in spec.sources:
        if src.hf is not None:
            out.append(ResolvedSource(src, src.name or f"hf:{src.hf}", "hf", src.hf, 0))
            continue
        assert src.path is not None
        matches: list[tuple[Path, str]] = []
        for base in ([Path("/")] if Path(src.path).is_absolute() else bases):
            pattern = str(base / src.path)
            if glob.has_magic(src.path):
                found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
                if found:
                    root = Path(pattern.split("*")[0].split("?")[0].split("[")[0]).parent
                    prefix = Path(src.path.split("*")[0].split("?")[0].split("[")[0]).parent
                    matches = [(p, str(prefix / p.relative_to(root))) for p in found]
                    break
            elif Path(pattern).is_file():
                matches = [(Path(pattern), src.path)]
                break
        if not matches:
            where = ", ".join(str(b) for b in bases)
            raise UserError(f"{spec.origin}: sources[{src.index}]: {src.path} not found (looked in {where}); "
                            "fix the path or create the file")
        for file, written in matches:
            kind = FILE_KINDS.get(file.suffix.lower())
            if kind is None:
                raise UserError(f"{spec.origin}: sources[{src.index}]: {file}: unsupported file type "
                                f"{file.suffix or '(none)'}; use one of {', '.join(sorted(FILE_KINDS))}")
            label = src.name if (src.name and len(matches) == 1) else (f"{src.name}/{file.name}" if src.name else written)
            out.append(ResolvedSource(src, label, kind, str(file.resolve()), file.stat().st_size))
    labels = [s.label for s in out]
    dupes = sorted({lbl for lbl in labels if labels.count(lbl) > 1})
    if dupes:
        raise UserError(f"{spec.origin}: source {dupes[0]!r} is listed twice; give each source a distinct `name:`")
    return out
