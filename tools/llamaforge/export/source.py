"""What `llamaforge export` exports: the full stage of a run folder, checked before anything is
written. Reading (`load_run_source`) is separate from the judgements (`verdict_problems`,
`adapter_problems`, `parse_repo_id`), which take plain data and do no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import UserError

STAGE = "full"
STAGE_RECIPE = "stage.yaml"


@dataclass
class RunSource:
    """A run's full stage, as recorded: its report, the exact config that ran, the adapter (or
    model) it wrote, the base model and the corpus manifest. Relative paths in the report and the
    config are resolved against `root`, the folder the run was launched from."""

    name: str
    run_dir: Path
    stage_dir: Path
    root: Path
    report: dict
    config: dict
    out_dir: Path
    adapter_config: dict | None          # None: a full fine-tune (out_dir holds a model)
    base_model: str                      # as the stage config names it
    base_path: Path | None               # its local folder, when it is one
    manifest: dict
    manifest_path: Path
    manifest_changed: bool               # the manifest's sha256 differs from the one the run consumed
    notes: list[str] = field(default_factory=list)

    @property
    def is_adapter(self) -> bool:
        return self.adapter_config is not None

    @property
    def sequence_len(self) -> int:
        return int(self.config.get("sequence_len") or 2048)

    @property
    def lora_rank(self) -> int | None:
        return int(self.adapter_config["r"]) if self.adapter_config and self.adapter_config.get("r") else None

    @property
    def persona(self) -> dict:
        p = self.manifest.get("persona")
        return p if isinstance(p, dict) else {}


# ---- pure judgements -----------------------------------------------------------------------

_REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")


def parse_repo_id(text: str) -> str:
    """A Hugging Face repo id `owner/name` (the Hub's rules: letters, digits, `-`, `_`, `.`; no `--`
    or `..`; no leading or trailing `-`/`.`; the name at most 96 characters)."""
    parts = text.split("/")
    ok = (len(parts) == 2 and all(_REPO_PART.match(p) and "--" not in p and ".." not in p for p in parts)
          and len(parts[1]) <= 96)
    if not ok:
        raise UserError(f"--push {text!r} is not a Hugging Face repo id; write owner/name, e.g. your-username/leviathan-8b-v1")
    return text


def verdict_problems(report: dict) -> list[str]:
    """Why a full stage's report does not allow an export (empty when it does): failed health
    checks, failed or missing gates."""
    problems = []
    health = report.get("health") or {}
    if not health.get("passed"):
        failed = [c.get("name", "?") for c in health.get("checks", []) if c.get("status") != "pass"]
        problems.append(f"the full run's health checks did not pass ({', '.join(failed) or 'no checks'})")
    gates = report.get("gates")
    if not isinstance(gates, dict):
        problems.append("no gate verdict is recorded (the full run ran with --no-gates?): gate the model with "
                        "`llamaforge eval` and rerun the full stage")
    elif gates.get("passed") is not True:
        why = (f"failed: {', '.join(gates['failed'])}" if gates.get("failed")
               else gates.get("skipped") or gates.get("error") or "no gate passed")
        problems.append(f"the gates did not pass ({why})")
    if report.get("passed") is not True and not problems:
        problems.append("the full run's report says it did not pass")
    return problems


def _lora_tensor_ranks(shapes: dict[str, list[int]]) -> set[int]:
    ranks = set()
    for key, shape in shapes.items():
        if len(shape) != 2:
            continue
        if ".lora_A." in key:
            ranks.add(int(shape[0]))
        elif ".lora_B." in key:
            ranks.add(int(shape[1]))
    return ranks


def adapter_problems(adapter_config: dict, stage_config: dict, *, same_base: bool | None,
                     shapes: dict[str, list[int]] | None, shape_mismatch: str | None) -> list[str]:
    """Why an adapter is not the one this run trained on this base (empty when it is).
    same_base: whether adapter_config.json's base is the stage's base_model (None: it names none);
    shapes: the adapter tensors' shapes (None: unreadable); shape_mismatch: the first tensor that
    cannot belong to the base (gates.runner.lora_shape_mismatch), when the base could be read."""
    problems = []
    declared = adapter_config.get("base_model_name_or_path")
    base = stage_config.get("base_model")
    if same_base is None:
        problems.append("adapter_config.json names no base model (base_model_name_or_path)")
    elif not same_base:
        problems.append(f"the adapter was trained on {declared!r}, but the run's stage config has base_model {base!r}")
    if shape_mismatch:
        problems.append(f"its weights do not fit the base {base!r}: {shape_mismatch}")
    r, alpha = adapter_config.get("r"), adapter_config.get("lora_alpha")
    for key, got in (("lora_r", r), ("lora_alpha", alpha)):
        want = stage_config.get(key)
        if want is not None and got is not None and float(want) != float(got):
            problems.append(f"adapter_config.json has {'r' if key == 'lora_r' else key}={got}, the run trained "
                            f"{key}={want}")
    if shapes is not None and r and not adapter_config.get("rank_pattern"):
        ranks = _lora_tensor_ranks(shapes)
        if not ranks:
            problems.append("adapter_model.safetensors holds no LoRA A/B tensors")
        elif ranks != {int(r)}:
            problems.append(f"its LoRA tensors have rank {', '.join(map(str, sorted(ranks)))}, "
                            f"adapter_config.json says r={r}")
    return problems


# ---- reading -------------------------------------------------------------------------------


def locate_stage(path: str | Path) -> tuple[Path, Path]:
    """(run folder, full-stage folder) for `runs/<name>` or `runs/<name>/full`."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"run folder {p} not found; give runs/<name> (a folder `llamaforge run` wrote)")
    if p.name == STAGE:
        return p.parent, p
    if (p / STAGE).is_dir():
        return p, p / STAGE
    if p.name == "validate" or (p / "validate").is_dir():
        raise UserError(f"{p} has no full stage: export takes a model from `llamaforge run RECIPE --stage full`, "
                        "not from the validation run")
    raise UserError(f"{p} is not a run folder (no full/ stage inside); give runs/<name>")


def launch_root(stage_dir: Path, recorded_stage_recipe: str | None) -> Path:
    """The folder the run was launched from: the report records the stage recipe's path relative
    to it (runs/<name>/full/stage.yaml), so strip those parts from the real path."""
    target = (stage_dir / STAGE_RECIPE).resolve()
    rec = Path(recorded_stage_recipe) if recorded_stage_recipe else None
    if rec is not None and not rec.is_absolute() and len(rec.parts) <= len(target.parts) - 1:
        cand = target.parents[len(rec.parts) - 1]
        if (cand / rec).resolve() == target:
            return cand
    return Path.cwd().resolve()


def _resolve(root: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else root / p


def same_model_ref(a: str, b: str, root: Path) -> bool:
    """Whether two model references (paths relative to `root`, absolute paths or Hub ids) name the same model."""
    if a.rstrip("/") == b.rstrip("/"):
        return True
    pa, pb = _resolve(root, a), _resolve(root, b)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _read_json(path: Path, what: str) -> dict:
    from ..run.metrics import read_json

    data = read_json(path, missing=f"{what} {path} is missing",
                     unreadable=f"{what} {path} is not readable JSON ({{reason}}); the run's output is damaged")
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} is not a JSON object; the run's output is damaged")
    return data


def _check_adapter(src: RunSource) -> None:
    from ..catalog import model_from_hf_config
    from ..gates.runner import lora_shape_mismatch, read_safetensors_shapes

    declared = src.adapter_config.get("base_model_name_or_path")
    same = None if not declared else same_model_ref(str(declared), src.base_model, src.root)
    weights = src.out_dir / "adapter_model.safetensors"
    shapes = mismatch = None
    if weights.is_file():
        try:
            shapes = read_safetensors_shapes(weights)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"{weights} is not a readable safetensors file ({exc}); the run's output is damaged") from None
        if src.base_path is not None and (src.base_path / "config.json").is_file():
            try:
                spec = model_from_hf_config(src.base_path / "config.json")
            except UserError:
                spec = None
            if spec is not None:
                mismatch = lora_shape_mismatch(shapes, spec.linear_shapes(), spec.num_layers)
    else:
        src.notes.append("the adapter is a .bin file: its tensor shapes were not checked before loading")
    problems = adapter_problems(src.adapter_config, src.config, same_base=same, shapes=shapes, shape_mismatch=mismatch)
    if problems:
        raise UserError(f"the adapter in {src.out_dir} is not this run's adapter for its base: {'; '.join(problems)}")


def load_run_source(path: str | Path) -> RunSource:
    """Read and check a run's full stage. UserError (one line) for a folder with no full stage,
    no report, no adapter, an adapter for another base, or no corpus manifest."""
    from ..corpus.manifest import load_manifest, manifest_hash
    from ..run.report import read_stage_report

    run_dir, stage_dir = locate_stage(path)
    report = read_stage_report(stage_dir)
    if report.get("stage") != STAGE:
        raise UserError(f"{stage_dir}/report.json is a {report.get('stage')} stage report, not the full stage's")
    root = launch_root(stage_dir, report.get("stage_recipe"))
    stage_recipe = stage_dir / STAGE_RECIPE
    try:
        config = yaml.safe_load(stage_recipe.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{stage_recipe} (the config the run used) is missing or unreadable ({exc})") from None
    if not isinstance(config, dict) or not config.get("base_model"):
        raise UserError(f"{stage_recipe} has no base_model; it is not a stage config `llamaforge run` wrote")
    out_dir = _resolve(root, str(config.get("output_dir") or stage_dir / "out"))
    if not out_dir.is_dir():
        out_dir = stage_dir / "out"
    base_model = str(config["base_model"])
    base_path = _resolve(root, base_model)
    base_path = base_path if base_path.is_dir() else None

    adapter_config = None
    if config.get("adapter"):
        cfg_path = out_dir / "adapter_config.json"
        if not cfg_path.is_file():
            raise UserError(f"{out_dir} holds no adapter (adapter_config.json missing): the full run did not finish "
                            f"saving; rerun it or resume it with `llamaforge run ... --stage full --resume`")
        if not any((out_dir / n).is_file() for n in ("adapter_model.safetensors", "adapter_model.bin")):
            raise UserError(f"{out_dir} has adapter_config.json but no adapter weights (adapter_model.safetensors)")
        adapter_config = _read_json(cfg_path, "adapter config")
    elif not (out_dir / "config.json").is_file() or not any(out_dir.glob("*.safetensors")):
        raise UserError(f"{out_dir} holds no adapter and no model (config.json + *.safetensors): nothing to export")

    recorded = (report.get("corpus") or {}).get("manifest")
    if not recorded:
        raise UserError(f"{stage_dir}/report.json records no corpus manifest; rerun the full stage")
    manifest_path = _resolve(root, str(recorded))
    manifest = load_manifest(manifest_path, verify="none")
    changed = manifest_hash(manifest_path) != (report.get("corpus") or {}).get("manifest_hash")

    src = RunSource(
        name=run_dir.resolve().name, run_dir=run_dir, stage_dir=stage_dir, root=root, report=report, config=config,
        out_dir=out_dir, adapter_config=adapter_config, base_model=base_model, base_path=base_path,
        manifest=manifest, manifest_path=manifest_path, manifest_changed=changed,
    )
    if src.is_adapter:
        _check_adapter(src)
    return src
