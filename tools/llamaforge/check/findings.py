"""`llamaforge check`: what Axolotl 0.19 would make of a config, before any GPU hour is spent.

(a) Axolotl's own validation for the target hardware (one subprocess for all configs);
(b) keys Axolotl would silently ignore, with a did-you-mean;
(c) deprecated keys, with their replacement;
(d) known-bad combinations (facts/axolotl_rules.yaml);
(e) memory feasibility through `llamaforge.planning.estimate`.

The finders (`find_ignored_keys`, `find_deprecated_keys`, `find_bad_combinations`,
`schema_findings`, `memory_findings`) are pure: plain data in, findings out. `check_configs` is the
edge that reads files, runs Axolotl and calls the estimator."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any


from ..errors import UserError
from ..paths import display_path, read_facts, repo_root
from ..planning.catalog import Hardware, ModelSpec, get_model, parse_hardware
from ..planning.train_setup import TrainSetup
from .axolotl_schema import gpu_capabilities, installed_version, load_snapshot
from .reader import (
    NOT_JUDGED, DeepSpeedInfo, LoadedConfig, Note, attn_implementation, batch_shape, describe_setup, float_or,
    fsdp_block, fsdp_version, invalid_batch_keys, read_config, read_deepspeed, resolve_model, setup_from_config,
)

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | info
    key: str       # the config key it is about: `flash_attention`, `datasets[0].typ`, `memory`
    message: str
    # fixes a rule suggests, as config changes: {"text", "config"} before they are re-estimated;
    # afterwards also "suggested" (bool), "peak_gpu_gib" and "why" (see `settle_fixes`)
    fixes: tuple[dict, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict:
        out = {"severity": self.severity, "key": self.key, "message": self.message}
        if self.fixes:
            out["fixes"] = [{k: v for k, v in fx.items() if k != "config"} | {"config": fx.get("config")}
                            for fx in self.fixes]
        return out


@dataclass
class CheckReport:
    path: str
    findings: list[Finding] = field(default_factory=list)
    estimate: Any | None = None        # llamaforge.planning.estimate.Estimate
    setup: TrainSetup | None = None    # what the memory estimate priced

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
            "estimate": self.estimate.to_dict() if self.estimate is not None else None,
        }


@lru_cache(maxsize=1)
def load_rules() -> dict:
    return read_facts("axolotl_rules.yaml")


# ---- (b) and (c): walking the config's keys along the schema ---------------------------------


@dataclass(frozen=True)
class KeySite:
    """One key of the config, where it sits and what the schema says about it."""

    path: str                    # `datasets[0].type`
    key: str
    value: Any
    models: tuple[str, ...]      # the schema models this mapping is validated with
    suggestable: tuple[str, ...]  # the spellings those models accept, deprecated ones left out
    field_name: str | None       # the field the key sets; None when the key is ignored
    field: dict | None
    rewritten_to: str | None = None  # Axolotl renames the key before validating (deprecated)


def _dataset_model(entry: dict, rl: Any, rules: dict) -> str:
    """The model validate_config converts one `datasets` entry into."""
    choice = rules["dataset_models"]
    if rl and str(rl) in choice["by_rl"]:
        return choice["by_rl"][str(rl)]
    kind = entry.get("type")
    if isinstance(kind, str) and kind in choice["by_type"]:
        return choice["by_type"][kind]
    return choice["default"]


def _rewrite(models: tuple[str, ...], key: str, rules: dict) -> tuple[str, dict] | None:
    for rewrite in rules.get("key_rewrites", []):
        prefix = rewrite["strip_prefix"]
        if rewrite["model"] in models and key.startswith(prefix) and key not in rewrite.get("except", []):
            return key[len(prefix):], rewrite
    return None


def walk_keys(cfg: dict, table: dict, rules: dict) -> Iterator[KeySite]:
    """Every key of the config, nested blocks and list entries included, paired with the schema
    field it sets (if any). Pure."""

    def walk(data: dict, models: tuple[str, ...], path: str) -> Iterator[KeySite]:
        by_key: dict[str, tuple[str, dict]] = {}
        for model in models:
            for name, entry in table["models"][model]["fields"].items():
                for spelling in entry["keys"]:
                    by_key.setdefault(spelling, (name, entry))
        outdated = set(table.get("deprecated_parameters", {})) if models == (table["root"],) else set()
        suggestable = tuple(
            k for k, (name, entry) in by_key.items() if not entry.get("deprecated") and name not in outdated
        )
        for raw_key, value in data.items():
            key = str(raw_key)
            where = f"{path}.{key}" if path else key
            hit, rewritten = by_key.get(key), None
            if hit is None and (rw := _rewrite(models, key, rules)) and rw[0] in by_key:
                rewritten, hit = rw[0], by_key[rw[0]]
            name, entry = hit if hit else (None, None)
            yield KeySite(where, key, value, models, suggestable, name, entry, rewritten)
            nested = tuple(entry["models"]) if entry else ()
            if not nested:
                continue
            if isinstance(value, dict):
                yield from walk(value, nested, where)
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if not isinstance(item, dict):
                        continue
                    item_models = nested
                    if not path and name == "datasets":
                        item_models = (_dataset_model(item, cfg.get("rl"), rules),)
                    yield from walk(item, item_models, f"{where}[{i}]")

    yield from walk(cfg, (table["root"],), "")


def _closest(key: str, accepted: tuple[str, ...]) -> str | None:
    """The accepted key a misspelt one most likely meant. Axolotl names keys by family
    (`lora_*`, `dpo_*`, `eval_*`), so a shared first word counts, and so do abbreviated words
    (`lora_rank` -> `lora_r`, `sequence_length` -> `sequence_len`)."""
    words = key.lower().split("_")

    def score(candidate: str) -> float:
        other = candidate.lower().split("_")
        ratio = difflib.SequenceMatcher(None, key.lower(), candidate.lower()).ratio()
        same_family = 0.2 if words[0] == other[0] else 0.0
        abbreviated = 0.1 if len(words) == len(other) and all(
            a.startswith(b) or b.startswith(a) for a, b in zip(words, other)
        ) else 0.0
        return ratio + same_family + abbreviated if ratio >= 0.5 else 0.0

    best = max(accepted, key=score, default=None)
    return best if best is not None and score(best) >= 0.75 else None


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _identity_mapping(value: Any) -> bool:
    """{role: role, content: content} or {user: [user], assistant: [assistant]}: every name maps to itself."""
    return isinstance(value, dict) and bool(value) and all(
        v == k or (isinstance(v, list) and v == [k]) for k, v in value.items())


def _unread_default(site: KeySite, name: str, view: dict, rules: dict) -> dict | None:
    """The ignored_key_defaults entry saying that this dropped key's value is what Axolotl does anyway."""
    for entry in rules.get("ignored_key_defaults", []):
        if entry["model"] not in site.models or entry["key"] != name:
            continue
        if "when" in entry and not _holds(entry["when"], view, rules):
            continue
        if "equals" in entry and not (site.value == entry["equals"] or str(site.value) == str(entry["equals"])):
            continue
        if entry.get("identity_mapping") and not _identity_mapping(site.value):
            continue
        return entry
    return None


def find_ignored_keys(cfg: dict, table: dict, rules: dict, *, plugins_unloaded: bool = False,
                      facts: dict | None = None) -> list[Finding]:
    """Keys no schema field accepts: pydantic drops them and Axolotl never sees them. Pure.
    Graded by what is lost (docs/check.md): an error when the key sets something Axolotl will not do;
    a warning when its value is empty or is what Axolotl does anyway (axolotl_rules.yaml
    `ignored_key_defaults`), and when a plugin whose schema could not be loaded may define it.
    `facts`: derive_facts' values, for the conditions of ignored_key_defaults."""
    version = table["axolotl_version"]
    hints = rules.get("ignored_key_hints", {})
    view = {**cfg, **(facts or {})}
    findings = []
    for site in walk_keys(cfg, table, rules):
        if site.field is not None:
            continue
        if any(table["models"][m]["extra"] != "ignore" for m in site.models):
            continue  # forbid: Axolotl's validation reports it; allow: Axolotl keeps it
        rewrite = _rewrite(site.models, site.key, rules)
        name = rewrite[0] if rewrite else site.key
        if site.key in hints:
            advice = " ".join(str(hints[site.key]).split())
        elif (close := _closest(name, site.suggestable)) is not None:
            advice = f"did you mean `{close}`?"
        else:
            advice = "remove it or check Axolotl's config reference"
        where = "" if "." not in site.path and "[" not in site.path else f" in {site.path.rsplit('.', 1)[0]}"
        message = f"`{site.key}` is not an Axolotl {version} key{where}, so Axolotl silently ignores it"
        default = _unread_default(site, name, view, rules)
        if _is_empty(site.value):
            findings.append(Finding("warning", site.path, f"{message}; its value is empty, so nothing is lost: remove it"))
        elif default is not None:
            findings.append(Finding("warning", site.path, (
                f"{message}; nothing is lost, `{site.value}` is what Axolotl does anyway ({default['does']}): "
                "remove it so that the config says only what Axolotl reads")))
        elif plugins_unloaded:
            findings.append(Finding("warning", site.path, f"{message}; {advice} (unless one of the config's plugins defines it)"))
        else:
            findings.append(Finding("error", site.path, f"{message}; {advice}"))
    return findings


def find_deprecated_keys(cfg: dict, table: dict, rules: dict) -> list[Finding]:
    """Deprecated keys and their replacement: Field(deprecated=...) in the schema (legacy
    attention booleans included), Axolotl's DeprecatedParameters, renames Axolotl makes before
    validating, and fields its validators declare deprecated. Pure."""
    version = table["axolotl_version"]
    legacy = dict(table.get("legacy_attention_flags", []))
    deprecated_parameters = table.get("deprecated_parameters", {})
    by_validator = {(d["model"], d["key"]): d for d in rules.get("validator_deprecations", [])}
    root = table["root"]
    findings = []
    for site in walk_keys(cfg, table, rules):
        if site.field is None:
            continue
        if site.rewritten_to is not None:
            rewrite = _rewrite(site.models, site.key, rules)[1]
            text = " ".join(rewrite["message"].split()).format(new=site.rewritten_to)
            findings.append(Finding("warning", site.path, f"`{site.key}`: {text}"))
        elif site.field.get("deprecated"):
            findings.append(Finding(
                "warning", site.path,
                f"`{site.key}` is deprecated in Axolotl {version}: {' '.join(site.field['deprecated'].split())}",
            ))
        elif site.key in legacy and site.models == (root,):
            findings.append(Finding(
                "warning", site.path,
                f"`{site.key}` is deprecated in Axolotl {version}: use `attn_implementation: {legacy[site.key]}`",
            ))
        elif site.models == (root,) and site.field_name in deprecated_parameters:
            dp = deprecated_parameters[site.field_name]
            removed = dp["raises"] and site.value not in (None, False)
            findings.append(Finding(
                "error" if removed else "warning", site.path,
                f"`{site.key}` is deprecated in Axolotl {version}: {dp['message']}",
            ))
        else:
            for model in site.models:
                if (d := by_validator.get((model, site.key))) is not None:
                    findings.append(Finding("warning", site.path, " ".join(d["message"].split())))
                    break
    return findings


# ---- (d) known-bad combinations ------------------------------------------------------------


def _holds(cond: dict, view: dict, rules: dict) -> bool:
    if "all" in cond:
        return all(_holds(c, view, rules) for c in cond["all"])
    if "any" in cond:
        return any(_holds(c, view, rules) for c in cond["any"])
    if "not" in cond:
        return not _holds(cond["not"], view, rules)
    value = view.get(cond["key"])
    if "equals" in cond:
        return value == cond["equals"]
    if "in" in cond:
        return value in cond["in"]
    if "not_in" in cond:
        return value not in cond["not_in"]
    if "not_in_list" in cond:
        return value not in rules[cond["not_in_list"]]
    if "truthy" in cond:
        return bool(value) == bool(cond["truthy"])
    if "present" in cond:
        return (value is not None) == bool(cond["present"])
    raise ValueError(f"axolotl_rules.yaml: unknown condition {cond!r}")


def _deepspeed_batch_sizes(cfg: dict, facts: dict) -> list[dict]:
    """Explicit (non-"auto") batch values of the DeepSpeed JSON that transformers would find
    mismatched with Axolotl's micro_batch_size / gradient_accumulation_steps / world size."""
    ds = facts.get("_deepspeed_json")
    if not isinstance(ds, dict):
        return []
    micro, accum, world = facts["_micro_batch_size"], facts["_gradient_accumulation_steps"], facts["_world_size"]
    expected = {
        "train_micro_batch_size_per_gpu": (micro, f"micro_batch_size {micro}"),
        "gradient_accumulation_steps": (accum, f"gradient_accumulation_steps {accum}"),
    }
    if world:
        total = micro * accum * world
        expected["train_batch_size"] = (
            total, f"micro_batch_size {micro} x gradient_accumulation_steps {accum} x {world} GPUs = {total}"
        )
    out = []
    for ds_key, (want, how) in expected.items():
        have = float_or(ds.get(ds_key))
        if have is not None and have != want:
            out.append({"what": f"{ds_key}={ds[ds_key]}", "expected": how})
    return out


def _batch_sizes(cfg: dict, facts: dict) -> list[dict]:
    """micro_batch_size, gradient_accumulation_steps or batch_size below 1 (set in the config)."""
    return [{"what": key, "value": cfg[key], "_key": key} for key in invalid_batch_keys(cfg)]


_TRANSFORMERS_CLASS = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def _model_type_alias(cfg: dict, facts: dict) -> list[dict]:
    """`model_type`, an alias of type_of_model; an error when it cannot name a transformers class."""
    value = cfg.get("model_type")
    if value is None:
        return []
    if isinstance(value, str) and _TRANSFORMERS_CLASS.match(value):
        return [{"value": value, "problem": ""}]
    return [{"value": value, "_severity": "error",
             "problem": f"; `{value}` names no transformers class, so loading the model fails "
                        "(after the GPUs are allocated)"}]


def _lora_targets_both(cfg: dict, facts: dict) -> list[dict]:
    modules = cfg.get("lora_target_modules")
    if not cfg.get("lora_target_linear") or not modules:
        return []
    names = [modules] if isinstance(modules, str) else [str(m) for m in modules] if isinstance(modules, list) else [str(modules)]
    linear = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    extra = sorted(set(names) - linear)
    return [{"value": ", ".join(names),
             "extra": f"; {', '.join(extra)} are adapted on top of every linear layer" if extra else ""}]


def looks_like_local_path(name: str) -> bool:
    """A base_model written as a path rather than a Hub id (`owner/name`): absolute, ./, ../, ~, or
    more than one `/`."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name


def _local_base_model(cfg: dict, facts: dict) -> list[dict]:
    base = str(cfg.get("base_model") or "").strip()
    if not base or not looks_like_local_path(base):
        return []
    dirs = facts.get("_search_dirs") or [Path.cwd()]
    path = Path(base).expanduser()
    candidates = [path] if path.is_absolute() else [d / path for d in dirs]
    if any(c.exists() for c in candidates):
        return []
    looked = ", ".join(dict.fromkeys(str(c) for c in candidates))
    after = facts.get("_after_recipe")
    if after:
        # a stage recipe (DPO) starts from the model another recipe writes: expected before that run
        return [{"_severity": "info", "_message": (
            f"base_model `{base}` does not exist yet: it is the merged model of {after}, which that recipe's "
            "training and merge write; expected before then, and needed before this stage launches")}]
    return [{"value": base, "looked": looked}]


def schedules_no_evaluation(cfg: dict) -> bool:
    """True when a config holds an eval set and asks for evaluations that Axolotl 0.19 never schedules:
    evals_per_epoch x num_epochs <= 1 (but > 0) and neither eval_steps nor eval_strategy. Axolotl keeps
    the derived eval_steps = 1 / that product only below 1 (utils/config normalize_config), and the
    trainer then gets no evaluation strategy. Pure."""
    evals, epochs = cfg.get("evals_per_epoch"), cfg.get("num_epochs", 1)
    if not (cfg.get("val_set_size") or cfg.get("test_datasets")) or cfg.get("eval_steps") or cfg.get("eval_strategy"):
        return False
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (evals, epochs)):
        return False
    return evals * epochs <= 1


def _evals_never_run(cfg: dict, facts: dict) -> list[dict]:
    if not schedules_no_evaluation(cfg):
        return []
    evals, epochs = cfg["evals_per_epoch"], cfg.get("num_epochs", 1)
    count = evals * epochs
    asked = f"{count:g} evaluation" + ("" if count == 1 else "s")
    return [{"evals": evals, "epochs": epochs, "asked": asked, "ratio": f"{1 / count:g}"}]


def _dpo_loss_weights(cfg: dict, facts: dict) -> list[dict]:
    if str(cfg.get("rl") or "").lower() != "dpo" or cfg.get("dpo_loss_weights") is None:
        return []
    types, weights = cfg.get("dpo_loss_type"), cfg.get("dpo_loss_weights")
    n = len(types) if isinstance(types, list) else 1
    if isinstance(weights, list) and len(weights) == n:
        return []
    shown = ", ".join(map(str, types)) if isinstance(types, list) else "sigmoid (the default)"
    return [{"value": weights, "types": shown, "n": n}]


RULE_CHECKS = {
    "dpo_loss_weights": _dpo_loss_weights,
    "evals_never_run": _evals_never_run,
    "deepspeed_batch_sizes": _deepspeed_batch_sizes,
    "batch_sizes": _batch_sizes,
    "model_type_alias": _model_type_alias,
    "lora_targets_both": _lora_targets_both,
    "local_base_model": _local_base_model,
}


class _Values(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def _rule_text(rule: dict, values: dict) -> str:
    message = " ".join(str(rule["message"]).split()).format_map(_Values(
        {k: ("none" if v is None else v) for k, v in values.items()}
    ))
    return f"{message}; fix: {rule['fix']}" if rule.get("fix") else message


def _rule_finding(rule: dict, values: dict, hit: dict | None = None) -> Finding:
    hit = hit or {}
    return Finding(hit.get("_severity", rule["severity"]), hit.get("_key", rule["key"]),
                   hit.get("_message") or _rule_text(rule, {**values, **hit}),
                   tuple({"text": fx["text"], "config": dict(fx["config"])} for fx in rule.get("fixes", ())))


def find_bad_combinations(cfg: dict, facts: dict, rules: dict) -> list[Finding]:
    """Known-bad combinations of facts/axolotl_rules.yaml. `facts` are derived values (names
    starting with `_`, see `derive_facts`). The fixes of a rule come back unsettled: `settle_fixes`
    re-estimates them. Pure."""
    view = {**cfg, **facts}
    findings = []
    for rule in rules.get("rules", []):
        if "check" in rule:
            for hit in RULE_CHECKS[rule["check"]](cfg, facts):
                findings.append(_rule_finding(rule, view, hit))
        elif _holds(rule["when"], view, rules):
            findings.append(_rule_finding(rule, view))
    return findings


def apply_config_change(cfg: dict, change: dict) -> dict:
    """The config with `change` applied (a null value removes the key). Pure."""
    out = dict(cfg)
    for key, value in change.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def settle_fixes(findings: list[Finding], current: Any, price: Callable[[dict], tuple[Any, str | None]]) -> list[Finding]:
    """Decide each suggested fix on its re-estimated memory: `price(config change)` returns the
    estimate of the config with that change (or None and why not). A fix that leaves the config not
    fitting where it fits now, or needing more memory while it does not fit, is not suggested, and the
    finding says why. `current`: the config's own estimate (None when memory is not checked). Pure."""
    out = []
    for f in findings:
        if not f.fixes:
            out.append(f)
            continue
        parts, settled = [], []
        for fx in f.fixes:
            fixed, refused = price(fx["config"]) if current is not None else (None, None)
            entry = {**fx, "suggested": True, "peak_gpu_gib": None, "why": None}
            if current is None:
                parts.append(f"fix: {fx['text']}")
            elif fixed is None:
                entry.update(suggested=False, why=f"the estimator refuses the changed config ({refused})")
                parts.append(f"not suggesting {fx['text']}: {entry['why']}")
            else:
                entry["peak_gpu_gib"] = round(float(fixed.peak_gpu_gib), 2)
                worse = not fixed.fits and (current.fits or fixed.peak_gpu_gib > current.peak_gpu_gib)
                if worse:
                    largest = max((fixed.breakdown or {}).items(), key=lambda kv: kv[1], default=(None, 0.0))
                    entry.update(suggested=False, why=(
                        f"with it the config would need ~{fixed.peak_gpu_gib:,.1f} GiB per GPU, over the "
                        f"{fixed.usable_gpu_gib:,.1f} usable ({str(largest[0]).replace('_', ' ')} {largest[1]:,.1f} GiB), "
                        + (f"where it fits now with ~{current.peak_gpu_gib:,.1f}" if current.fits
                           else f"more than the ~{current.peak_gpu_gib:,.1f} it needs now")))
                    parts.append(f"not suggesting {fx['text']}: {entry['why']}")
                else:
                    verdict = getattr(fixed, "verdict", "fits" if fixed.fits else "does not fit")
                    parts.append(f"fix: {fx['text']} (re-estimated: ~{fixed.peak_gpu_gib:,.1f} of "
                                 f"{fixed.usable_gpu_gib:,.1f} GiB usable per GPU, {verdict})")
            settled.append(entry)
        out.append(Finding(f.severity, f.key, f"{f.message}; " + "; ".join(parts), tuple(settled)))
    return out


def schema_defaults(table: dict) -> dict:
    """The top-level fields' scalar defaults (sequence_len 512, micro_batch_size 1…). Pure."""
    return {name: e.get("default") for name, e in table["models"][table["root"]]["fields"].items()}


def derive_facts(
    cfg: dict, *, table: dict, deepspeed: DeepSpeedInfo | None, hardware: Hardware | None,
    search_dirs: list[Path] | None = None, header: dict[str, str] | None = None,
) -> dict:
    """The derived values rules test (see the header of facts/axolotl_rules.yaml). Pure."""
    defaults = schema_defaults(table)
    attn = attn_implementation(cfg, table.get("legacy_attention_flags", []))
    micro, accum = batch_shape(cfg, defaults)
    return {
        "_attn_implementation": attn,
        "_attention": f"attn_implementation `{attn}`" if attn else "no attention backend set",
        "_deepspeed_stage": deepspeed.stage if deepspeed else None,
        "_deepspeed_json": deepspeed.config if deepspeed else None,
        "_fsdp": fsdp_block(cfg) is not None,
        "_fsdp_version": fsdp_version(cfg),
        "_world_size": hardware.world_size if hardware else None,
        "_on_cpu": _on_cpu(hardware),
        "_micro_batch_size": micro,
        "_gradient_accumulation_steps": accum,
        "_search_dirs": list(search_dirs or []),
        "_after_recipe": (header or {}).get("after"),
    }


# ---- (a) and (e): Axolotl's verdict and the memory verdict as findings ------------------------


def _guess_key(message: str, cfg: dict) -> str:
    """The config key a whole-config validation error is about: the first of the config's keys
    the message names."""
    best: tuple[int, str] | None = None
    for key in cfg:
        m = re.search(rf"(?<!\w){re.escape(str(key))}(?!\w)", message)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), str(key))
    return best[1] if best else "schema"


def schema_findings(errors: list, cfg: dict, version: str) -> list[Finding]:
    """Axolotl's ValidationErrors (SchemaError key/message pairs) as error findings. Pure."""
    return [
        Finding("error", key, f"Axolotl {version} rejects the config: `{key}`: {err.message}"
                if err.key else f"Axolotl {version} rejects the config: {err.message}")
        for err in errors
        for key in [err.key or _guess_key(err.message, cfg)]
    ]


def gpu_machine_findings(needs: list[str], rules: dict) -> list[Finding]:
    """Packages Axolotl's validation imported that this machine lacks (validated with a stand-in):
    the training machine needs them. Pure."""
    by_module = {p["module"]: p for p in rules.get("gpu_machine_packages", [])}
    return [Finding("warning", "schema", (
        f"Axolotl's validation imports `{m}` for {by_module[m]['needed_for']}; it is not installed here, so the "
        f"config was validated as if it were: the training machine needs it ({by_module[m]['install']})"))
        for m in needs if m in by_module]


def memory_findings(estimate: Any, hardware: Hardware) -> list[Finding]:
    """The estimator's verdict as a finding: error with the largest parts when it does not fit,
    warning when it is tight (within 5% of the usable memory). Pure."""
    peak, usable = float(estimate.peak_gpu_gib), float(estimate.usable_gpu_gib)
    if estimate.fits and getattr(estimate, "verdict", "fits") == "tight":
        return [Finding("warning", "memory", f"tight: ~{peak:,.1f} GiB of {usable:,.1f} GiB usable per GPU on {hardware} "
                        f"({estimate.verdict_text()}), within the estimator's own error; lower micro_batch_size "
                        "or sequence_len for room")]
    if estimate.fits:
        return [Finding("info", "memory", f"fits: ~{peak:,.1f} GiB of {usable:,.1f} GiB usable per GPU on {hardware}")]
    parts = sorted(((float(v), k) for k, v in (estimate.breakdown or {}).items()), reverse=True)[:3]
    largest = ", ".join(f"{k} {v:,.1f} GiB" for v, k in parts)
    return [Finding(
        "error", "memory",
        f"does not fit: needs ~{peak:,.1f} GiB per GPU, {hardware} has {usable:,.1f} GiB usable"
        + (f"; largest: {largest}" if largest else ""),
    )]


# ---- the edge: files, Axolotl, the estimator --------------------------------------------------


@dataclass
class _ConfigContext:
    loaded: LoadedConfig
    hardware: Hardware | None
    notes: list[Note]
    deepspeed: DeepSpeedInfo | None
    search_dirs: list[Path]


def _search_dirs(loaded: LoadedConfig) -> list[Path]:
    dirs = [Path.cwd(), loaded.folder]
    try:
        dirs.append(repo_root())
    except UserError:
        pass
    return list(dict.fromkeys(d.resolve() for d in dirs))


def _header_hardware(label: str) -> Hardware:
    """The hardware a recipe header declares; the CPU recipes of the demo and tests say `cpu`."""
    return parse_hardware(label, allow_cpu=True)


def _on_cpu(hardware: Hardware | None) -> bool:
    return hardware is not None and hardware.gpu.id == "cpu"


def _context(loaded: LoadedConfig, hardware: Hardware | None) -> _ConfigContext:
    notes: list[Note] = []
    if hardware is None and loaded.header.get("hardware"):
        try:
            hardware = _header_hardware(loaded.header["hardware"])
        except UserError as exc:
            notes.append(("error", "llamaforge-hardware", f"recipe header: {exc}"))
    dirs = _search_dirs(loaded)
    deepspeed = read_deepspeed(loaded.data.get("deepspeed"), dirs)
    if deepspeed and deepspeed.error:
        notes.append(("error", "deepspeed", deepspeed.error))
    elif deepspeed and deepspeed.note:
        notes.append(("warning", "deepspeed", deepspeed.note))
    return _ConfigContext(loaded, hardware, notes, deepspeed, dirs)


def _schema_request(ctx: _ConfigContext, rules: dict) -> dict:
    hw = ctx.hardware
    # packages only a GPU machine has get a stand-in, unless the target is this CPU
    gpu_packages = [p["module"] for p in rules.get("gpu_machine_packages", [])]
    if hw is None:
        return {"config": ctx.loaded.data, "capabilities": None, "env_capabilities": None, "gpu_packages": gpu_packages}
    caps = rules["capabilities"]
    if _on_cpu(hw):  # what Axolotl's CLI detects on a host without CUDA
        cpu = {"bf16": False, "tf32": False, "fp8": False, "n_gpu": hw.world_size, "n_node": 1,
               "compute_capability": None}
        return {"config": ctx.loaded.data, "capabilities": cpu,
                "env_capabilities": {"torch_version": installed_version("torch")}}
    return {
        "gpu_packages": gpu_packages,
        "config": ctx.loaded.data,
        "capabilities": gpu_capabilities(
            bf16=hw.gpu.bf16, compute_capability=hw.gpu.compute_capability, world_size=hw.world_size,
            nodes=hw.nodes, tf32_min_cc=caps["tf32_min_compute_capability"],
            fp8_min_cc=caps["fp8_min_compute_capability"],
        ),
        "env_capabilities": {"torch_version": installed_version("torch")},
    }


def _fallback_table(rules: dict) -> tuple[dict | None, str | None]:
    """The stored schema of the installed Axolotl, else of the pinned one (with a note)."""
    installed, pinned = installed_version("axolotl"), str(rules["axolotl_version"])
    if installed and (table := load_snapshot(installed)) is not None:
        return table, None
    table = load_snapshot(pinned)
    if table is None:
        return None, f"no stored schema for Axolotl {installed or pinned}; keys were not checked"
    if installed and installed != pinned:
        return table, f"keys checked against Axolotl {pinned}'s stored schema; {installed} is installed"
    return table, None


def _estimate(setup: TrainSetup, rl: Any = None) -> tuple[Any | None, Finding | None]:
    from ..planning.estimate import estimate

    price = estimate
    if str(rl) in ("dpo", "ipo") and setup.is_adapter:
        from ..planning.dpo import estimate_dpo as price  # chosen + rejected in one forward, and the reference's
    try:
        return price(setup), None
    except UserError as exc:
        return None, Finding("warning", "memory", f"{NOT_JUDGED}: the estimator cannot price it ({exc})")


def _setup_of(cfg: dict, ctx: _ConfigContext, table: dict, spec: ModelSpec) -> tuple[TrainSetup | None, list]:
    return setup_from_config(
        cfg, model=spec, hardware=ctx.hardware, deepspeed=ctx.deepspeed,
        defaults=schema_defaults(table), legacy_attention_flags=table.get("legacy_attention_flags", []),
    )


def _memory(ctx: _ConfigContext, table: dict, model: str | ModelSpec | None
            ) -> tuple[list[Finding], Any, TrainSetup | None, Callable[[dict], tuple[Any, str | None]] | None]:
    """Memory findings, the estimate, the setup it priced, and a function that prices the config
    with a change applied (for `settle_fixes`)."""
    if ctx.hardware is None:
        return [Finding("info", "memory", "memory not checked: no hardware given (pass --gpus, e.g. --gpus 8xH100-80GB)")], None, None, None
    if _on_cpu(ctx.hardware):
        return [Finding("info", "memory", f"memory not checked: a CPU run ({ctx.hardware.label})")], None, None, None
    choice = resolve_model(ctx.loaded.data, ctx.loaded.header, model, ctx.search_dirs)
    findings = [Finding(*n) for n in choice.notes]
    if choice.model is None:
        return findings, None, None, None
    setup, notes = _setup_of(ctx.loaded.data, ctx, table, choice.model)
    findings += [Finding(*n) for n in notes]
    if setup is None:
        return findings, None, None, None
    findings.append(Finding("info", "setup", describe_setup(setup)))
    estimate, problem = _estimate(setup, ctx.loaded.data.get("rl"))
    if problem is not None:
        return findings + [problem], None, setup, None

    def price(change: dict) -> tuple[Any, str | None]:
        changed = apply_config_change(ctx.loaded.data, change)
        fixed_setup, _ = _setup_of(changed, ctx, table, choice.model)
        if fixed_setup is None:
            return None, "it cannot be read as a training setup"
        fixed, refused = _estimate(fixed_setup, changed.get("rl"))
        return fixed, None if refused is None else refused.message

    return findings + memory_findings(estimate, ctx.hardware), estimate, setup, price


def _report(ctx: _ConfigContext, run: Any, index: int, rules: dict, model: Any, schema: bool) -> CheckReport:
    cfg = ctx.loaded.data
    findings: list[Finding] = [Finding(*n) for n in ctx.notes]
    verdict = run.verdicts[index] if run is not None and not run.failure else None
    table = (verdict.table if verdict else None) or (run.table if run is not None and not run.failure else None)
    if verdict is not None:
        findings += schema_findings(verdict.errors, cfg, run.axolotl_version or "?")
        findings += gpu_machine_findings(getattr(verdict, "needs", []), rules)
        if ctx.hardware is None:
            findings.append(Finding("info", "schema", "validated without GPU capabilities (no hardware given)"))
    elif schema:
        findings.append(Finding(
            "error", "schema",
            f"Axolotl's own validation was not run: {run.failure if run else 'not started'}; "
            "install the train extra (axolotl[deepspeed]==0.19.0) or pass --no-schema",
        ))
    else:
        findings.append(Finding("info", "schema", "Axolotl's own validation skipped (--no-schema)"))
    if table is None:
        table, note = _fallback_table(rules)
        if note:
            findings.append(Finding("warning" if table is None else "info", "schema", note))
    if table is not None:
        plugins_unloaded = bool(cfg.get("plugins")) and (verdict is None or verdict.table is None)
        facts = derive_facts(cfg, table=table, deepspeed=ctx.deepspeed, hardware=ctx.hardware,
                             search_dirs=ctx.search_dirs, header=ctx.loaded.header)
        findings += find_ignored_keys(cfg, table, rules, plugins_unloaded=plugins_unloaded, facts=facts)
        rejected = {f.key for f in findings if f.severity == "error" and "rejects the config" in f.message}
        # a removed key is reported once: Axolotl's own rejection names it already
        findings += [f for f in find_deprecated_keys(cfg, table, rules)
                     if not (f.severity == "error" and f.key in rejected)]
        combos = find_bad_combinations(cfg, facts, rules)
        memory, estimate, setup, price = _memory(ctx, table, model)
        findings += settle_fixes(combos, estimate if price is not None else None, price or (lambda change: (None, None)))
    else:
        memory, estimate, setup = [Finding("info", "memory", "memory not checked: no schema defaults")], None, None
    findings += memory
    findings.sort(key=lambda f: SEVERITIES.index(f.severity))
    return CheckReport(_shown_path(ctx.loaded.path), findings, estimate, setup)


def _hardware(hardware: Hardware | str | None, nodes: int | None) -> Hardware | None:
    if isinstance(hardware, str):
        return parse_hardware(hardware, nodes=nodes)
    if nodes is None:
        return hardware
    if hardware is None:
        raise UserError("--nodes needs --gpus (e.g. --gpus 8xH100-80GB --nodes 2)")
    return Hardware(hardware.gpu, hardware.gpus_per_node, nodes)


def _shown_path(path: Path) -> str:
    try:
        return display_path(path)
    except UserError:  # installed outside a LlamaForge checkout
        return str(path)


CONFIG_SUFFIXES = (".yaml", ".yml")


def expand_config_paths(paths: list[str | os.PathLike]) -> list[Path]:
    """Files as they are; a folder as every *.yaml / *.yml under it, sorted, so that one `check`
    call (one Axolotl process) covers a whole folder."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in CONFIG_SUFFIXES and p.is_file())
            if not found:
                raise UserError(f"{path}: a folder with no .yaml/.yml config in it")
            out += found
        else:
            out.append(path)
    return out


def check_configs(
    paths: list[str | os.PathLike],
    *,
    hardware: Hardware | str | None | list = None,
    model: ModelSpec | str | None = None,
    schema: bool = True,
    nodes: int | None = None,
    schema_runner: Callable[..., Any] | None = None,
) -> list[CheckReport]:
    """Check several Axolotl configs; Axolotl's validation runs once, in one subprocess, for all.
    `hardware` (e.g. "8xH100-80GB", or a list with one per path) and `model` override what recipe
    headers declare. Bad arguments and unreadable configs raise UserError before anything runs.
    `schema_runner` replaces axolotl_schema.run_schema (tests record the run with it)."""
    rules = load_rules()
    if isinstance(hardware, list):
        if len(hardware) != len(paths):
            raise ValueError("one hardware per config path")
        hws = [_hardware(h, nodes) for h in hardware]
    else:
        hws = [_hardware(hardware, nodes)] * len(paths)
    spec = get_model(model) if isinstance(model, str) else model
    contexts = [_context(read_config(p), hw) for p, hw in zip(paths, hws)]
    run = None
    if schema and contexts:
        if schema_runner is None:
            from .axolotl_schema import run_schema as schema_runner
        run = schema_runner([_schema_request(ctx, rules) for ctx in contexts], want_table=True)
    return [_report(ctx, run, i, rules, spec, schema) for i, ctx in enumerate(contexts)]


def check_config(
    path: str | os.PathLike,
    *,
    hardware: Hardware | str | None = None,
    model: ModelSpec | str | None = None,
    schema: bool = True,
) -> CheckReport:
    """Check one Axolotl config (see check_configs)."""
    return check_configs([path], hardware=hardware, model=model, schema=schema)[0]
