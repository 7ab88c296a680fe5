"""Every figure in the docs (and the README) that LlamaForge can compute is computed by it: written
between `<!--f:NAME-->` and `<!--/f-->` markers (invisible in rendered Markdown) and compared here
with what the tool says now. A claim of a source (the training guide's "48–72 h") is quoted as that
source's, next to the tool's figure. `LLAMAFORGE_REGEN_DOCS=1 pytest tests/test_docs_figures.py`
rewrites the figures; the test fails while any differs, or a marker names no figure."""

from __future__ import annotations

import os
import re
import statistics
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from llamaforge.planning.catalog import get_model, parse_hardware
from llamaforge.planning.estimate import GIB, base_weight_bytes, estimate, estimator_facts
from llamaforge.paths import recipes_dir, repo_root
from llamaforge.planning.plan import plan
from llamaforge.planning.train_setup import TrainSetup

sys.path.insert(0, str(Path(__file__).parent))
import planning.test_estimate_calibration as calib  # noqa: E402  (the calibration cases and their errors)

ROOT = repo_root()
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
MARKER = re.compile(r"<!--f:([a-z0-9-]+)-->(.*?)<!--/f-->", re.S)
H100x8 = parse_hardware("8xH100-80GB")
M405 = get_model("llama-3.1-405b")


def _405b(parallel: str, optimizer: str = "adamw_bnb_8bit"):
    """The 405B QLoRA of the project plan (docs/hardware.md) under `parallel`."""
    return estimate(TrainSetup(model=M405, hardware=H100x8, method="qlora", lora_r=64, parallel=parallel,
                               seq_len=4096, grad_accum=8, optimizer=optimizer))


@lru_cache(maxsize=1)
def _405b_plan():
    return plan(M405, H100x8, method="qlora", seq_len=4096, lora_r=64)


def _recipe_peak(rel: str) -> str:
    text = (recipes_dir() / rel).read_text(encoding="utf-8")
    return re.search(r"^# Memory:\s+~([\d.]+) GiB", text, re.M).group(1)


def _recipe_tokens_per_s(rel: str) -> float:
    text = (recipes_dir() / rel).read_text(encoding="utf-8")
    return float(re.search(r"^# Throughput:\s+~([\d,]+) tokens/s", text, re.M).group(1).replace(",", ""))


@lru_cache(maxsize=None)
def _guide_plan(tokens: int, epochs: float):
    """The training guide's run (seed 003): LoRA on Llama 3.1 8B on its one A100 80GB, 4,096-token rows."""
    return plan(get_model("llama-3.1-8b"), parse_hardware("1xA100-80GB"), method="lora", seq_len=4096,
                tokens=tokens, epochs=epochs)


def _lora_gb(model: str, r: int) -> float:
    s = TrainSetup(model=get_model(model), hardware=H100x8, method="lora", lora_r=r)
    return s.lora_param_count() * 2 / 1e9


def _range(values, fmt="{:.0f}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"


def _calibration_abs(split: str) -> float:
    return statistics.median(abs(e) for e in calib.memory_errors(split).values())


def _host_errors() -> list[float]:
    out = []
    for cid, case in calib.CASES.items():
        host = (case.get("measured") or {}).get("host_ram_gib")
        if host:
            out.append(100 * (host - calib.case_estimate(cid).host_ram_gib) / host)
    return out


def _speed_errors() -> list[float]:
    out = []
    for cid, case in calib.CASES.items():
        tps = (case.get("measured") or {}).get("tokens_per_s")
        if tps:
            out.append(abs(calib.case_estimate(cid).tokens_per_s - tps) / tps)
    return out


FIGURES = {
    # docs/hardware.md: sizes
    "405b-nf4dq-linears-gib": lambda: f"{base_weight_bytes(M405, 'nf4_dq')['linear'] / GIB:.0f}",
    "405b-embeddings-gib": lambda: f"{base_weight_bytes(M405, 'nf4_dq')['embeddings'] / GIB:.1f}",
    "llama3-logits-2048-gib": lambda: f"{estimator_facts()['loss_bytes_per_logit']['hf_upcast'] * 128256 * 2048 / GIB:.1f}",
    # docs/hardware.md: the 405B config of the project plan
    "405b-zero2-weights-gib": lambda: f"{_405b('zero2').breakdown['weights']:.0f}",
    "405b-zero2-peak-gib": lambda: f"{_405b('zero2').peak_gpu_gib:.0f}",
    "405b-zero3-load-gib": lambda: f"{_405b('zero3').phases_gib['load']:.0f}",
    "405b-zero3-peak-gib": lambda: f"{_405b('zero3').peak_gpu_gib:.0f}",
    "405b-zero3-train-gib": lambda: f"{max(v for k, v in _405b('zero3').phases_gib.items() if k != 'load'):.0f}",
    "405b-plan-choice": lambda: ("FSDP1 with sharded quantized loading" if _405b_plan().setup.fsdp_version == 1
                                 else _405b_plan().setup.parallel),
    "405b-plan-peak-gib": lambda: f"{_405b_plan().estimate.peak_gpu_gib:.0f}",
    "405b-fsdp2-peak-gib": lambda: f"{_405b('fsdp', 'adamw_torch_fused').peak_gpu_gib:.0f}",
    # docs/hardware.md: calibration figures quoted in prose
    "calibration-fit-median": lambda: f"{_calibration_abs('fit'):.1%}",
    "calibration-validation-median": lambda: f"{_calibration_abs('validation'):.1%}",
    "calibration-measured-cases": lambda: str(len(calib.memory_errors())),
    "speed-cases": lambda: str(len(_speed_errors())),
    "speed-median": lambda: f"{statistics.median(_speed_errors()):.0%}",
    "host-ram-low": lambda: _range(_host_errors()),
    "peft-offload-error": lambda: f"{-calib.memory_errors()['peft-70b-qlora-fsdp-offload-2x24gb']:.0%}",
    "unsloth-under": lambda: _range([-100 * e for cid, e in calib.memory_errors().items() if cid.startswith("unsloth-hf-8b")]),
    # docs/hardware.md, the QLoRA round: litgpt's QLoRA rows, and ms-swift's bitsandbytes rows (validation)
    "litgpt-qlora-errors": lambda: _range([100 * e for cid, e in calib.memory_errors("fit", "qlora").items()
                                           if cid.startswith("litgpt-")], "{:+.0f}"),
    "swift-bnb-under": lambda: _range([-100 * e for cid, e in calib.memory_errors().items() if cid.endswith("-qlora-bnb")]),
    # docs/runs.md: the training guide's times against the estimate
    "guide-full-hours": lambda: f"{_guide_plan(3_200_000_000, 3.0).estimate.hours:,.0f}",
    "guide-validate-hours": lambda: f"{_guide_plan(320_000_000, 3.0).estimate.hours:,.0f}",
    "guide-tokens-per-s": lambda: f"{_guide_plan(3_200_000_000, 3.0).estimate.tokens_per_s:,.0f}",
    "guide-full-ratio": lambda: f"{_guide_plan(3_200_000_000, 3.0).estimate.hours / 60:.0f}",     # 60 h: the guide's 48-72
    "full-8xh100-hours": lambda: f"{9.6e9 / _recipe_tokens_per_s('llama-3.1-8b/full-8xH100-80GB.yaml') / 3600:.0f}",
    # docs/specialists.md
    "dpo-8b-peak-gib": lambda: _recipe_peak("llama-3.1-8b/dpo-lora-1xH100-80GB.yaml"),
    "sft-8b-h100-peak-gib": lambda: _recipe_peak("llama-3.1-8b/lora-1xH100-80GB.yaml"),
    "70b-r16-lora-params": lambda: f"{TrainSetup(model=get_model('llama-3.1-70b'), hardware=H100x8, method='lora').lora_param_count() / 1e6:.0f}M",
    "70b-r16-lora-gb": lambda: f"{_lora_gb('llama-3.1-70b', 16):.1f}",
    # docs/export.md
    "405b-bf16-gb": lambda: f"{M405.parameter_count() * 2 / 1e9:,.0f}",
    "405b-r64-adapter-gb": lambda: f"{_lora_gb('llama-3.1-405b', 64):.0f}",
}


def _fresh(text: str) -> tuple[str, list[str]]:
    unknown = []

    def sub(m: re.Match) -> str:
        if m.group(1) not in FIGURES:
            unknown.append(m.group(1))
            return m.group(0)
        return f"<!--f:{m.group(1)}-->{FIGURES[m.group(1)]()}<!--/f-->"

    return MARKER.sub(sub, text), unknown


def test_every_figure_is_used_somewhere():
    used = {m.group(1) for doc in DOCS for m in MARKER.finditer(doc.read_text(encoding="utf-8"))}
    assert set(FIGURES) <= used, sorted(set(FIGURES) - used)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_figures_are_what_the_tool_says(doc):
    text = doc.read_text(encoding="utf-8")
    fresh, unknown = _fresh(text)
    assert not unknown, f"{doc.name}: markers naming no figure: {unknown}"
    if os.environ.get("LLAMAFORGE_REGEN_DOCS") == "1" and fresh != text:
        tmp = doc.with_suffix(".md.tmp")
        tmp.write_text(fresh, encoding="utf-8")
        os.replace(tmp, doc)
        text = fresh
    stale = [(m.group(1), m.group(2)) for m in MARKER.finditer(text)
             if m.group(2) != FIGURES[m.group(1)]()]
    assert not stale, f"{doc.name}: figures the tool now computes differently {stale}; run LLAMAFORGE_REGEN_DOCS=1 pytest {Path(__file__).name}"
