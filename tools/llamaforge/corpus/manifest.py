"""The manifest of a built corpus (`manifest.json`, written last): what was built from what, the
hash and row count of every output, the counts that must reconcile, token-length statistics and
the persona. Later stages call `load_manifest` / `manifest_hash` to prove what a run consumed.

There is no creation time in it: the same spec and seed give a byte-identical manifest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import orjson

from ..errors import UserError

BUILDER = "llamaforge.corpus"
BUILDER_VERSION = 1
MANIFEST_NAME = "manifest.json"
REQUIRED_KEYS = ("builder", "name", "spec", "seed", "files", "counts", "lengths", "persona", "categories")


def count_identity_errors(counts: dict) -> list[str]:
    """Every violation of read = kept + duplicates + quarantined + filtered, in the totals, per
    source and per category."""
    problems = []
    groups = [("total", counts)]
    groups += [(f"source {k}", v) for k, v in counts.get("per_source", {}).items()]
    groups += [(f"category {k}", v) for k, v in counts.get("per_category", {}).items()]
    for name, c in groups:
        try:
            dup = c["duplicates"]["exact"] + c["duplicates"]["near"]
            rhs = c["kept"] + dup + c["quarantined"] + c["filtered"]["total"]
            if c["read"] != rhs:
                problems.append(f"{name}: read {c['read']} != kept {c['kept']} + duplicates {dup} + "
                                f"quarantined {c['quarantined']} + filtered {c['filtered']['total']}")
            if c["duplicates"]["total"] != dup:
                problems.append(f"{name}: duplicates total {c['duplicates']['total']} != exact + near {dup}")
            if sum(c["filtered"]["by_reason"].values()) != c["filtered"]["total"]:
                problems.append(f"{name}: filtered reasons do not add up to {c['filtered']['total']}")
        except (KeyError, TypeError) as exc:
            problems.append(f"{name}: counts are incomplete ({exc})")
    for part in ("per_source", "per_category"):
        sub = counts.get(part, {})
        for key in ("read", "kept", "quarantined"):
            total = sum(v.get(key, 0) for v in sub.values())
            if sub and total != counts.get(key):
                problems.append(f"{part}: {key} adds up to {total}, the total says {counts.get(key)}")
    return problems


def check_counts(counts: dict) -> None:
    """Raise (a bug, not a user error) when the counts do not reconcile."""
    problems = count_identity_errors(counts)
    if problems:
        raise AssertionError("corpus counts do not reconcile: " + "; ".join(problems))


def manifest_bytes(manifest: dict) -> bytes:
    check_counts(manifest["counts"])
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def _manifest_file(path: str | Path) -> Path:
    p = Path(path)
    return p / MANIFEST_NAME if p.is_dir() else p


def manifest_hash(path: str | Path) -> str:
    """sha256 of the manifest file (it holds the sha256 of every output, so it names the corpus)."""
    p = _manifest_file(path)
    try:
        return hashlib.sha256(p.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise UserError(f"corpus manifest {p} not found; build the corpus with `llamaforge corpus build SPEC`") from None


def load_manifest(path: str | Path, *, verify: str = "size") -> dict:
    """Read and validate a corpus manifest (a manifest.json or the folder holding it).

    verify: "none" (structure and counts only), "size" (also every output file exists with its
    recorded size), "sha256" (also its recorded hash). Any mismatch is a UserError; the returned
    dict gains `"dir"`: the absolute folder of the corpus."""
    p = _manifest_file(path)
    if verify not in ("none", "size", "sha256"):
        raise ValueError(f"verify={verify!r}")
    try:
        data = orjson.loads(p.read_bytes())
    except FileNotFoundError:
        raise UserError(f"corpus manifest {p} not found; build the corpus with `llamaforge corpus build SPEC`") from None
    except orjson.JSONDecodeError as exc:
        raise UserError(f"corpus manifest {p} is corrupt ({exc}); rebuild the corpus") from None
    if not isinstance(data, dict) or any(k not in data for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(data, dict) or k not in data]
        raise UserError(f"corpus manifest {p} is not a LlamaForge corpus manifest (missing {', '.join(missing)}); rebuild it")
    builder = data["builder"]
    if not isinstance(builder, dict) or builder.get("name") != BUILDER:
        raise UserError(f"corpus manifest {p} was not written by {BUILDER}; rebuild the corpus")
    if builder.get("version") != BUILDER_VERSION:
        raise UserError(f"corpus manifest {p} has builder version {builder.get('version')}, this LlamaForge reads "
                        f"{BUILDER_VERSION}; rebuild the corpus")
    problems = count_identity_errors(data["counts"])
    if problems:
        raise UserError(f"corpus manifest {p} is corrupt: {problems[0]}; rebuild the corpus")
    base = p.parent.resolve()
    for role, entry in _file_entries(data):
        if verify == "none":
            continue
        f = base / entry["path"]
        try:
            size = os.path.getsize(f)
        except OSError:
            raise UserError(f"corpus {base}: {role} file {entry['path']} is missing; rebuild the corpus") from None
        if size != entry["bytes"]:
            raise UserError(f"corpus {base}: {entry['path']} has {size} bytes, the manifest says {entry['bytes']}; "
                            "it changed after the build: rebuild the corpus")
        if verify == "sha256":
            from ..files import sha256_file

            if sha256_file(f) != entry["sha256"]:
                raise UserError(f"corpus {base}: {entry['path']} does not match its sha256 in the manifest; "
                                "it changed after the build: rebuild the corpus")
    data["dir"] = str(base)
    return data


def _file_entries(data: dict) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for role, entry in data["files"].items():
        if not isinstance(entry, dict) or not {"path", "bytes", "sha256"} <= set(entry):
            raise UserError(f"corpus manifest: files.{role} is incomplete; rebuild the corpus")
        out.append((role, entry))
    return out
