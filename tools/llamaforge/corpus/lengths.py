"""Token lengths of rows: exact with the target model's tokenizer when one is available locally,
otherwise a stated approximation (characters / chars_per_token + a per-message template overhead).
Axolotl drops rows longer than the recipe's sequence_len without an error, so the report counts
them per category.

The statistics are pure (`length_stats`); `resolve_tokenizer` looks on disk (never on the network)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError


@dataclass(frozen=True)
class LengthMethod:
    """How token lengths are measured: `tokenizer_file` (exact) or the approximation."""

    tokenizer_file: str | None
    chars_per_token: float
    tokens_per_message: int
    note: str

    @property
    def exact(self) -> bool:
        return self.tokenizer_file is not None

    def describe(self) -> str:
        if self.exact:
            return (f"exact: tokenizer {self.tokenizer_file} on every turn's text + "
                    f"{self.tokens_per_message} template tokens per turn ({self.note})")
        return (f"approximate: characters / {self.chars_per_token:g} + {self.tokens_per_message} template "
                f"tokens per turn ({self.note})")


    def tokens(self, size: np.ndarray, turns: np.ndarray) -> np.ndarray:
        """Token lengths from the per-row `size` the scan measured (content tokens when exact,
        characters otherwise) and the number of turns."""
        content = size.astype(np.int64)
        if not self.exact:
            content = np.ceil(content / self.chars_per_token).astype(np.int64)
        return np.minimum(content + self.tokens_per_message * turns.astype(np.int64), 0xFFFFFFFF).astype(np.uint32)


def length_stats(tokens: np.ndarray, sequence_len: int) -> dict:
    """p50/p95/max/mean of token lengths and how many rows exceed `sequence_len`."""
    if len(tokens) == 0:
        return {"rows": 0, "p50": None, "p95": None, "max": None, "mean": None, "over_sequence_len": 0}
    t = tokens.astype(np.int64)
    return {
        "rows": int(len(t)),
        "p50": int(np.percentile(t, 50, method="nearest")),
        "p95": int(np.percentile(t, 95, method="nearest")),
        "max": int(t.max()),
        "mean": round(float(t.mean()), 1),
        "over_sequence_len": int((t > sequence_len).sum()),
    }


def _tokenizer_json_in(path: Path) -> Path | None:
    if path.is_file() and path.name.endswith(".json"):
        return path
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return path / "tokenizer.json"
    return None


def _cached_tokenizer(repo: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo, "tokenizer.json")
    return Path(found) if isinstance(found, str) else None


def _template_overhead(tokenizer_file: Path) -> tuple[int, str] | None:
    """Tokens the chat template adds per turn, measured by rendering a two-turn conversation with the
    template of tokenizer_config.json next to the tokenizer (jinja2, no transformers import)."""
    config_file = tokenizer_file.parent / "tokenizer_config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        template = config.get("chat_template")
        if not isinstance(template, str):
            return None
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        from tokenizers import Tokenizer

        def _raise(msg):
            raise ValueError(msg)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        tok = Tokenizer.from_file(str(tokenizer_file))
        specials = {k: (v if isinstance(v, str) else (v or {}).get("content", "")) for k, v in config.items()
                    if k in ("bos_token", "eos_token", "pad_token", "unk_token")}
        texts = ["What is the capital of France?", "Paris is the capital of France."]
        rendered = env.from_string(template).render(
            messages=[{"role": "user", "content": texts[0]}, {"role": "assistant", "content": texts[1]}],
            add_generation_prompt=False, **specials)
        total = len(tok.encode(rendered, add_special_tokens=False).ids)
        content = sum(len(tok.encode(t, add_special_tokens=False).ids) for t in texts)
        return max(0, round((total - content) / 2)), "template overhead measured with its chat template"
    except Exception:  # noqa: BLE001 - any template trouble falls back to the stated default
        return None


def resolve_tokenizer(lengths_spec, catalog_lookup=None) -> LengthMethod:
    """The length method for a spec's `lengths:`. A tokenizer given as a path must exist (UserError);
    one given as a catalog model id is used when `llamaforge fetch-model` converted it or its tokenizer
    is in the local Hugging Face cache, otherwise the approximation is used and says why."""
    cpt, overhead = lengths_spec.chars_per_token, lengths_spec.template_tokens_per_message
    name = lengths_spec.tokenizer
    if not name:
        return LengthMethod(None, cpt, overhead, "no lengths.tokenizer in the spec")
    path = Path(name).expanduser()
    found = None
    if path.exists():
        found = _tokenizer_json_in(path)
        if found is None:
            raise UserError(f"lengths.tokenizer {name}: no tokenizer.json there; give a folder with tokenizer.json, "
                            "a catalog model id, or remove the key to use the approximation")
    elif name.startswith((".", "/", "~")) or name.endswith(".json"):
        raise UserError(f"lengths.tokenizer {name} not found; fix the path or remove the key to use the approximation")
    note = f"tokenizer {name}"
    if found is None:
        from ..models.pretrained import model_dir

        converted = _tokenizer_json_in(model_dir(name)) if "/" not in name else None
        if converted is not None:   # a model `llamaforge fetch-model` converted (SmolLM2-135M)
            found, note = converted, f"{name} converted by `llamaforge fetch-model` ({converted.parent})"
    if found is None:
        repos = [name]
        if catalog_lookup is not None:
            repos = [r for r in catalog_lookup(name) if r] or repos
        for repo in repos:
            found = _cached_tokenizer(repo)
            if found is not None:
                note = f"{name} from the local Hugging Face cache ({repo})"
                break
    if found is None:
        return LengthMethod(None, cpt, overhead,
                            f"the tokenizer of {name} is not available locally; download it to use exact counts")
    try:
        from tokenizers import Tokenizer

        Tokenizer.from_file(str(found))
    except Exception as exc:  # noqa: BLE001 - any load failure is the same user-facing problem
        raise UserError(f"lengths.tokenizer {name}: {found} cannot be loaded ({type(exc).__name__}); "
                        "give a valid tokenizer.json or remove the key to use the approximation") from None
    measured = _template_overhead(found)
    if measured is not None:
        overhead, how = measured
        note = f"{note}; {how}"
    return LengthMethod(str(found), cpt, overhead, note)
