"""The estimator against published measurements (tests/calibration/cases.yaml).

Asserts: the median absolute error on peak memory over the cases with a fully published setup is
at most 10%, no case is off by more than 40%, every fits/does-not-fit verdict matches the source,
the median throughput error is at most 25%, and the calibration table in docs/hardware.md is the
one these cases produce (`LLAMAFORGE_REGEN_DOCS=1 pytest tests/planning/test_estimate_calibration.py`
rewrites it)."""

from __future__ import annotations

import dataclasses
import statistics
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from doc_blocks import assert_block_in_sync

from llamaforge.planning.catalog import ModelSpec, get_model, parse_hardware
from llamaforge.planning.estimate import Estimate, StackFacts, estimate
from llamaforge.planning.train_setup import DeepSpeedSettings, TrainSetup, parse_lora_targets

HERE = Path(__file__).resolve().parent.parent   # tests/
CASES_FILE = HERE / "calibration" / "cases.yaml"
DOCS_FILE = HERE.parent / "docs" / "hardware.md"
BEGIN, END = "<!-- calibration-table:begin -->", "<!-- calibration-table:end -->"
MEDIAN_MEMORY_ERROR = 0.10
MAX_MEMORY_ERROR = 0.40
MEDIAN_SPEED_ERROR = 0.25
BORDERLINE = 0.05


@lru_cache(maxsize=1)
def calibration() -> dict:
    with open(CASES_FILE, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


SETUP_KEYS = {"method", "parallel", "offload", "weight_format", "lora_r", "seq_len", "micro_batch", "grad_accum",
              "grad_ckpt", "optimizer", "attn", "sample_packing", "pad_to_sequence_len", "torch_compile", "fsdp_version",
              "context_parallel", "tiled_mlp", "activation_offload", "loss"}
CASE_KEYS = SETUP_KEYS | {"id", "source", "url", "stack", "stack_facts", "model", "gpus", "nodes", "gpu", "gpu_memory_gib",
                          "lora_targets", "deepspeed", "measured", "fits", "in_median", "note", "split"}


def case_stack(case: dict) -> StackFacts:
    """The stack facts a case was measured with: a transformers Trainer + PEFT script's
    (`plain_peft_stack:`), or Axolotl's for the `axolotl-0.19` stack (or `base: axolotl`), with the
    stack's and the case's own overrides."""
    spec = dict(calibration()["stacks"][case["stack"]] or {})
    base = spec.pop("base", "axolotl" if case["stack"].startswith("axolotl") else "plain_peft")
    stack = StackFacts.plain_peft() if base == "plain_peft" else StackFacts.axolotl()
    return stack.with_overrides(spec).with_overrides(case.get("stack_facts"))


def case_setup(case: dict) -> tuple[TrainSetup, StackFacts]:
    data = calibration()
    name = case["model"]
    spec = ModelSpec(id=name, **data["models"][name]) if name in data["models"] else get_model(name)
    hw = parse_hardware(case["gpus"], nodes=case.get("nodes"))
    if "gpu" in case:
        hw = dataclasses.replace(hw, gpu=dataclasses.replace(hw.gpu, **case["gpu"]))
    if "gpu_memory_gib" in case:
        hw = dataclasses.replace(hw, gpu=dataclasses.replace(hw.gpu, memory_gib=float(case["gpu_memory_gib"])))
    kw = {"parallel": "single", "lora_r": 16, "grad_ckpt": True, "optimizer": "adamw_torch"}
    kw.update({k: case[k] for k in SETUP_KEYS if k in case})
    kw["lora_targets"] = parse_lora_targets(case.get("lora_targets", "all"))
    if "deepspeed" in case:
        kw["deepspeed"] = DeepSpeedSettings(**case["deepspeed"])
    if kw["parallel"] == "fsdp" and case["method"] == "qlora" and "fsdp_version" not in case:
        kw["fsdp_version"] = data.get("stack_fsdp_version", {}).get(case["stack"], 2)
    return TrainSetup(model=spec, hardware=hw, **kw), case_stack(case)


@lru_cache(maxsize=None)
def case_estimate(case_id: str) -> Estimate:
    case = CASES[case_id]
    setup, stack = case_setup(case)
    return estimate(setup, stack=stack)


def split_of(case: dict) -> str:
    return case.get("split", "fit")


def memory_comparison(case: dict) -> tuple[float, float, float] | None:
    """(measured, estimated in the measurement's unit, relative error) or None."""
    meas = case.get("measured") or {}
    if "gib" not in meas:
        return None
    est = case_estimate(case["id"])
    value = est.measured_as("required" if meas.get("at_capacity") else meas["metric"])
    lo, hi = meas.get("range", [meas["gib"], meas["gib"]])
    target = min(max(value, lo), hi)          # inside a published range counts as exact
    return meas["gib"], value, (value - target) / target


def verdict_ok(case: dict) -> bool:
    est = case_estimate(case["id"])
    if case["fits"] == "borderline":
        return abs(est.peak_gpu_gib - est.usable_gpu_gib) / est.usable_gpu_gib <= BORDERLINE
    return est.fits is bool(case["fits"])


CASES = {c["id"]: c for c in calibration()["cases"]}
SPLITS = ("fit", "validation")
# Validation cases whose verdict the estimator gets wrong, each with the reason: kept in the table and
# counted in the summary, never tuned away. A change that fixes one, or breaks another, fails the test.
KNOWN_VALIDATION_MISSES = {
    # fms-acceleration's 70B QLoRA under accelerate's FSDP1 (HF Trainer): at micro-batch 2 the estimate is
    # 21% under the measured allocation, so at 4 it says "fits" (51 of 80 GiB) where the run ran out of memory
    "fms-llama2-70b-qlora-fsdp-b4-oom",
    # ALST's multi-GPU runs split the sequence with Ulysses (all-to-all of heads); the estimator models
    # Axolotl's ring attention, whose fp32 output accumulators and K/V blocks (~14 GiB at these lengths) Ulysses
    # does not hold: 13-15% over the card where the source is at its limit
    "alst-8b-8gpu-3.7m",
    "alst-8b-32gpu-15m",
}


# ---- the cases file itself ---------------------------------------------------------------------


def test_cases_are_sourced_and_well_formed():
    data = calibration()
    ids = [c["id"] for c in data["cases"]]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    for c in data["cases"]:
        assert not set(c) - CASE_KEYS, (c["id"], sorted(set(c) - CASE_KEYS))
        assert c.get("source") and c.get("url", "").startswith("https://"), c["id"]
        assert c["stack"] in data["stacks"], c["id"]
        assert "measured" in c or "fits" in c, c["id"]
        assert c.get("fits") in (True, False, "borderline"), c["id"]
        assert split_of(c) in SPLITS, c["id"]
        meas = c.get("measured") or {}
        if "gib" in meas:
            assert meas["metric"] in ("allocated", "reserved", "device"), c["id"]
    measured = [c for c in data["cases"] if "gib" in (c.get("measured") or {})]
    assert len(measured) >= 60
    assert sum(1 for c in measured if split_of(c) == "validation") >= 20
    assert {c["stack"] for c in data["cases"]} >= {"answerai-fsdp-qlora", "hf-trainer-2024", "qwen1-finetune"}
    assert KNOWN_VALIDATION_MISSES <= {c["id"] for c in data["cases"] if split_of(c) == "validation"}


# ---- verdicts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", list(CASES))
def test_fits_verdict_matches_the_source(case_id):
    case = CASES[case_id]
    est = case_estimate(case_id)
    if case_id in KNOWN_VALIDATION_MISSES:
        assert not verdict_ok(case), f"{case_id} is right now: take it off KNOWN_VALIDATION_MISSES"
        return
    assert verdict_ok(case), (
        f"{case_id}: source says fits={case['fits']}, estimate needs {est.peak_gpu_gib:.1f} of "
        f"{est.usable_gpu_gib:.1f} GiB usable"
    )


# ---- memory error ----------------------------------------------------------------------------------


def memory_errors(split: str | None = None, method: str | None = None) -> dict[str, float]:
    out = {}
    for cid, case in CASES.items():
        if split is not None and split_of(case) != split:
            continue
        if method is not None and case["method"] != method:
            continue
        cmp = memory_comparison(case)
        if cmp is not None and case.get("in_median", True):
            out[cid] = cmp[2]
    return out


@pytest.mark.parametrize("split", SPLITS)
def test_median_memory_error_within_ten_percent(split, capsys):
    errors = memory_errors(split)
    med = statistics.median(abs(e) for e in errors.values())
    with capsys.disabled():
        print(f"\ncalibration ({split}): {len(errors)} memory cases, median |error| {med:.1%}, "
              f"mean {statistics.mean(abs(e) for e in errors.values()):.1%}")
        for cid, err in sorted(errors.items(), key=lambda kv: -abs(kv[1])):
            print(f"  {err:+7.1%}  {cid}")
    assert med <= MEDIAN_MEMORY_ERROR


@pytest.mark.parametrize("split", SPLITS)
def test_no_case_is_off_by_more_than_forty_percent(split):
    worst = {cid: e for cid, e in memory_errors(split).items() if abs(e) > MAX_MEMORY_ERROR}
    assert not worst, worst


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_no_method_is_systematically_under_estimated(method):
    # under-estimation is the dangerous direction (a "fits" that runs out of memory): the median signed
    # error of each method, over both splits, stays within the median-error target
    errors = list(memory_errors(method=method).values())
    assert len(errors) >= 10
    assert statistics.median(errors) >= -MEDIAN_MEMORY_ERROR / 2, (method, statistics.median(errors))


def test_throughput_median_error_within_twenty_five_percent():
    errors = []
    for cid, case in CASES.items():
        tps = (case.get("measured") or {}).get("tokens_per_s")
        if tps:
            errors.append(abs(case_estimate(cid).tokens_per_s - tps) / tps)
    assert len(errors) >= 10
    assert statistics.median(errors) <= MEDIAN_SPEED_ERROR


def test_host_ram_within_half_of_the_published_figures():
    # Host RAM is modelled coarsely (docs/hardware.md): held to +-50% of the three published figures.
    seen = 0
    for cid, case in CASES.items():
        host = (case.get("measured") or {}).get("host_ram_gib")
        if host:
            seen += 1
            assert abs(case_estimate(cid).host_ram_gib - host) / host <= 0.5, cid
    assert seen >= 3


# ---- docs/hardware.md ------------------------------------------------------------------------------


def _fmt(x: float | None, unit: str = "") -> str:
    return "—" if x is None else f"{x:,.1f}{unit}"


def calibration_summary() -> list[str]:
    """One line per split: median and worst error, verdicts right, per-method medians."""
    lines = []
    for split in SPLITS:
        errors = memory_errors(split)
        cases = [c for c in CASES.values() if split_of(c) == split]
        per_method = []
        for method in ("full", "lora", "qlora"):
            errs = list(memory_errors(split, method).values())
            if errs:
                per_method.append(f"{method} {statistics.median(abs(e) for e in errs):.1%} "
                                  f"(signed {statistics.median(errs):+.1%}, {len(errs)})")
        lines.append(
            f"**{split}** ({'the cases the constants were set on' if split == 'fit' else 'cases never tuned on'}): "
            f"median absolute error **{statistics.median(abs(e) for e in errors.values()):.1%}**, worst "
            f"{max(abs(e) for e in errors.values()):.1%} over {len(errors)} measured cases; by method: "
            f"{'; '.join(per_method)}; verdicts right: {sum(verdict_ok(c) for c in cases)} of {len(cases)}."
        )
    return lines


def calibration_table() -> str:
    data = calibration()
    errors = memory_errors()
    lines = [
        "| case | split | source | setup | stack | measured | estimated | error | verdict (source / estimate) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in data["cases"]:
        est = case_estimate(case["id"])
        s = est.setup
        setup = (f"{s.model.id} {s.method} {s.hardware.label} {s.parallel}"
                 + (f" (FSDP{s.fsdp_version})" if s.parallel == "fsdp" else "")
                 + (f" offload {s.offload}" if s.offload != "none" else "")
                 + f", {s.micro_batch}x{s.seq_len}" + ("" if s.grad_ckpt else ", no ckpt")
                 + (", compile" if s.torch_compile else "")
                 + (f", context parallel {s.context_parallel}" if s.context_parallel > 1 else "")
                 + (", tiled MLP" if s.tiled_mlp else "")
                 + (f", activation offload {s.activation_offload}" if s.activation_offload != "none" else "")
                 + (f", loss {s.loss}" if s.loss != "default" else ""))
        cmp = memory_comparison(case)
        meas = case.get("measured") or {}
        if cmp:
            m, v, err = cmp
            metric = "at capacity" if meas.get("at_capacity") else meas["metric"]
            shown = f"{meas['range'][0]:g}–{meas['range'][1]:g}" if "range" in meas else f"{m:g}"
            measured = f"{shown} GiB ({metric})"
            estimated = f"{v:.1f} GiB"
            error = f"{err:+.1%}" + ("" if case["id"] in errors else " (not in median)")
        else:
            measured = estimated = error = "—"
        if meas.get("tokens_per_s"):
            measured += f"; {meas['tokens_per_s']:,} tok/s"
            estimated += f"; {est.tokens_per_s:,.0f} tok/s"
        if meas.get("host_ram_gib"):
            measured += f"; host {meas['host_ram_gib']} GB"
            estimated += f"; host {est.host_ram_gib:.0f} GiB"
        verdict = {True: "fits", False: "OOM", "borderline": "at the limit"}[case["fits"]]
        mine = "fits" if est.fits else "OOM"
        if case["fits"] == "borderline":
            mine += f" ({est.peak_gpu_gib:.1f} of {est.usable_gpu_gib:.1f} GiB)"
        if not verdict_ok(case):
            mine += " **(wrong)**"
        lines.append(
            f"| {case['id']} | {split_of(case)} | [{case['source']}]({case['url']}) | {setup} | {case['stack']} | "
            f"{measured} | {estimated} | {error} | {verdict} / {mine} |"
        )
    for summary in calibration_summary():
        lines += ["", summary]
    return "\n".join(lines)


def test_docs_calibration_table_is_in_sync():
    assert_block_in_sync(DOCS_FILE, BEGIN, END, calibration_table(),
                         "LLAMAFORGE_REGEN_DOCS=1 pytest tests/planning/test_estimate_calibration.py")
