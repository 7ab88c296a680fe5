"""Reading an Axolotl YAML config (ours or hand-written) and rebuilding from it the `TrainSetup`
Axolotl 0.19 would really run: the quantization it really builds, the parallelism of the DeepSpeed
JSON or fsdp_config, the batch shape, the model the config names.

`read_config`, `read_deepspeed` and `resolve_model` touch files; `setup_from_config` and the
parsers are pure. Notes for the user come back as (severity, key, message) tuples."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..files import yaml_error_line
from ..planning.catalog import (
    Hardware, ModelSpec, NotModelled, cached_hf_config, catalog_model_for_repo, get_model, model_from_hf_config,
)
from ..planning.train_setup import ALL_LINEAR, OPTIMIZER_STATE_BYTES, DeepSpeedSettings, TrainSetup

Note = tuple[str, str, str]  # (severity, key, message)

HEADER_RE = re.compile(r"^#\s*llamaforge-([a-z][a-z-]*)\s*:\s*(.+?)\s*$")


@dataclass(frozen=True)
class LoadedConfig:
    path: Path
    data: dict
    header: dict[str, str] = field(default_factory=dict)  # llamaforge-<name>: value comment lines

    @property
    def folder(self) -> Path:
        return self.path.resolve().parent


def parse_header(text: str) -> dict[str, str]:
    """`# llamaforge-model: llama-3.1-70b` lines of the leading comment block -> {"model": ...}."""
    header: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        m = HEADER_RE.match(stripped)
        if m:
            header.setdefault(m.group(1), m.group(2))
    return header


def read_config(path: str | Path) -> LoadedConfig:
    """Read an Axolotl YAML config. A missing, unreadable or malformed file, or YAML that is not a
    mapping, is the user's mistake: UserError, one line."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a config file; give the path of an Axolotl YAML config")
    if not path.is_file():
        raise UserError(f"{path}: no such config file; give the path of an Axolotl YAML config")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: {yaml_error_line(exc)}; fix the YAML syntax") from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise UserError(f"{path}: an Axolotl config must be a YAML mapping of keys to values, this is {kind}")
    return LoadedConfig(path=path, data=data, header=parse_header(text))


# ---- DeepSpeed -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeepSpeedInfo:
    """What the config's `deepspeed` value means. `config` is the JSON when it could be read;
    `note` says how the stage was found when it was not (from the file name), `error` when the
    file is there but is not a DeepSpeed JSON object."""

    stage: int | None = None
    offload: str = "none"
    config: dict | None = None
    found_at: str | None = None
    note: str | None = None
    error: str | None = None


def deepspeed_from_json(ds: dict) -> tuple[int, str]:
    """(ZeRO stage, offload) of a DeepSpeed config. Pure."""
    zero = ds.get("zero_optimization") or {}
    stage = int_or(zero.get("stage"), 0) if isinstance(zero, dict) else 0
    zero = zero if isinstance(zero, dict) else {}

    def on_host(block: Any) -> bool:
        return isinstance(block, dict) and str(block.get("device", "none")).lower() in ("cpu", "nvme")

    # DeepSpeed only offloads parameters under ZeRO-3; it ignores offload_param below that.
    opt, par = on_host(zero.get("offload_optimizer")), stage == 3 and on_host(zero.get("offload_param"))
    offload = "all" if (opt and par) else "optimizer" if opt else "params" if par else "none"
    return stage, offload


def deepspeed_from_name(name: str) -> tuple[int | None, str]:
    """(stage, offload) guessed from a DeepSpeed file name like Axolotl's deepspeed_configs/
    (zero2.json, zero3_bf16_cpuoffload_all.json, zero3_bf16_cpuoffload_params.json). Pure."""
    base = Path(name).name.lower()
    m = re.search(r"zero[_-]?([0-3])", base)
    stage = int(m.group(1)) if m else None
    if "offload" not in base:
        offload = "none"
    elif "all" in base:
        offload = "all"
    elif "param" in base:
        offload = "params"
    else:
        offload = "optimizer"
    return stage, offload


def read_deepspeed(value: Any, search_dirs: list[Path]) -> DeepSpeedInfo | None:
    """Resolve the config's `deepspeed` value: an inline mapping, or a path looked up relative to
    each of `search_dirs` (Axolotl itself opens it relative to the launch directory)."""
    if not value:
        return None
    if isinstance(value, dict):
        stage, offload = deepspeed_from_json(value)
        return DeepSpeedInfo(stage=stage, offload=offload, config=value, found_at="inline")
    name = str(value)
    candidates = [Path(name)] if Path(name).is_absolute() else [d / name for d in search_dirs]
    for cand in candidates:
        if cand.is_file():
            try:
                ds = json.loads(cand.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                return DeepSpeedInfo(error=f"deepspeed file {cand} is not valid JSON ({exc})", found_at=str(cand))
            if not isinstance(ds, dict):
                return DeepSpeedInfo(error=f"deepspeed file {cand} is not a JSON object", found_at=str(cand))
            stage, offload = deepspeed_from_json(ds)
            return DeepSpeedInfo(stage=stage, offload=offload, config=ds, found_at=str(cand))
    stage, offload = deepspeed_from_name(name)
    looked = ", ".join(dict.fromkeys(str(d) for d in search_dirs)) or "."
    guess = f"assumed ZeRO-{stage}" if stage is not None else "could not tell the ZeRO stage"
    offload_text = f" with {offload} offload" if offload != "none" else ""
    note = (
        f"deepspeed file {name!r} not found (looked in {looked}); Axolotl opens it relative to the "
        f"directory you launch from. {guess}{offload_text} from its name"
    )
    return DeepSpeedInfo(stage=stage, offload=offload, note=note)


# ---- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    model: ModelSpec | None
    notes: tuple[Note, ...] = ()


NOT_JUDGED = "memory not judged"


def _not_judged(why: str, key: str = "base_model") -> ModelChoice:
    return ModelChoice(None, (("warning", key, f"{NOT_JUDGED}: {why}"),))


def _from_config_json(path: Path, where: str) -> ModelChoice:
    try:
        spec = model_from_hf_config(path)
    except NotModelled as exc:
        return _not_judged(str(exc))
    return ModelChoice(spec, (("info", "base_model", f"architecture read from {where} ({spec.describe()})"),))


def resolve_model(
    cfg: dict, header: dict[str, str], model: str | ModelSpec | None, search_dirs: list[Path]
) -> ModelChoice:
    """The architecture the config trains, from what is available offline: --model, the recipe
    header, base_model (or base_model_config) as a catalog Hub id (its own or one with the same
    constants), a local folder's config.json, or the config.json in the local Hugging Face cache.
    Otherwise no model and a "memory not judged" warning: never a guess from the name (a
    Mixtral-8x7B is not a 7B Llama)."""
    if isinstance(model, ModelSpec):
        return ModelChoice(model)
    if model:
        return ModelChoice(get_model(model))  # a bad --model is the user's mistake: exit 2
    if header.get("model"):
        try:
            return ModelChoice(get_model(header["model"]))
        except UserError as exc:
            return ModelChoice(None, (("error", "llamaforge-model", f"recipe header: {exc}"),))
    names = [str(cfg.get(k) or "").strip() for k in ("base_model_config", "base_model")]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        return _not_judged("no base_model, so no model to estimate; pass --model")
    for base in names:
        found = catalog_model_for_repo(base)
        if found is not None:
            spec, how = found
            if how == "catalog":
                return ModelChoice(spec)
            return ModelChoice(spec, (("info", "base_model", f"base_model {base!r} has the architecture of catalog model "
                                       f"{spec.describe()}: the same config.json constants (facts/models.yaml hub_ids)"),))
        local = Path(base).expanduser()
        for folder in [local] if local.is_absolute() else [d / local for d in search_dirs]:
            if (folder / "config.json").is_file():
                return _from_config_json(folder / "config.json", f"{folder / 'config.json'}")
        cached = cached_hf_config(base, str(cfg.get("revision_of_model") or "") or None)
        if cached is not None:
            return _from_config_json(cached, f"the Hugging Face cache ({cached})")
    return _not_judged(
        f"unknown model {names[-1]!r}: not in the catalog (`llamaforge models`), no local folder with a config.json, "
        "not in the Hugging Face cache; pass --model with a catalog id or the path of its config.json")


# ---- the setup Axolotl would run --------------------------------------------------------------


def attn_implementation(cfg: dict, legacy_flags: list[list[str]] | list[tuple[str, str]]) -> str | None:
    """The attention backend Axolotl resolves: attn_implementation, else the first legacy flag set
    in Axolotl's priority order (AxolotlInputConfig.normalize_attn_implementation). Pure."""
    if cfg.get("attn_implementation"):
        return str(cfg["attn_implementation"])
    for flag, impl in legacy_flags:
        if cfg.get(flag):
            return impl
    return None


def fsdp_block(cfg: dict) -> dict | None:
    """fsdp_config with Axolotl's `fsdp_` prefix stripping applied; {} for the legacy `fsdp` list."""
    block = cfg.get("fsdp_config")
    if isinstance(block, dict):
        return {(k[5:] if k.startswith("fsdp_") and k != "fsdp_version" else k): v for k, v in block.items()}
    if cfg.get("fsdp"):
        return {}
    return None


def fsdp_version(cfg: dict) -> Any:
    block = cfg.get("fsdp_config") if isinstance(cfg.get("fsdp_config"), dict) else {}
    return cfg.get("fsdp_version") or block.get("fsdp_version") or block.get("version")


def _weight_format(cfg: dict, adapter: str | None, *, zero3: bool, fsdp: dict | None, gpu_bf16: bool) -> tuple[str, str]:
    """(method, weight format) as Axolotl 0.19 loads the base (axolotl/loaders/model.py)."""
    bf16 = cfg.get("bf16", "auto")
    sixteen = bool(cfg.get("bfloat16") or cfg.get("fp16") or cfg.get("float16") or bf16 is True
                   or (bf16 == "auto" and gpu_bf16))
    base16 = "bf16" if sixteen else "fp32"
    if adapter is None:
        return "full", base16
    if adapter == "qlora" and cfg.get("load_in_4bit"):
        kwargs = cfg.get("bnb_config_kwargs") or {}
        double = kwargs.get("bnb_4bit_use_double_quant", True) if isinstance(kwargs, dict) else True
        return "qlora", "nf4_dq" if double else "nf4"
    if cfg.get("load_in_8bit"):
        return "lora", "int8"
    if cfg.get("load_in_4bit"):
        # No quantization is built for `adapter: lora`; prepare_model_for_kbit_training upcasts the
        # 16-bit base to fp32 unless ZeRO-3 or FSDP with cpu_ram_efficient_loading skips it.
        skipped = zero3 or (fsdp is not None and bool(fsdp.get("cpu_ram_efficient_loading")))
        return "lora", base16 if skipped else "fp32"
    return "lora", base16


def _lora_targets(cfg: dict) -> tuple[tuple[str, ...], list[str]]:
    """Decoder linears LoRA wraps: lora_target_linear -> all of them; plus lora_target_modules
    names; PEFT's Llama default (q_proj, v_proj) when neither is set."""
    if cfg.get("lora_target_linear"):
        return ALL_LINEAR, []
    modules = cfg.get("lora_target_modules")
    if isinstance(modules, str):
        modules = ALL_LINEAR if modules.lower() in ("all-linear", "all_linear") else [modules]
    if not modules:
        return ("q_proj", "v_proj"), ["no lora_target_modules/lora_target_linear: PEFT's Llama default q_proj, v_proj"]
    names = {str(m) for m in modules}
    chosen = tuple(n for n in ALL_LINEAR if n in names)
    others = sorted(names - set(ALL_LINEAR))
    notes = [f"lora_target_modules {', '.join(others)} not priced (only decoder linears are)"] if others else []
    return chosen or ("q_proj", "v_proj"), notes


def _estimator_optimizer(name: str) -> tuple[str, str | None]:
    if name in OPTIMIZER_STATE_BYTES:
        return name, None
    lowered = name.lower()
    priced = "adamw_torch_8bit" if "8bit" in lowered else "adamw_torch_4bit" if "4bit" in lowered else "adamw_torch"
    return priced, f"optimizer {name} is not in the estimator's table; priced as {priced}"


def int_or(value: Any, default: int) -> int:
    """`value` as an int, or `default` when it is unset or not a number."""
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def batch_shape(cfg: dict, defaults: dict[str, Any]) -> tuple[int, int]:
    """(micro_batch_size, gradient_accumulation_steps) as Axolotl derives them: accumulation
    from batch_size // micro_batch_size when only batch_size is given (normalize_config). Values
    below 1 come back as they are (`batch_size_findings` reports them). Pure."""
    micro = int_or(cfg.get("micro_batch_size"), int_or(defaults.get("micro_batch_size"), 1))
    accum = cfg.get("gradient_accumulation_steps")
    if accum is None and cfg.get("batch_size") and micro >= 1:
        accum = int_or(cfg.get("batch_size"), micro) // micro
    return micro, int_or(accum, int_or(defaults.get("gradient_accumulation_steps"), 1))


BATCH_KEYS = ("micro_batch_size", "gradient_accumulation_steps", "batch_size")


def invalid_batch_keys(cfg: dict) -> list[str]:
    """The batch-size keys the config sets to something other than a whole number >= 1. Pure."""
    bad = []
    for key in BATCH_KEYS:
        value = cfg.get(key)
        if value is None:
            continue
        number = float_or(value)
        if number is None or number < 1 or number != int(number):
            bad.append(key)
    return bad


def deepspeed_settings(ds: dict | None) -> DeepSpeedSettings:
    """The memory-relevant values of a DeepSpeed JSON; keys it leaves out take DeepSpeed's defaults
    (deepspeed/runtime/zero/config.py), not LlamaForge's template's. Pure."""
    if not isinstance(ds, dict):
        return DeepSpeedSettings()
    zero = ds.get("zero_optimization") if isinstance(ds.get("zero_optimization"), dict) else {}

    def size(key: str, default: float, *, auto: bool = False) -> Any:
        value = zero.get(key, default)
        if auto and value == "auto":
            return "auto"
        number = float_or(value)
        return default if number is None or number < 0 else int(number)

    return DeepSpeedSettings(
        optimizer_block=isinstance(ds.get("optimizer"), dict),
        reduce_bucket_size=size("reduce_bucket_size", 500_000_000, auto=True),
        allgather_bucket_size=size("allgather_bucket_size", 500_000_000),
        overlap_comm=bool(zero.get("overlap_comm", int_or(zero.get("stage"), 0) == 3)),
        prefetch_bucket_size=size("stage3_prefetch_bucket_size", 50_000_000, auto=True),
        max_live_parameters=size("stage3_max_live_parameters", 1_000_000_000),
        max_reuse_distance=size("stage3_max_reuse_distance", 1_000_000_000),
        sub_group_size=size("sub_group_size", 1_000_000_000),
    )


def float_or(value: Any) -> float | None:
    """`value` as a float, or None when it is not a number (booleans are not). Pure."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def setup_from_config(
    cfg: dict,
    *,
    model: ModelSpec,
    hardware: Hardware,
    deepspeed: DeepSpeedInfo | None,
    defaults: dict[str, Any],
    legacy_attention_flags: list,
) -> tuple[TrainSetup | None, list[Note]]:
    """The TrainSetup Axolotl would run for `cfg` on `hardware`, and what was assumed. Pure.
    `defaults` are the schema's field defaults (sequence_len 512, micro_batch_size 1…)."""
    notes: list[Note] = []
    adapter = cfg.get("adapter") or None
    if adapter not in (None, "lora", "qlora"):
        return None, [("warning", "adapter", f"{NOT_JUDGED}: adapter {adapter!r} (memory is estimated for full fine-tunes, "
                                             "lora and qlora)")]
    fsdp = fsdp_block(cfg)
    stage = deepspeed.stage if deepspeed else None
    if deepspeed and deepspeed.stage is None:
        notes.append(("info", "memory", "ZeRO stage unknown; estimated as plain data parallelism"))
    if fsdp is not None:
        parallel = "fsdp"
        offload = "all" if fsdp.get("offload_params") else "none"
    elif stage:
        parallel, offload = f"zero{stage}", deepspeed.offload
    else:
        parallel = "ddp" if hardware.world_size > 1 else "single"
        offload = "none"
    method, weights = _weight_format(cfg, adapter, zero3=stage == 3, fsdp=fsdp, gpu_bf16=hardware.gpu.bf16)
    # FSDP1 + cpu_ram_efficient_loading + qlora_sharded_model_loading quantizes the base layer by
    # layer on rank 0 (load_sharded_model_quant); anything else loads a 4-bit base whole onto every
    # GPU first (facts/parallelism.yaml `quantized_loading`)
    sharded_load = (fsdp is not None and str(fsdp_version(cfg)) == "1" and method == "qlora"
                    and bool(fsdp.get("cpu_ram_efficient_loading")) and bool(cfg.get("qlora_sharded_model_loading")))

    micro, accum = batch_shape(cfg, defaults)
    if micro < 1 or accum < 1 or invalid_batch_keys(cfg):
        return None, notes   # check reports the key (rule batch-sizes-below-one)
    optimizer, opt_note = _estimator_optimizer(str(cfg.get("optimizer") or defaults.get("optimizer") or "adamw_torch_fused"))
    if opt_note:
        notes.append(("info", "optimizer", opt_note))
    attn = attn_implementation(cfg, legacy_attention_flags)
    attn_kind = "eager" if attn == "eager" else "sdpa" if attn in (None, "sdpa") else "flash_attention_2"
    targets, target_notes = _lora_targets(cfg) if method != "full" else ((), [])
    notes += [("info", "lora_target_modules", n) for n in target_notes]
    lora_r = int_or(cfg.get("lora_r"), 0)
    if method != "full" and lora_r < 1:
        lora_r = 8
        notes.append(("info", "lora_r", "lora_r not set; priced at 8, PEFT's default"))
    fields = dict(
        model=model,
        hardware=hardware,
        method=method,
        parallel=parallel,
        offload=offload,
        weight_format=weights,
        lora_r=lora_r if method != "full" else 16,
        lora_alpha=int_or(cfg.get("lora_alpha"), 0) or None,
        lora_targets=targets or ALL_LINEAR,
        seq_len=int_or(cfg.get("sequence_len"), int_or(defaults.get("sequence_len"), 512)),
        micro_batch=micro,
        grad_accum=accum,
        # FSDP checkpoints activations itself with fsdp_config.activation_checkpointing
        # (axolotl/utils/trainer.py setup_fsdp_envs -> accelerate's fsdp2_apply_ac)
        grad_ckpt=bool(cfg.get("gradient_checkpointing", defaults.get("gradient_checkpointing"))
                       or (fsdp or {}).get("activation_checkpointing")),
        optimizer=optimizer,
        attn=attn_kind,
        sample_packing=bool(cfg.get("sample_packing")),
        pad_to_sequence_len=None if cfg.get("pad_to_sequence_len") is None else bool(cfg.get("pad_to_sequence_len")),
        torch_compile=bool(cfg.get("torch_compile")),
        fsdp_version=1 if sharded_load else 2,
        deepspeed=deepspeed_settings(deepspeed.config if deepspeed else None),
    )
    fields.update(_long_context_fields(cfg, model, notes))
    if fields.get("head") == "score" and cfg.get("reward_model"):
        # TRL's RewardTrainer runs the chosen and the rejected sequence of each pair in one forward
        fields["micro_batch"] = 2 * micro
        notes.append(("info", "reward_model", "reward model: a score head (no vocabulary logits); each micro-batch "
                                              "holds the chosen and the rejected sequence of every pair"))
    try:
        return TrainSetup(**fields), notes
    except UserError as exc:  # e.g. sequence_len: 0
        return None, notes + [("error", "memory", f"cannot estimate this config: {exc}")]


CCE_PLUGIN = "cut_cross_entropy"
LIGER_PLUGIN = "liger"
EXPERT_TARGETS = ("gate_up_proj", "down_proj")


def _plugins(cfg: dict) -> list[str]:
    plugins = cfg.get("plugins")
    return [str(p).lower() for p in plugins] if isinstance(plugins, list) else []


def loss_of(cfg: dict) -> str:
    """The cross-entropy Axolotl runs: Cut Cross Entropy (its plugin, `cut_cross_entropy` not false),
    Liger's fused linear cross-entropy (its plugin with `liger_fused_linear_cross_entropy: true`),
    Axolotl's `chunked_cross_entropy`, else the model's own."""
    plugins = _plugins(cfg)
    if any(CCE_PLUGIN in p for p in plugins) and cfg.get("cut_cross_entropy", True) is not False:
        return "cce"
    if any(LIGER_PLUGIN in p for p in plugins) and cfg.get("liger_fused_linear_cross_entropy"):
        return "liger"
    if cfg.get("chunked_cross_entropy"):
        return "chunked"
    return "default"


def activation_offload_of(cfg: dict) -> str:
    """activation_offloading as a TrainSetup value; gradient_checkpointing: offload / offload_disk are
    its deprecated spellings (validation.py check_gradient_checkpointing_w_offload)."""
    value = cfg.get("activation_offloading")
    ckpt = cfg.get("gradient_checkpointing")
    if value in (None, False):
        return {"offload": "cpu", "offload_disk": "disk"}.get(ckpt if isinstance(ckpt, str) else "", "none")
    return {"legacy": "legacy", "disk": "disk"}.get(str(value), "cpu")


def _long_context_fields(cfg: dict, model: ModelSpec, notes: list[Note]) -> dict:
    """Axolotl's N-D parallelism, memory savers, reward heads and MoE options as TrainSetup fields."""
    out: dict[str, Any] = {
        "context_parallel": max(1, int_or(cfg.get("context_parallel_size") or cfg.get("sequence_parallel_degree"), 1)),
        "tensor_parallel": max(1, int_or(cfg.get("tensor_parallel_size"), 1)),
        "dp_replicate": max(1, int_or(cfg.get("dp_replicate_size"), 1)),
        "tiled_mlp": bool(cfg.get("tiled_mlp")),
        "tiled_mlp_shards": max(0, int_or(cfg.get("tiled_mlp_num_shards"), 0)),
        "activation_offload": activation_offload_of(cfg),
        "loss": loss_of(cfg),
        "head": "score" if (cfg.get("reward_model") or cfg.get("process_reward_model")) else "lm",
    }
    if model.is_moe:
        out["expert_parallel"] = max(1, int_or(cfg.get("expert_parallel_size"), 1))
        out["quantize_experts"] = bool(cfg.get("quantize_moe_experts"))
        params = cfg.get("lora_target_parameters") or []
        params = [params] if isinstance(params, str) else [str(p) for p in params] if isinstance(params, list) else []
        out["lora_expert_targets"] = tuple(t for t in EXPERT_TARGETS if any(p.endswith(t) for p in params))
        other = [p for p in params if not p.endswith(EXPERT_TARGETS)]
        if other:
            notes.append(("info", "lora_target_parameters", f"{', '.join(other)} not priced (only the experts' "
                                                            "gate_up_proj and down_proj are)"))
    return out


def describe_setup(setup: TrainSetup) -> str:
    """One line saying how the config was read, for the user to check the memory verdict against."""
    method = {"full": "full fine-tune", "lora": "LoRA", "qlora": "QLoRA"}[setup.method]
    parallel = {"single": "one GPU", "ddp": "DDP", "zero1": "ZeRO-1", "zero2": "ZeRO-2",
                "zero3": "ZeRO-3", "fsdp": "FSDP"}[setup.parallel]
    if setup.parallel == "fsdp" and setup.fsdp_version == 1:
        parallel = "FSDP1 with sharded quantized loading"
    offload = f", {setup.offload} offloaded" if setup.offload != "none" else ""
    present = [t for t in setup.lora_targets if t in setup.model.linear_shapes()]
    experts = f" and the experts' {'/'.join(setup.lora_expert_targets)}" if setup.lora_expert_targets else ""
    lora = f" r={setup.lora_r} on {len(present)} linears{experts}," if setup.is_adapter else ""
    extras = [f"{name} {value}" for name, value in (
        ("context parallel", setup.context_parallel), ("tensor parallel", setup.tensor_parallel),
        ("expert parallel", setup.expert_parallel), ("HSDP replicas", setup.dp_replicate)) if value > 1]
    extras += ["tiled MLP"] * setup.tiled_mlp
    if setup.activation_offload != "none":
        extras.append(f"activation offloading ({setup.activation_offload})")
    if setup.loss != "default":
        extras.append({"cce": "Cut Cross Entropy", "liger": "Liger fused linear cross-entropy",
                       "chunked": "chunked cross-entropy"}[setup.loss])
    if setup.head == "score":
        extras.append("score head")
    return (
        f"read as {setup.model.id} {method} ({setup.weight_format} base weights),{lora} {parallel}{offload} "
        f"on {setup.hardware}, sequence {setup.seq_len}, micro-batch {setup.micro_batch} x "
        f"accumulation {setup.grad_accum}, gradient checkpointing {'on' if setup.grad_ckpt else 'off'}, "
        f"{setup.optimizer}, attention {setup.attn}" + "".join(f", {e}" for e in extras)
    )
