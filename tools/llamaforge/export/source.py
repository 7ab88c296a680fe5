"""What `llamaforge export` exports: the full stage of a run folder, checked before anything is
written. Reading (`load_run_source`) is separate from the judgements (`verdict_problems`,
`adapter_problems`, `parse_repo_id`), which take plain data and do no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..checkpoint import final_output_problem
from ..corpus.manifest import load_manifest, manifest_hash
from ..errors import UserError
from ..files import file_record, read_json, record_problems, yaml_error_line
from ..checkpoint import lora_shape_mismatch, read_safetensors_shapes
from ..planning.catalog import model_from_hf_config
from ..run.report import read_stage_report

STAGE = "full"
STAGE_RECIPE = "stage.yaml"
OUTPUT = "out"                  # the stage's output folder, inside the stage folder


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
    record: list[dict] = field(default_factory=list)       # the output files the run recorded (path, bytes, sha256)
    taken: list[dict] = field(default_factory=list)        # the files the export takes, checked against `record`
    adapter_files: tuple[str, ...] = ()  # the names an adapter export takes (facts/export.yaml)
    notes: list[str] = field(default_factory=list)

    @property
    def is_adapter(self) -> bool:
        return self.adapter_config is not None

    def exported_names(self) -> list[str]:
        """The files of out_dir the export takes, sorted."""
        return sorted(p.name for p in self.out_dir.iterdir() if p.is_file() and exported_file(
            p.name, adapter=self.is_adapter, adapter_files=self.adapter_files))

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
                        "`llamaforge gates` and rerun the full stage")
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
    cannot belong to the base (checkpoint.lora_shape_mismatch), when the base could be read."""
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


def launch_root(stage_dir: Path, report: dict) -> tuple[Path, str | None]:
    """The folder the run was launched from, which the stage config's and the report's relative
    paths (base model, corpus manifest) are relative to, and a note when it had to be guessed.
    The report records the stage recipe as <runs>/<name>/full/stage.yaml relative to it: strip
    those parts from the real path (a run folder copied or renamed beside the original keeps its
    <runs> folder); else the launch folder the report recorded; else the working directory."""
    target = (stage_dir / STAGE_RECIPE).resolve()
    recorded = report.get("stage_recipe")
    rec = Path(recorded) if recorded else None
    cand = None
    if rec is not None and not rec.is_absolute() and 3 <= len(rec.parts) <= len(target.parts) - 1:
        cand = target.parents[len(rec.parts) - 1]
        if (cand / rec).resolve() == target:
            return cand, None
    launched = report.get("launch_dir")
    if isinstance(launched, str) and Path(launched).is_dir():
        return Path(launched), None
    if cand is not None and (cand / rec).resolve().parents[2] == target.parents[2]:
        return cand, None
    return Path.cwd().resolve(), (f"relative paths of the run (base model, corpus manifest) were resolved against the "
                                  f"working directory {Path.cwd().resolve()}: the report does not say where the run "
                                  "was launched from")


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
    data = read_json(path, missing=f"{what} {path} is missing",
                     unreadable=f"{what} {path} is not readable JSON ({{reason}}); the run's output is damaged")
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} is not a JSON object; the run's output is damaged")
    return data


def _check_adapter(src: RunSource) -> None:
    declared = src.adapter_config.get("base_model_name_or_path")
    same = None if not declared else same_model_ref(str(declared), src.base_model, src.root)
    weights = src.out_dir / "adapter_model.safetensors"
    shapes = mismatch = None
    if weights.is_file():
        shapes = read_safetensors_shapes(weights)   # whole and readable: final_output_problem checked it
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


def exported_file(name: str, *, adapter: bool, adapter_files: tuple[str, ...]) -> bool:
    """Whether the export takes the file `name` of the run's output folder: the adapter's files (facts/export.yaml
    adapter_files), or a full model's weights, configs and tokenizer (not the trainer's own state)."""
    if adapter:
        return name in adapter_files
    return (Path(name).suffix in (".safetensors", ".json", ".jinja", ".model")
            and not name.startswith(("trainer_", "training_")))


def recorded_output(report: dict, stage_dir: Path) -> list[dict]:
    """The files (path, bytes, sha256) the run recorded in its output folder when it ended."""
    out = report.get("output")
    files = out.get("files") if isinstance(out, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, dict) and f.get("path") and f.get("sha256") for f in files):
        raise UserError(f"{stage_dir}/report.json records no hashes of the run's weights (a report written before "
                        "llamaforge recorded them): nothing proves the files in out/ are the ones the run trained and "
                        "gated; rerun the full stage")
    return files


def output_problems(src: RunSource, record: list[dict], names: list[str]) -> tuple[list[str], list[dict]]:
    """What is wrong with the files the export would take (`names`, in src.out_dir) against the run's
    record: missing, unrecorded, another size, another sha256. Returns (problems, their records)."""
    recorded_taken = [r for r in record if exported_file(r["path"], adapter=src.is_adapter,
                                                          adapter_files=src.adapter_files)]
    problems = [f"{src.out_dir}/{r['path']} is missing (the run wrote it)" for r in recorded_taken
                if r["path"] not in set(names)]
    sizes = [{"path": n, "bytes": (src.out_dir / n).stat().st_size, "sha256": None} for n in names]
    problems += record_problems(record, sizes, str(src.out_dir))
    if problems:           # no need to hash what is already known to differ
        return problems, []
    actual = [file_record(src.out_dir / n, src.out_dir) for n in names]
    return record_problems(record, actual, str(src.out_dir)), actual


def load_run_source(path: str | Path, *, adapter_files: tuple[str, ...] | None = None) -> RunSource:
    """Read and check a run's full stage. The weights are always the ones inside the run folder given
    (<run>/full/out), never a path its config records elsewhere, and they must be the files the run
    recorded when it ended (present, same size and sha256; the export checks its copies again).
    UserError (one line) for a folder with no full stage, no report, no adapter, damaged or changed
    weights, an adapter for another base, or no corpus manifest."""
    if adapter_files is None:
        from ..recipe.serving import serving_facts

        adapter_files = serving_facts().adapter_files
    run_dir, stage_dir = locate_stage(path)
    report = read_stage_report(stage_dir)
    if report.get("stage") != STAGE:
        raise UserError(f"{stage_dir}/report.json is a {report.get('stage')} stage report, not the full stage's")
    root, root_note = launch_root(stage_dir, report)
    stage_recipe = stage_dir / STAGE_RECIPE
    try:
        config = yaml.safe_load(stage_recipe.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{stage_recipe} (the config the run used) is missing or unreadable ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{stage_recipe} (the config the run used): {yaml_error_line(exc)}") from None
    if not isinstance(config, dict) or not config.get("base_model"):
        raise UserError(f"{stage_recipe} has no base_model; it is not a stage config `llamaforge run` wrote")
    out_dir = stage_dir / OUTPUT
    notes = [root_note] if root_note else []
    recorded_out = config.get("output_dir")
    if recorded_out and _resolve(root, str(recorded_out)).resolve() != out_dir.resolve():
        notes.append(f"the stage config's output_dir is {recorded_out} (this run folder was copied or moved); the "
                     f"export takes the weights in {out_dir}, checked against this run's report")
    if not out_dir.is_dir():
        raise UserError(f"{out_dir} not found: the full stage's output folder is missing; rerun the full stage")
    record = recorded_output(report, stage_dir)
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
    if adapter_config is None or (out_dir / "adapter_model.safetensors").is_file():
        damage = final_output_problem(out_dir, adapter=adapter_config is not None)
        if damage:
            raise UserError(f"the {'adapter' if adapter_config is not None else 'model'} in {out_dir} is damaged "
                            f"({damage}); nothing was exported")

    recorded = (report.get("corpus") or {}).get("manifest")
    if not recorded:
        raise UserError(f"{stage_dir}/report.json records no corpus manifest; rerun the full stage")
    manifest_path = _resolve(root, str(recorded))
    manifest = load_manifest(manifest_path, verify="none")
    changed = manifest_hash(manifest_path) != (report.get("corpus") or {}).get("manifest_hash")

    src = RunSource(
        name=run_dir.resolve().name, run_dir=run_dir, stage_dir=stage_dir, root=root, report=report, config=config,
        out_dir=out_dir, adapter_config=adapter_config, base_model=base_model, base_path=base_path,
        manifest=manifest, manifest_path=manifest_path, manifest_changed=changed, record=record,
        adapter_files=tuple(adapter_files), notes=notes,
    )
    problems, src.taken = output_problems(src, record, src.exported_names())
    if problems:
        raise UserError(f"export refused: {'; '.join(problems)}; the weights changed after the run, so they are not "
                        "the ones its report gated: restore them or rerun the full stage")
    if src.is_adapter:
        _check_adapter(src)
    return src
