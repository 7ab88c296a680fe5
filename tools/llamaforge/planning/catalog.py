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


from ..errors import UserError
from ..paths import read_facts


@dataclass(frozen=True)
class ModelSpec:
    """Architecture constants of a decoder-only transformer of the Llama family's shape: RMSNorm
    decoder layers of attention (q, k, v, o) and a gated MLP, or a mixture-of-experts block of
    routed experts (all resident, `experts_per_token` of them computing each token), optional
    shared experts and a router (docs/hardware.md, "Model families")."""

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
    # ---- architecture variants (defaults: a dense Llama) -----------------------------------
    norms_per_layer: int = 2          # RMSNorms per decoder layer (Gemma 2/3: 4, around attention and MLP)
    qkv_bias: bool = False            # biases on q, k and v (Qwen2/2.5)
    num_experts: int = 0              # routed experts per MoE layer; 0: a dense model
    experts_per_token: int = 0        # experts each token is routed to (top-k)
    expert_intermediate_size: int = 0  # one routed expert's MLP width
    shared_expert_intermediate_size: int = 0  # the always-active shared expert(s), widths summed
    other_params: int = 0             # parameters outside the decoder stack modelled here: a vision
    #                                   tower and its projector, biases and attention sinks; 16-bit,
    #                                   frozen by LoRA, trained by a full fine-tune
    hub_ids: tuple[str, ...] = ()     # further Hub repositories with exactly these constants
    published_rounding: int = 0       # the published count is rounded to this (0: exact)
    published_active_params: int | None = None  # MoE: parameters computing one token, as published

    def __post_init__(self) -> None:
        if isinstance(self.hub_ids, list):
            object.__setattr__(self, "hub_ids", tuple(self.hub_ids))

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def attention_shapes(self) -> dict[str, tuple[int, int]]:
        h = self.hidden_size
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h)}

    @staticmethod
    def _mlp(h: int, width: int) -> dict[str, tuple[int, int]]:
        return {"gate_proj": (h, width), "up_proj": (h, width), "down_proj": (width, h)} if width else {}

    def expert_shapes(self) -> dict[str, tuple[int, int]]:
        """One routed expert's gate, up and down projections (empty for a dense model)."""
        return self._mlp(self.hidden_size, self.expert_intermediate_size or self.intermediate_size) if self.is_moe else {}

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of the nn.Linear layers of one decoder layer that LoRA targets
        by name: attention, and the MLP (a dense model's, an MoE model's shared expert). Routed
        experts are 3D parameters in transformers 5, not nn.Linear (`expert_shapes`)."""
        mlp = self._mlp(self.hidden_size, self.shared_expert_intermediate_size if self.is_moe else self.intermediate_size)
        return {**self.attention_shapes(), **mlp}

    @property
    def router_params_per_layer(self) -> int:
        return self.hidden_size * self.num_experts

    @property
    def expert_params_per_layer(self) -> int:
        """All routed experts of one MoE layer."""
        return self.num_experts * sum(a * b for a, b in self.expert_shapes().values())

    @property
    def params_per_layer_linear(self) -> int:
        """One decoder layer's matrix parameters: attention, MLP or shared expert, routed experts, router."""
        return (sum(a * b for a, b in self.linear_shapes().values()) + self.expert_params_per_layer
                + self.router_params_per_layer)

    @property
    def params_per_layer_norm(self) -> int:
        bias = self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0
        return self.norms_per_layer * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0) + bias

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_embeddings else self.vocab_size * self.hidden_size

    @property
    def linear_params(self) -> int:
        """Parameters in the decoder blocks' matrices (experts included)."""
        return self.num_layers * self.params_per_layer_linear

    @property
    def expert_params(self) -> int:
        return self.num_layers * self.expert_params_per_layer

    @property
    def active_linear_params(self) -> int:
        """Decoder matrix parameters one token is computed with: all but the routed experts it is
        not sent to."""
        if not self.is_moe:
            return self.linear_params
        per_expert = self.expert_params_per_layer // self.num_experts
        return self.linear_params - self.num_layers * (self.num_experts - self.experts_per_token) * per_expert

    @property
    def norm_params(self) -> int:
        return self.num_layers * self.params_per_layer_norm + self.hidden_size

    def parameter_count(self) -> int:
        return self.linear_params + self.norm_params + self.embedding_params + self.lm_head_params + self.other_params

    def active_parameter_count(self) -> int:
        """Parameters computing one token (MoE: top-k routed experts), embedding excluded, output head included."""
        return self.parameter_count() - self.embedding_params - (self.linear_params - self.active_linear_params) \
            + (self.embedding_params if self.tie_embeddings else 0)

    def describe(self) -> str:
        """`mixtral-8x7b (46.7B parameters, MoE: 8 experts, 2 per token)` for messages."""
        moe = f", mixture of experts: {self.num_experts} experts, {self.experts_per_token} per token" if self.is_moe else ""
        return f"{self.id} ({self.parameter_count() / 1e9:,.1f}B parameters{moe})"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hub_ids"] = list(self.hub_ids)
        d["parameters"] = self.parameter_count()
        if self.is_moe:
            d["active_parameters"] = self.active_parameter_count()
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


@lru_cache(maxsize=1)
def architecture_facts() -> dict:
    return read_facts("architectures.yaml")


class NotModelled(UserError):
    """A model the memory model does not price (an architecture it has no terms for, a config it
    cannot read): `check` says "memory not judged" instead of pricing another model."""


def _int(cfg: dict, *keys: str, default: int | None = None) -> int | None:
    for key in keys:
        value = cfg.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default


def model_from_hf_config(path: Path) -> ModelSpec:
    """A ModelSpec from a Hugging Face config.json, for the architectures facts/architectures.yaml
    lists as modelled; NotModelled (a UserError) for the others and for unreadable files."""
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotModelled(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(cfg, dict):
        raise NotModelled(f"{path}: a model config must be a JSON object")
    facts = architecture_facts()
    model_type = str(cfg.get("model_type") or "llama")
    if model_type in facts["not_modelled"]:
        raise NotModelled(f"{path}: {model_type} models are not modelled by the memory estimate "
                          f"({facts['not_modelled'][model_type]})")
    if model_type not in facts["modelled"]:
        raise NotModelled(f"{path}: model_type {model_type!r} is not one the memory estimate models "
                          f"(it models {', '.join(facts['modelled'])}: facts/architectures.yaml)")
    kind = facts["modelled"][model_type] or {}
    text = cfg.get("text_config") if kind.get("text_config") and isinstance(cfg.get("text_config"), dict) else cfg
    required = ["hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"]
    missing = [k for k in required if _int(text, k) is None]
    if missing:
        raise NotModelled(f"{path}: not a decoder config the estimate can read (missing integer {', '.join(missing)})")
    heads, hidden = text["num_attention_heads"], text["hidden_size"]
    experts = _int(text, "num_local_experts", "num_experts", "n_routed_experts", default=0) if kind.get("moe") else 0
    width_key = kind.get("expert_width_key", "moe_intermediate_size")
    return ModelSpec(
        id=Path(path).resolve().parent.name,
        hidden_size=hidden,
        intermediate_size=_int(text, "intermediate_size", default=0) or 0,
        num_layers=text["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=_int(text, "num_key_value_heads", default=heads) or heads,
        head_dim=_int(text, "head_dim", default=hidden // heads) or hidden // heads,
        vocab_size=text["vocab_size"],
        tie_embeddings=bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        qk_norm=bool(kind.get("qk_norm")),
        norms_per_layer=int(kind.get("norms_per_layer", 2)),
        qkv_bias=bool(kind.get("qkv_bias")),
        num_experts=experts or 0,
        experts_per_token=(_int(text, "num_experts_per_tok", "experts_per_token", default=0) or 0) if experts else 0,
        expert_intermediate_size=(_int(text, width_key, default=0) or 0) if experts else 0,
        shared_expert_intermediate_size=(_int(text, "shared_expert_intermediate_size", default=0) or 0) if experts else 0,
        family=model_type,
        hf_repo=None,
        max_position=_int(text, "max_position_embeddings", default=4096) or 4096,
        rope_theta=float(text.get("rope_theta") or 10000.0),
        source=str(path),
    )


def catalog_model_for_repo(repo: str) -> tuple[ModelSpec, str] | None:
    """The catalog model a Hub id names (its base or instruct repository, or one of the `hub_ids`
    with the same architecture constants), and how it matched; None when none does."""
    key = repo.strip().rstrip("/").lower()
    for m in models().values():
        if key in {r.lower() for r in (m.hf_repo, m.instruct_repo) if r}:
            return m, "catalog"
        if key in {r.lower() for r in m.hub_ids}:
            return m, "same architecture"
    return None


def hf_cache_dirs() -> list[Path]:
    """Where the Hugging Face hub cache lives (huggingface_hub's constants: HF_HUB_CACHE, else
    HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub)."""
    import os

    if os.environ.get("HF_HUB_CACHE"):
        return [Path(os.environ["HF_HUB_CACHE"]).expanduser()]
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return [Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()]
    if os.environ.get("HF_HOME"):
        return [Path(os.environ["HF_HOME"]).expanduser() / "hub"]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return [cache / "huggingface" / "hub"]


def cached_hf_config(repo: str, revision: str | None = None) -> Path | None:
    """The config.json of Hub repository `repo` in the local Hugging Face cache, without touching
    the network: models--<owner>--<name>/snapshots/<commit>/config.json, the commit of
    refs/<revision or main> first, else any snapshot that has one."""
    if repo.count("/") != 1:
        return None
    for cache in hf_cache_dirs():
        folder = cache / ("models--" + repo.replace("/", "--"))
        if not folder.is_dir():
            continue
        ref = folder / "refs" / (revision or "main")
        if ref.is_file():
            commit = ref.read_text(encoding="utf-8").strip()
            cfg = folder / "snapshots" / commit / "config.json"
            if cfg.is_file():
                return cfg
        snapshots = sorted((folder / "snapshots").glob("*/config.json")) if (folder / "snapshots").is_dir() else []
        if snapshots:
            return snapshots[0]
    return None


@dataclass
class CatalogListing:
    models: list[dict] = field(default_factory=list)
    gpus: list[dict] = field(default_factory=list)


def listing() -> CatalogListing:
    return CatalogListing(
        models=[m.to_dict() for m in models().values()],
        gpus=[g.to_dict() for g in gpus().values()],
    )
