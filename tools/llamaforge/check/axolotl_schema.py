"""Axolotl's own config schema, as `check` uses it.

Two sides:
- the caller's side (`run_schema`, `load_snapshot`, `gpu_capabilities`): imports nothing heavy;
  it starts ONE subprocess for any number of configs and talks JSON to it;
- the worker's side (`python -m llamaforge.check.axolotl_schema`): imports Axolotl (~6 s), runs
  `axolotl.utils.config.validate_config` on each config with the target hardware's capabilities,
  and describes the schema as a plain "field table" (`field_table`) that the pure key checks read.

The field table of the pinned Axolotl is also stored in facts/axolotl_schema_<version>.yaml, so the
key checks work with --no-schema or where Axolotl is not installed; a slow test proves that the
stored table equals the live one. Regenerate it with
`python -m llamaforge.check.axolotl_schema --write-snapshot`.

Field table (plain JSON-able data):
    {"format": 1, "axolotl_version": "0.19.0", "root": "AxolotlInputConfig",
     "models": {<model>: {"extra": "ignore|allow|forbid",
                          "fields": {<field>: {"keys": [spellings pydantic accepts],
                                               "deprecated": str|None,
                                               "models": [nested models of dict/list values],
                                               "default": scalar (only when it is one)}}}},
     "deprecated_parameters": {<field>: {"message": str, "raises": bool}},
     "legacy_attention_flags": [[flag, attn_implementation], ...]}   # in Axolotl's priority order
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ..files import write_text_atomic
from ..paths import FACTS_DIR

TABLE_FORMAT = 1
WORKER_MODULE = "llamaforge.check.axolotl_schema"


# ---- caller's side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SchemaError:
    """One error Axolotl's validation raised. `key` is pydantic's location joined with dots
    ("" when a model-level validator rejected the config as a whole)."""

    key: str
    message: str


@dataclass
class SchemaVerdict:
    """Axolotl's verdict on one config; `table` only when the config loads plugins (their fields
    extend the schema); `needs`: GPU-machine packages the validation imported, which are not
    installed here and were given a stand-in (facts/axolotl_rules.yaml `gpu_machine_packages`)."""

    errors: list[SchemaError] = field(default_factory=list)
    table: dict | None = None
    needs: list[str] = field(default_factory=list)


@dataclass
class SchemaRun:
    """The result of one worker run over several configs. `failure` says why nothing could be
    validated (Axolotl missing, the worker crashed or timed out)."""

    axolotl_version: str | None = None
    table: dict | None = None
    verdicts: list[SchemaVerdict] = field(default_factory=list)
    failure: str | None = None


def installed_version(package: str) -> str | None:
    """The installed distribution's version without a local build tag (`2.13.0+cpu` -> `2.13.0`)."""
    try:
        return importlib.metadata.version(package).split("+", 1)[0]
    except importlib.metadata.PackageNotFoundError:
        return None


def axolotl_available() -> bool:
    return importlib.util.find_spec("axolotl") is not None


def gpu_capabilities(
    *, bf16: bool, compute_capability: str, world_size: int, nodes: int,
    tf32_min_cc: float, fp8_min_cc: float,
) -> dict:
    """The `capabilities` dict Axolotl's CLI builds from the local GPU (axolotl/cli/config.py
    gpu_capabilities), built instead from the target hardware. Pure."""
    major, minor = (int(part) for part in compute_capability.split("."))
    cc = major + minor / 10
    return {
        "bf16": bool(bf16),
        "tf32": cc >= tf32_min_cc,
        "fp8": cc >= fp8_min_cc,
        "n_gpu": int(world_size),
        "n_node": int(nodes),
        "compute_capability": f"sm_{major}{minor}",
    }


def run_schema(requests: list[dict], *, want_table: bool = True, timeout_s: int = 600) -> SchemaRun:
    """Validate several configs with Axolotl in one subprocess.

    Each request is `{"config": dict, "capabilities": dict|None, "env_capabilities": dict|None}`.
    The worker hides the local GPUs (CUDA_VISIBLE_DEVICES=""), so the verdict depends on the
    target hardware passed in, not on the machine that runs the check."""
    if not axolotl_available():
        return SchemaRun(failure="Axolotl is not installed in this environment")
    payload = json.dumps({"want_table": want_table, "configs": requests}, default=str)
    env = dict(
        os.environ, AXOLOTL_DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false",
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-m", WORKER_MODULE], input=payload, capture_output=True, text=True,
            env=env, timeout=timeout_s, check=False,
        )
    except subprocess.TimeoutExpired:
        return SchemaRun(failure=f"Axolotl's validation did not answer within {timeout_s} s")
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
        return SchemaRun(failure=f"Axolotl's validation failed to run (exit {proc.returncode}): {tail[0]}")
    data = json.loads(proc.stdout)
    return SchemaRun(
        axolotl_version=data.get("axolotl_version"),
        table=data.get("table"),
        verdicts=[
            SchemaVerdict(
                errors=[SchemaError(e["key"], e["message"]) for e in item["errors"]],
                table=item.get("table"),
                needs=list(item.get("needs") or []),
            )
            for item in data["results"]
        ],
    )


def snapshot_path(version: str) -> Path:
    return FACTS_DIR / f"axolotl_schema_{version}.yaml"


@lru_cache(maxsize=4)
def load_snapshot(version: str) -> dict | None:
    """The stored field table of Axolotl `version`, or None when none is stored."""
    path = snapshot_path(version)
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def write_snapshot(table: dict) -> Path:
    """Store a field table (atomically) as the snapshot of its Axolotl version."""
    path = snapshot_path(table["axolotl_version"])
    header = (
        f"# Axolotl {table['axolotl_version']}'s config schema as a field table, generated by\n"
        "# `python -m llamaforge.check.axolotl_schema --write-snapshot`; do not edit by hand.\n"
        "# tests/check/test_axolotl_schema.py proves it equals the live schema.\n"
    )
    text = header + yaml.safe_dump(table, sort_keys=True, width=100, allow_unicode=True)
    write_text_atomic(path, text)
    load_snapshot.cache_clear()
    return path


# ---- worker's side: describing a pydantic schema -------------------------------------------------


def _nested_models(annotation: Any) -> list[type]:
    """The pydantic models inside an annotation (through Optional, unions, list, Annotated)."""
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type] = []
    for arg in typing.get_args(annotation):
        for model in _nested_models(arg):
            if model not in found:
                found.append(model)
    return found


def _accepted_keys(name: str, info: Any, by_name: bool) -> list[str]:
    """The spellings pydantic accepts for one field: its validation alias(es) or alias, and its
    own name where the model validates by name (or has no alias at all)."""
    from pydantic import AliasChoices, AliasPath

    keys: list[str] = []
    alias = info.validation_alias if info.validation_alias is not None else info.alias
    choices = alias.choices if isinstance(alias, AliasChoices) else ([alias] if alias is not None else [])
    for choice in choices:
        if isinstance(choice, AliasPath):
            choice = choice.path[0]
        if isinstance(choice, str) and choice not in keys:
            keys.append(choice)
    if (by_name or not keys) and name not in keys:
        keys.append(name)
    return keys


def _scalar_default(info: Any) -> tuple[bool, Any]:
    from enum import Enum

    from pydantic_core import PydanticUndefined

    value = info.default
    if value is PydanticUndefined or info.default_factory is not None:
        return False, None
    if isinstance(value, Enum):
        value = value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return True, value
    return False, None


def _model_key(model: type, names: dict[type, str]) -> str:
    if model not in names:
        short = model.__name__
        taken = set(names.values())
        names[model] = short if short not in taken else f"{model.__module__}.{model.__qualname__}"
    return names[model]


def field_table(root: type, *, version: str) -> dict:
    """Describe a pydantic model and every model nested in it as a field table (see the module
    docstring). Needs pydantic only, not Axolotl."""
    names: dict[type, str] = {}
    models: dict[str, dict] = {}
    todo = [root]
    while todo:
        model = todo.pop()
        key = _model_key(model, names)
        if key in models:
            continue
        config = model.model_config
        by_name = bool(config.get("validate_by_name") or config.get("populate_by_name"))
        fields: dict[str, dict] = {}
        for name, info in model.model_fields.items():
            nested = _nested_models(info.annotation)
            entry: dict[str, Any] = {
                "keys": _accepted_keys(name, info, by_name),
                "deprecated": str(info.deprecated) if info.deprecated else None,
                "models": [_model_key(m, names) for m in nested],
            }
            has_default, default = _scalar_default(info)
            if has_default:
                entry["default"] = default
            fields[name] = entry
            todo.extend(m for m in nested if _model_key(m, names) not in models)
        models[key] = {"extra": str(config.get("extra") or "ignore"), "fields": fields}
    return {
        "format": TABLE_FORMAT,
        "axolotl_version": version,
        "root": _model_key(root, names),
        "models": models,
        "deprecated_parameters": {},
        "legacy_attention_flags": [],
    }


def _sample_value(annotation: Any) -> Any:
    """A truthy value of the annotation's type, to make a deprecation validator speak."""
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    kind = args[0]
    return {bool: True, int: 1, float: 0.5, str: "x"}.get(kind, {"x": 1})


def _deprecation_messages(model: type, module: Any) -> dict[str, dict]:
    """Run each field validator of Axolotl's DeprecatedParameters with a truthy value and record
    what it says: a logged warning (still accepted) or a raised exception (removed)."""
    from pydantic import ValidationError

    said: list[str] = []

    class _Recorder:
        def warning(self, msg, *args, **_kw):
            said.append(str(msg) % args if args else str(msg))

        warning_once = warning
        info = debug = warning

    out: dict[str, dict] = {}
    original = module.LOG
    module.LOG = _Recorder()
    try:
        for name, info in model.model_fields.items():
            said.clear()
            raises = False
            try:
                model.model_validate({name: _sample_value(info.annotation)})
            except ValidationError as exc:  # a ValueError, wrapped by pydantic
                raises = True
                said.append(_clean_message(exc.errors()[0]["msg"]))
            except Exception as exc:  # DeprecationWarning passes through pydantic unwrapped
                raises = True
                said.append(str(exc))
            message = said[-1] if said else f"`{name}` is deprecated"
            out[name] = {"message": message.strip(), "raises": raises}
    finally:
        module.LOG = original
    return out


def axolotl_field_table(input_config: type | None = None) -> dict:
    """The field table of the installed Axolotl (optionally of a plugin-merged input config)."""
    from axolotl.utils.schemas import deprecated as deprecated_module
    from axolotl.utils.schemas.config import AxolotlInputConfig
    from axolotl.utils.schemas.enums import LEGACY_ATTN_FLAG_TO_IMPL

    table = field_table(input_config or AxolotlInputConfig, version=installed_version("axolotl") or "?")
    table["deprecated_parameters"] = _deprecation_messages(
        deprecated_module.DeprecatedParameters, deprecated_module
    )
    table["legacy_attention_flags"] = [[flag, impl] for flag, impl in LEGACY_ATTN_FLAG_TO_IMPL.items()]
    return table


def _clean_message(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


DATASET_MODELS = ("SFTDataset", "DPODataset", "KTODataset", "SyntheticDataset", "StepwiseSupervisedDataset")


class _StandIns:
    """A meta-path finder that answers imports of the named GPU-machine packages, when they are not
    installed here, with an empty module, and records which were asked for. Axolotl's validation
    only imports them to check they are there (validation.py check_context_parallel_size)."""

    def __init__(self, names: list[str]) -> None:
        self.names = {n for n in names if importlib.util.find_spec(n) is None}
        self.asked: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name not in self.names:
            return None
        if name not in self.asked:
            self.asked.append(name)
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__doc__ = "stand-in: installed on the training machine, not here"

    def __enter__(self):
        sys.meta_path.insert(0, self)
        return self

    def __exit__(self, *exc):
        sys.meta_path.remove(self)
        for name in self.names:
            sys.modules.pop(name, None)


def _validate_one(request: dict) -> dict:
    """Axolotl's verdict on one config, as JSON-able data."""
    from pydantic import ValidationError

    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    cfg = DictDefault(request["config"])
    result: dict[str, Any] = {"errors": [], "table": None, "needs": []}
    with _StandIns(request.get("gpu_packages") or []) as stand_ins:
        _run_validation(request, cfg, result, validate_config, ValidationError)
    result["needs"] = stand_ins.asked
    return result


_PLUGIN_TABLES: dict[tuple[str, ...], dict] = {}


def _run_validation(request: dict, cfg: Any, result: dict, validate_config: Any, ValidationError: type) -> None:
    try:
        if cfg.get("plugins"):
            from axolotl.integrations.base import PluginManager
            from axolotl.integrations.config import merge_input_args
            from axolotl.utils.config import prepare_plugins

            PluginManager.get_instance().plugins.clear()  # the manager is a process singleton
            prepare_plugins(cfg)
            plugins = tuple(str(p) for p in cfg.get("plugins"))
            if plugins not in _PLUGIN_TABLES:  # one table per set of plugins: configs share them
                _PLUGIN_TABLES[plugins] = axolotl_field_table(merge_input_args()[1])
            result["table"] = _PLUGIN_TABLES[plugins]
        validate_config(
            cfg, capabilities=request.get("capabilities"), env_capabilities=request.get("env_capabilities")
        )
    except ValidationError as exc:
        prefix = "datasets" if exc.title in DATASET_MODELS else ""
        for err in exc.errors():
            loc = ".".join(str(p) for p in (prefix, *err.get("loc", ())) if p != "")
            result["errors"].append({"key": loc, "message": _clean_message(err.get("msg", str(exc)))})
    except Exception as exc:  # Axolotl's validators also raise DeprecationWarning, NotImplementedError…
        result["errors"].append({"key": "", "message": f"{type(exc).__name__}: {exc}".strip()})


def main(argv: list[str] | None = None) -> int:
    """The worker: a JSON request on stdin, one JSON answer on stdout. Anything Axolotl prints
    goes to stderr so that stdout stays one JSON document."""
    args = sys.argv[1:] if argv is None else argv
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if "--write-snapshot" in args:
        path = write_snapshot(axolotl_field_table())
        print(f"wrote {path}", file=sys.stderr)
        return 0
    request = json.load(sys.stdin)
    results = [_validate_one(item) for item in request.get("configs", [])]
    answer = {
        "axolotl_version": installed_version("axolotl"),
        "table": axolotl_field_table() if request.get("want_table") else None,
        "results": results,
    }
    with os.fdopen(answer_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(answer, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
