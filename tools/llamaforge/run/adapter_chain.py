"""A stage that continues from an earlier stage's adapter (Axolotl's `lora_model_dir`): which
adapter it starts from, its sha256, and the chain of stages that made it (each one's recipe, corpus
and its own start), read from the stage report `llamaforge run` wrote beside that adapter. Seed
000's chain SFT stage 1 -> SFT stage 2 -> DPO is then one record in the last stage's report."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..files import sha256_file

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MAX_DEPTH = 16   # a chain longer than this is a loop of reports pointing at each other


def adapter_sha256(folder: Path) -> tuple[str, str]:
    """(file name, sha256) of the adapter weights in `folder`; UserError when there are none."""
    for name in ADAPTER_WEIGHTS:
        path = folder / name
        if path.is_file():
            return name, sha256_file(path)
    raise UserError(f"lora_model_dir {folder}: no adapter weights ({' or '.join(ADAPTER_WEIGHTS)}) there; "
                    "point it at the output folder of the stage it continues (runs/NAME/full/out)")


def check_start_adapter(config: dict, where: str) -> None:
    """UserError, before any compute, when `lora_model_dir` names no adapter or one made for another
    base, or when a preference stage names one: Axolotl 0.19 builds a DPO/IPO/KTO LoRA from the
    adapter's config only (loaders/model.py `_load_adapters`, config_only=True), so the earlier
    adapter's weights would be silently dropped, and its reference model would be the bare base."""
    folder = config.get("lora_model_dir")
    if not folder:
        return
    if config.get("rl"):
        raise UserError(
            f"{where}: `lora_model_dir` with `rl: {config['rl']}` — Axolotl 0.19 starts a preference stage from a "
            "fresh adapter (it reads only the earlier adapter's config) and would use the bare base as the reference; "
            "merge the earlier stage (`llamaforge export runs/NAME --merge`) and set base_model to its merged/ "
            "folder instead (docs/preference.md)")
    folder = Path(str(folder))
    adapter_sha256(folder)
    try:
        made_for = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{where}: lora_model_dir {folder} has no readable adapter_config.json") from None
    base = str(config.get("base_model") or "")
    if made_for and base and Path(made_for).name != Path(base).name and made_for != base:
        raise UserError(f"{where}: lora_model_dir {folder} is an adapter of {made_for}, but base_model is {base}; "
                        "an adapter only continues on the base it was trained on")


def _stage_report(folder: Path) -> dict | None:
    """The report of the stage whose output folder `folder` is (runs/NAME/STAGE/out -> ../report.json)."""
    path = folder.parent / "report.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def chain_record(folder: Path, _depth: int = 0) -> dict:
    """{"adapter", "file", "sha256", "stage": {name, stage, recipe, corpus, passed, preference} | None,
    "starts_from": the same for the stage before, or None}."""
    name, digest = adapter_sha256(folder)
    record: dict = {"adapter": str(folder), "file": name, "sha256": digest, "stage": None, "starts_from": None}
    report = _stage_report(folder)
    if report is None:
        record["note"] = "no stage report beside it: made outside `llamaforge run`, its corpus is not recorded"
        return record
    files = (report.get("output") or {}).get("files") or []
    recorded = next((f.get("sha256") for f in files if isinstance(f, dict) and f.get("path") == name), None)
    if recorded and recorded != digest:
        record["note"] = "the adapter changed since its stage report was written (sha256 differs)"
    record["stage"] = {
        "name": report.get("name"), "stage": report.get("stage"),
        "recipe": report.get("recipe"), "corpus": report.get("corpus"),
        "passed": report.get("passed"), "preference": report.get("preference"),
    }
    before = report.get("starts_from")
    if isinstance(before, dict) and before.get("adapter") and _depth < MAX_DEPTH:
        earlier = Path(before["adapter"])
        record["starts_from"] = chain_record(earlier, _depth + 1) if earlier.is_dir() else before
    return record


def merged_base_record(base_model: str) -> dict | None:
    """When base_model is the merged/ folder of a `llamaforge export --merge`, the stage it was
    merged from and that stage's own chain: {"merged_model", "export", "adapter", "sha256", "stage",
    "starts_from"}. None for any other base (a hub id, a plain folder)."""
    folder = Path(base_model)
    record_path = folder.parent / "export_report.json"
    if not folder.is_dir() or not record_path.is_file():
        return None
    try:
        export = json.loads(record_path.read_text(encoding="utf-8"))
        stage = json.loads(Path(export["stage_report"]).read_text(encoding="utf-8"))
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return {"merged_model": str(folder), "export": str(record_path), "stage": None,
                "note": "its export record or the stage report it names is unreadable"}
    adapter = next((f for f in export.get("files") or [] if isinstance(f, dict)
                    and str(f.get("path", "")).endswith(ADAPTER_WEIGHTS)), {})
    return {
        "merged_model": str(folder), "export": str(record_path),
        "adapter": adapter.get("path"), "sha256": adapter.get("sha256"),
        "stage": {"name": stage.get("name"), "stage": stage.get("stage"), "recipe": stage.get("recipe"),
                  "corpus": stage.get("corpus"), "passed": stage.get("passed"), "preference": stage.get("preference")},
        "starts_from": stage.get("starts_from"),
    }


def chain_lines(record: dict | None) -> list[str]:
    """Markdown lines: the chain, newest first."""
    lines = []
    while isinstance(record, dict):
        stage = record.get("stage") or {}
        recipe = (stage.get("recipe") or {}).get("path", "?")
        corpus = (stage.get("corpus") or {}).get("manifest", "?")
        what = f"stage `{stage.get('name')}/{stage.get('stage')}` of {recipe}, corpus {corpus}" if stage else "no stage report"
        merged = f"merged model {record['merged_model']} from " if record.get("merged_model") else ""
        lines.append(f"- {merged}adapter {record.get('adapter')} (sha256 {str(record.get('sha256'))[:16]}…): {what}"
                     + (f"; {record['note']}" if record.get("note") else ""))
        record = record.get("starts_from")
    return lines
