"""A saved adapter or model, read without torch: the safetensors headers (dtype, shape and offsets of each
tensor, checked against the file size), the adapter's LoRA pairs against its config, the facts a stage's
health gate judges (`inspect_checkpoint`), and whether a LoRA adapter's tensor shapes fit a base
(`lora_shape_mismatch`). Used by run/ (health), gates/ and export/: a final model that cannot load is
refused before any work."""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from .files import read_json


@dataclass
class CheckpointFacts:
    written: bool
    path: str | None
    loads: bool | None
    detail: str


# bytes per element of the safetensors dtypes
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_HEADER_MAX = 100 * 1024 * 1024


class _BadFile(Exception):
    pass


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """The tensor table of a .safetensors file ({name: {"dtype", "shape", "data_offsets"}}), after
    checking that the header parses and that the tensors tile the data exactly (a truncated or
    overwritten file fails). Raises _BadFile with the reason."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise _BadFile(f"{path.name}: {size} bytes, shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n == 0 or n > _HEADER_MAX or n > size - 8:
                raise _BadFile(f"{path.name}: header length {n} does not fit the {size}-byte file")
            raw = fh.read(n)
    except OSError as exc:
        raise _BadFile(f"{path.name}: cannot read ({exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _BadFile(f"{path.name}: the header is not JSON") from None
    if not isinstance(header, dict):
        raise _BadFile(f"{path.name}: the header is not a JSON object")
    header.pop("__metadata__", None)
    data_len = size - 8 - n
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or info.get("dtype") not in _DTYPE_BYTES:
            raise _BadFile(f"{path.name}: tensor {name} has no known dtype")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2):
            raise _BadFile(f"{path.name}: tensor {name} has a malformed shape or offsets")
        begin, end = offsets
        if math.prod(shape) * _DTYPE_BYTES[info["dtype"]] != end - begin:
            raise _BadFile(f"{path.name}: tensor {name} {info['dtype']}{shape} does not match its {end - begin} bytes")
        spans.append((begin, end, name))
    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin != position:
            raise _BadFile(f"{path.name}: tensor {name} starts at byte {begin}, expected {position} (holes or overlap)")
        position = end
    if position != data_len:
        raise _BadFile(f"{path.name}: tensors cover {position} bytes but the file holds {data_len} (truncated?)")
    return header


def _read_json(path: Path) -> dict:
    data = read_json(path, missing=f"{path.name} is missing", unreadable=f"{path.name} is not readable JSON",
                     error=_BadFile)
    if not isinstance(data, dict):
        raise _BadFile(f"{path.name} is not a JSON object")
    return data


_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


def verify_adapter(folder: Path) -> str:
    """Check a PEFT LoRA adapter folder; return a one-line description or raise _BadFile."""
    config = _read_json(folder / "adapter_config.json")
    header = read_safetensors_header(folder / "adapter_model.safetensors")
    if str(config.get("peft_type", "")).upper() != "LORA":
        return f"{config.get('peft_type')} adapter, {len(header)} tensors (shapes not checked: not LoRA)"
    r = config.get("r")
    if not isinstance(r, int) or r < 1:
        raise _BadFile(f"adapter_config.json: r={r!r} is not a positive rank")
    ranks = {r, *(v for v in (config.get("rank_pattern") or {}).values() if isinstance(v, int))}
    modules: dict[str, dict[str, list[int]]] = {}
    for name, info in header.items():
        m = _LORA_KEY.match(name)
        if m:
            modules.setdefault(m.group("module"), {})[m.group("ab")] = info["shape"]
    if not modules:
        raise _BadFile("adapter_model.safetensors holds no lora_A/lora_B tensors")
    for module, pair in sorted(modules.items()):
        if set(pair) != {"A", "B"}:
            raise _BadFile(f"{module}: has lora_{''.join(pair)} without its pair")
        a, b = pair["A"], pair["B"]
        if len(a) != 2 or len(b) != 2 or a[0] != b[1] or a[0] not in ranks or min(a + b) == 0:
            raise _BadFile(f"{module}: lora_A {a}, lora_B {b} do not match rank r={r} "
                           "(empty tensors: a ZeRO-3 save without stage3_gather_16bit_weights_on_model_save?)")
    targets = config.get("target_modules")
    if isinstance(targets, list):
        missing = [tm for tm in targets if not any(m.rsplit(".", 1)[-1] == tm for m in modules)]
        if missing:
            raise _BadFile(f"target modules {missing} of adapter_config.json have no LoRA tensors")
    return f"LoRA r={r}, {len(modules)} adapted modules, {len(header)} tensors"


def verify_model(folder: Path) -> str:
    """Check a full HF model folder (config.json + safetensors, single or sharded)."""
    config = _read_json(folder / "config.json")
    if not (config.get("model_type") or config.get("architectures")):
        raise _BadFile("config.json names no model_type or architectures")
    index_path = folder / "model.safetensors.index.json"
    if index_path.exists():
        weight_map = _read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise _BadFile("model.safetensors.index.json has no weight_map")
        tensors: dict[str, dict] = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(read_safetensors_header(folder / shard))
        missing = [name for name in weight_map if name not in tensors]
        if missing:
            raise _BadFile(f"{len(missing)} tensors of the index are in no shard, e.g. {missing[0]}")
    else:
        tensors = read_safetensors_header(folder / "model.safetensors")
    vocab, hidden = config.get("vocab_size"), config.get("hidden_size")
    for name, info in tensors.items():
        if name.endswith("embed_tokens.weight") and vocab and hidden and info["shape"] != [vocab, hidden]:
            raise _BadFile(f"{name} has shape {info['shape']}, config.json says [{vocab}, {hidden}]")
    return f"{config.get('model_type') or config['architectures'][0]} model, {len(tensors)} tensors"


def final_output_problem(folder: Path, *, adapter: bool) -> str | None:
    """Why the adapter (adapter=True) or full model saved in `folder` cannot load: a config that is
    not a JSON object, a safetensors file that is truncated or inconsistent with its header (None
    when it loads). Whether an adapter fits its run is the caller's question."""
    folder = Path(folder)
    try:
        if adapter:
            _read_json(folder / "adapter_config.json")
            read_safetensors_header(folder / "adapter_model.safetensors")
        else:
            verify_model(folder)
    except _BadFile as exc:
        return str(exc)
    return None


def _kind_of(folder: Path) -> str | None:
    if (folder / "adapter_model.safetensors").exists():
        return "adapter"
    if (folder / "model.safetensors").exists() or (folder / "model.safetensors.index.json").exists():
        return "model"
    if (folder / "adapter_model.bin").exists() or (folder / "pytorch_model.bin").exists():
        return "bin"
    return None


def inspect_checkpoint(output_dir: Path) -> CheckpointFacts:
    """Find the checkpoint-N/ folders and the final adapter or model in `output_dir`, and prove
    the final one (else the latest checkpoint) and the latest checkpoint load: their JSON
    configs parse, their safetensors headers are whole and consistent with the config (LoRA
    pairs of rank r for every target module; embeddings of the config's size)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return CheckpointFacts(False, None, None, f"output folder {output_dir} does not exist")
    numbered = sorted((int(p.name.removeprefix("checkpoint-")), p) for p in output_dir.glob("checkpoint-*")
                      if p.is_dir() and p.name.removeprefix("checkpoint-").isdigit())
    candidates = [output_dir] if _kind_of(output_dir) else []
    saved = [p for _, p in numbered if _kind_of(p)]
    if saved:
        candidates.append(saved[-1])
    found = f"checkpoints: {', '.join(p.name for _, p in numbered) or 'none'}"
    if not candidates:
        note = "; adapter_config.json alone (Axolotl pre-saves it) holds no weights" if (
            output_dir / "adapter_config.json").exists() else ""
        return CheckpointFacts(False, None, None, f"no adapter or model weights in {output_dir} ({found}){note}")
    details, loads = [], True
    for folder in candidates:
        label = "final" if folder == output_dir else folder.name
        kind = _kind_of(folder)
        try:
            if kind == "adapter":
                details.append(f"{label}: {verify_adapter(folder)}, loads")
            elif kind == "model":
                details.append(f"{label}: {verify_model(folder)}, loads")
            else:
                details.append(f"{label}: .bin weights, cannot verify without torch")
                if loads is True:
                    loads = None
        except _BadFile as exc:
            details.append(f"{label}: does not load: {exc}")
            loads = False
    return CheckpointFacts(True, str(candidates[0]), loads, f"{found}; " + "; ".join(details))


# ---- shapes of a LoRA adapter against its base (gates and export refuse a mismatch) ----------------


def read_safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from the JSON header of a .safetensors file (no torch needed)."""
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")   # the decoder layer a LoRA module path sits in


def lora_shape_mismatch(shapes: dict[str, list[int]], linear_shapes: dict[str, tuple[int, int]], num_layers: int) -> str | None:
    """The first LoRA tensor that cannot belong to a model with these (in, out) linear shapes."""
    for key, shape in sorted(shapes.items()):
        m = _LORA_KEY.match(key)
        layer_m = _LAYER_INDEX.search(m.group("module")) if m else None
        if not layer_m or len(shape) != 2:
            continue
        layer, module, ab = int(layer_m.group(1)), m.group("module").rsplit(".", 1)[-1], m.group("ab")
        if layer >= num_layers:
            return f"{key} is for layer {layer}, the model has {num_layers} layers"
        if module not in linear_shapes:
            continue
        fan_in, fan_out = linear_shapes[module]
        if ab == "A" and shape[1] != fan_in:
            return f"{module} LoRA A takes {shape[1]} inputs, the model's {module} has {fan_in}"
        if ab == "B" and shape[0] != fan_out:
            return f"{module} LoRA B gives {shape[0]} outputs, the model's {module} has {fan_out}"
    return None
