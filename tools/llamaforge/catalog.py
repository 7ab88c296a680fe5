"""The catalogs of models and GPUs (data in facts/*.yaml) and the parsing of user-written names.

Pure: reads the packaged YAML facts once, and a local HF config.json when a model is given as a
path. No torch, no network."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path


from .errors import UserError
from .paths import read_facts


@dataclass(frozen=True)
class ModelSpec:
    """Architecture constants of a decoder-only Llama-family model."""

    id: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_embeddings: bool = False
    qk_norm: bool = False
    family: str = "llama"
    hf_repo: str | None = None
    instruct_repo: str | None = None
    pad_token: str | None = None
    max_position: int = 4096
    rope_theta: float = 10000.0
    chat_template: str = "chatml"
    gated: bool = False
    published_params: int | None = None
    initializer_range: float = 0.02
    source: str = "catalog"  # "catalog" or the path of the config.json it came from

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer of one decoder block."""
        h, i = self.hidden_size, self.intermediate_size
        return {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def params_per_layer_linear(self) -> int:
        return sum(a * b for a, b in self.linear_shapes().values())

    @property
    def params_per_layer_norm(self) -> int:
        return 2 * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0)

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_embeddings else self.vocab_size * self.hidden_size

    @property
    def linear_params(self) -> int:
        """Parameters in the decoder blocks' linear layers: what bitsandbytes quantizes."""
        return self.num_layers * self.params_per_layer_linear

    @property
    def norm_params(self) -> int:
        return self.num_layers * self.params_per_layer_norm + self.hidden_size

    def parameter_count(self) -> int:
        return self.linear_params + self.norm_params + self.embedding_params + self.lm_head_params

    def to_dict(self) -> dict:
        d = asdict(self)
        d["parameters"] = self.parameter_count()
        return d


@dataclass(frozen=True)
class GpuSpec:
    id: str
    name: str
    memory_gib: float
    bf16: bool
    bf16_tflops: float
    compute_capability: str
    interconnect: str
    usd_per_hour: float
    memory_bandwidth_gbps: float = 0.0

    @property
    def supports_flash_attention(self) -> bool:
        return float(self.compute_capability) >= 8.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Hardware:
    """`gpus_per_node` GPUs of one kind on each of `nodes` nodes."""

    gpu: GpuSpec
    gpus_per_node: int = 1
    nodes: int = 1

    @property
    def world_size(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def label(self) -> str:
        """`8xH100-80GB`, with `-2nodes` appended for multi-node hardware (the file-name form)."""
        base = f"{self.gpus_per_node}x{self.gpu.id}"
        return base if self.nodes == 1 else f"{base}-{self.nodes}nodes"

    def __str__(self) -> str:
        base = f"{self.gpus_per_node}x{self.gpu.id}"
        return base if self.nodes == 1 else f"{base} x {self.nodes} nodes"

    @property
    def usd_per_hour(self) -> float:
        return self.gpu.usd_per_hour * self.world_size

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "gpu": self.gpu.id,
            "gpus_per_node": self.gpus_per_node,
            "nodes": self.nodes,
            "world_size": self.world_size,
            "gpu_memory_gib": self.gpu.memory_gib,
        }


# ---- loading the facts ---------------------------------------------------------------------


@lru_cache(maxsize=1)
def models() -> dict[str, ModelSpec]:
    return {mid: ModelSpec(id=mid, **fields) for mid, fields in read_facts("models.yaml").items()}


@lru_cache(maxsize=1)
def gpus() -> dict[str, GpuSpec]:
    return {gid: GpuSpec(id=gid, **fields) for gid, fields in read_facts("gpus.yaml").items()}


@dataclass(frozen=True)
class AppleMachine:
    """An Apple-Silicon Mac (facts/apple_silicon.yaml): one device whose GPU shares the unified
    memory with macOS. MLX-LM trains on it; Ollama/llama.cpp serve on it; Axolotl does not run."""

    id: str
    name: str
    chip: str
    gpu_cores: int
    memory_gib: float
    bandwidth_gbps: float
    prompt_rate: dict
    usd_per_hour: float = 0.0

    def default_gpu_share(self) -> float:
        """macOS's default cap on GPU allocations (recommendedMaxWorkingSetSize) as a share of memory."""
        share = apple_facts()["gpu_share"]
        return share["small"] if self.memory_gib <= share["small_machine_max_gib"] else share["large"]

    def gpu_usable_gib(self, wired_limit_gib: float | None = None) -> float:
        """What the GPU may allocate: macOS's default share, or an explicit `iogpu.wired_limit_mb`."""
        if wired_limit_gib is not None:
            return min(float(wired_limit_gib), self.memory_gib)
        return self.memory_gib * self.default_gpu_share()

    @property
    def label(self) -> str:
        return f"1x{self.id}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["default_gpu_share"] = self.default_gpu_share()
        d["gpu_usable_gib"] = round(self.gpu_usable_gib(), 2)
        return d


@lru_cache(maxsize=1)
def apple_facts() -> dict:
    return read_facts("apple_silicon.yaml")


@lru_cache(maxsize=1)
def apple_machines() -> dict[str, AppleMachine]:
    return {mid: AppleMachine(id=mid, **fields) for mid, fields in apple_facts()["machines"].items()}


_APPLE_RE = re.compile(r"^\s*(?:(\d+)\s*[xX×]\s*)?(M\d+(?:Pro|Max|Ultra)?-\d+GB)\s*$", re.I)


def is_apple_hardware(text: str | None) -> bool:
    """True for `1xM3Ultra-512GB` / `M2Ultra-192GB`: an Apple-Silicon machine name (known or not)."""
    return bool(text and _APPLE_RE.match(text))


def parse_apple_machine(text: str) -> AppleMachine:
    """`1xM3Ultra-512GB` (or `M3Ultra-512GB`) -> the machine; one machine only."""
    m = _APPLE_RE.match(text or "")
    if not m:
        raise UserError(f"malformed Apple-Silicon machine {text!r}; write 1x<chip>-<memory>GB, e.g. 1xM3Ultra-512GB "
                        f"(machines: {', '.join(apple_machines())})")
    if m.group(1) and int(m.group(1)) != 1:
        raise UserError(f"{text!r}: plan one Mac at a time (1x{m.group(2)}); MLX-LM's multi-machine training "
                        "is not planned by LlamaForge")
    catalog = apple_machines()
    by_lower = {mid.lower(): mid for mid in catalog}
    key = m.group(2).lower()
    if key in by_lower:
        return catalog[by_lower[key]]
    hint = ""
    if key.startswith("m2ultra") and not key.endswith(("128gb", "192gb")):
        hint = " (the M2 Ultra comes with at most 192 GB; the 512 GB Mac Studio is the M3 Ultra: M3Ultra-512GB)"
    raise UserError(f"unknown Apple-Silicon machine {m.group(2)!r}{hint or _suggest(m.group(2), list(catalog))}; "
                    f"use one of {', '.join(catalog)} (facts/apple_silicon.yaml lists them; add yours there)")


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]}?)" if close else ""


def get_model(name: str) -> ModelSpec:
    """A catalog id (`llama-3.1-70b`) or a path to a local HF config.json (or its folder)."""
    catalog = models()
    key = name.strip().lower()
    if key in catalog:
        return catalog[key]
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if path.is_file():
        return model_from_hf_config(path)
    if path.is_dir():
        raise UserError(f"model folder {name} has no config.json; give a Hugging Face model folder (config.json) "
                        "or a catalog id")
    if name.startswith((".", "/", "~")) or name.endswith(".json") or name.count("/") > 1:
        raise UserError(f"model {name} not found: no such file or folder; give a catalog id "
                        f"({', '.join(catalog)}) or a path to a local config.json")
    if name.count("/") == 1:
        raise UserError(f"unknown model {name!r}: a Hugging Face id is not read from the Hub here; give the local "
                        f"folder with its config.json, or a catalog id{_suggest(key.split('/')[-1], list(catalog))}")
    raise UserError(
        f"unknown model {name!r}{_suggest(key, list(catalog))}; "
        f"use one of {', '.join(catalog)} or a path to a local config.json"
    )


def get_gpu(name: str) -> GpuSpec:
    catalog = gpus()
    by_lower = {gid.lower(): gid for gid in catalog}
    key = name.strip().lower()
    if key in by_lower:
        return catalog[by_lower[key]]
    if is_apple_hardware(name):
        raise UserError(
            f"{name.strip()} is an Apple-Silicon Mac: Axolotl, DeepSpeed and bitsandbytes need CUDA and do not run "
            f"there; `llamaforge estimate --gpus 1x{name.strip()}` plans MLX-LM fine-tuning on it and "
            f"`llamaforge serve-plan` plans Ollama on it (docs/hardware.md, the Mac)"
        )
    raise UserError(
        f"unknown GPU {name!r}{_suggest(name.strip(), list(catalog))}; use one of {', '.join(catalog)}"
    )


# The host CPU as a "device", for the demo and the slow tests: never in the GPU catalog, accepted
# by parse_hardware only where a caller allows it (rendering and running CPU recipes).
CPU_DEVICE = GpuSpec(
    id="cpu", name="CPU (no GPU)", memory_gib=0.0, bf16=False, bf16_tflops=0.0,
    compute_capability="0.0", interconnect="none", usd_per_hour=0.0,
)
_CPU_RE = re.compile(r"^\s*(?:(\d+)\s*[xX×]\s*)?cpu\s*$", re.I)

_HARDWARE_RE = re.compile(r"^\s*(?:(\d+)\s*[xX×]\s*)?([A-Za-z0-9]+-\d+GB)(?:-(\d+)nodes?)?\s*$", re.I)


def parse_hardware(text: str, nodes: int | None = None, *, allow_cpu: bool = False) -> Hardware:
    """Parse `8xH100-80GB` (or `H100-80GB` for one GPU; the file-name form `8xH100-80GB-2nodes`
    is accepted too). `nodes` from `--nodes` overrides a node count written in the string.
    With `allow_cpu`, `cpu` / `2xcpu` name CPU processes on this host."""
    if allow_cpu and (c := _CPU_RE.match(text or "")):
        return Hardware(gpu=CPU_DEVICE, gpus_per_node=int(c.group(1) or 1), nodes=1)
    m = _HARDWARE_RE.match(text or "")
    if not m:
        raise UserError(
            f"malformed hardware {text!r}; write <count>x<GPU>, e.g. 8xH100-80GB "
            f"(GPUs: {', '.join(gpus())})"
        )
    count = int(m.group(1) or 1)
    gpu = get_gpu(m.group(2))
    n_nodes = nodes if nodes is not None else int(m.group(3) or 1)
    if count < 1 or count > 16:
        raise UserError(f"hardware {text!r}: GPUs per node must be 1..16")
    if n_nodes < 1 or n_nodes > 1024:
        raise UserError(f"hardware {text!r}: --nodes must be 1..1024")
    return Hardware(gpu=gpu, gpus_per_node=count, nodes=n_nodes)


def model_from_hf_config(path: Path) -> ModelSpec:
    """A ModelSpec from a local Hugging Face config.json of a Llama-like decoder."""
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: a model config must be a JSON object")
    required = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"]
    missing = [k for k in required if not isinstance(cfg.get(k), int)]
    if missing:
        raise UserError(f"{path}: not a Llama-like decoder config (missing integer {', '.join(missing)})")
    heads = cfg["num_attention_heads"]
    model_type = str(cfg.get("model_type", "llama"))
    return ModelSpec(
        id=Path(path).resolve().parent.name,
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // heads),
        vocab_size=cfg["vocab_size"],
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qk_norm=model_type.startswith("qwen3"),
        family=model_type,
        hf_repo=None,
        max_position=int(cfg.get("max_position_embeddings") or 4096),
        rope_theta=float(cfg.get("rope_theta") or 10000.0),
        source=str(path),
    )


@dataclass
class CatalogListing:
    models: list[dict] = field(default_factory=list)
    gpus: list[dict] = field(default_factory=list)


def listing() -> CatalogListing:
    return CatalogListing(
        models=[m.to_dict() for m in models().values()],
        gpus=[g.to_dict() for g in gpus().values()],
    )
