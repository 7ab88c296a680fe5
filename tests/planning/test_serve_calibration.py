"""The serving estimator and the MLX speed model against published measurements
(tests/calibration/serving_cases.yaml), the `fit` cases (which chose the fitted constants of
facts/serving.yaml and facts/apple_silicon.yaml) reported apart from the `validation` cases.

Asserts, on the validation cases: vLLM's KV cache within 15% of the logged size, weights per GPU
within 2%, GGUF sizes within 6%, llama.cpp's compute buffer within 5%, decode speed within 40%
(median 25%), MLX training speed within 15%; every fits/refused verdict of the logs; and that the
table in docs/serving.md is the one these cases produce
(`LLAMAFORGE_REGEN_DOCS=1 pytest tests/planning/test_serve_calibration.py` rewrites it)."""

from __future__ import annotations

import statistics
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from doc_blocks import assert_block_in_sync

from llamaforge.planning.catalog import ModelSpec, get_gpu, get_model, is_apple_hardware, parse_apple_machine
from llamaforge.planning.mlx_estimate import MlxSetup, estimate_mlx
from llamaforge.planning.serve_estimate import (
    GIB, ServeSetup, estimate_serving, gguf_weight_bytes, llama_cpp_graph_bytes, vllm_weight_bytes_per_gpu,
)

HERE = Path(__file__).resolve().parent.parent   # tests/
CASES_FILE = HERE / "calibration" / "serving_cases.yaml"
DOCS_FILE = HERE.parent / "docs" / "serving.md"
BEGIN, END = "<!-- serving-calibration:begin -->", "<!-- serving-calibration:end -->"
VALIDATION_LIMITS = {"vllm_kv": 0.15, "vllm_weights": 0.02, "gguf_size": 0.06, "llama_cpp_compute": 0.05,
                     "decode": 0.40, "mlx_train": 0.15}
UNITS = {"vllm_kv": "GiB KV", "vllm_weights": "GiB", "gguf_size": "GiB", "llama_cpp_compute": "MiB",
         "decode": "tok/s", "mlx_train": "tok/s"}


@lru_cache(maxsize=1)
def calibration() -> dict:
    return yaml.safe_load(CASES_FILE.read_text(encoding="utf-8"))


CASES = {c["id"]: c for c in calibration()["cases"]}


def case_model(name: str) -> ModelSpec:
    models = calibration()["models"]
    return ModelSpec(id=name, **models[name]) if name in models else get_model(name)


def _hardware(text: str):
    if is_apple_hardware(text):
        return parse_apple_machine(text), 1
    count, gpu = text.split("x", 1)
    return get_gpu(gpu), int(count)


def _vllm_setup(case: dict) -> ServeSetup:
    device, count = _hardware(case["gpus"])
    return ServeSetup(model=case_model(case["model"]), device=device, count=count, engine="vllm",
                      weights=case["weights"], context=case["context"],
                      gpu_memory_utilization=case["gpu_memory_utilization"],
                      max_num_batched_tokens=case["max_num_batched_tokens"], max_num_seqs=case["max_num_seqs"])


@lru_cache(maxsize=None)
def comparison(case_id: str) -> tuple[float, float, str]:
    """(measured, estimated, what) for one case."""
    c = CASES[case_id]
    kind, meas = c["kind"], c["measured"]
    if kind == "vllm_kv":
        est = estimate_serving(_vllm_setup(c), engine_facts=calibration()["stacks"][c["stack"]])
        if "gpu_blocks" in meas:
            per_block = est.kv_cache_gib / max(est.kv_tokens / 16, 1)
            measured = meas["gpu_blocks"] * per_block if est.kv_tokens else meas.get("kv_gib", 0.0)
            return measured, est.kv_cache_gib, f"{meas['gpu_blocks']:,} blocks vs {est.kv_tokens // 16:,}"
        return meas["kv_gib"], est.kv_cache_gib, ""
    if kind == "vllm_weights":
        device, count = _hardware(c["gpus"])
        return meas["weights_gib"], sum(vllm_weight_bytes_per_gpu(case_model(c["model"]), c["weights"], count).values()) / GIB, ""
    if kind == "gguf_size":
        return meas["gib"], gguf_weight_bytes(case_model(c["model"]), c["weights"])["file"] / GIB, ""
    if kind == "llama_cpp_compute":
        return meas["mib"], llama_cpp_graph_bytes(case_model(c["model"]), c["context"]) / 2**20, ""
    if kind == "decode":
        device, count = _hardware(c["gpus"])
        s = ServeSetup(model=case_model(c["model"]), device=device, count=count, engine="llama.cpp",
                       weights=c["weights"], context=c["context"], kv_dtype="f16")
        return meas["tokens_per_s"], estimate_serving(s).decode_tokens_per_s, ""
    if kind == "mlx_train":
        s = MlxSetup(model=case_model(c["model"]), machine=parse_apple_machine(c["machine"]), method=c["method"],
                     lora_rank=c["lora_rank"], lora_layers=c["lora_layers"], lora_keys=tuple(c["lora_keys"]),
                     batch_size=c["batch_size"], tokens_per_row=c["tokens_per_row"])
        return meas["tokens_per_s"], estimate_mlx(s).tokens_per_s, ""
    raise AssertionError(f"unknown kind {kind}")


def error(case_id: str) -> float:
    measured, estimated, _ = comparison(case_id)
    return (estimated - measured) / measured


# ---- the cases file ---------------------------------------------------------------------------------


def test_cases_are_sourced_split_and_well_formed():
    data = calibration()
    ids = [c["id"] for c in data["cases"]]
    assert len(ids) == len(set(ids))
    for c in data["cases"]:
        assert c["kind"] in VALIDATION_LIMITS, c["id"]
        assert c["split"] in ("fit", "validation"), c["id"]
        assert c.get("source") and c.get("url", "").startswith("https://"), c["id"]
        if c["kind"] == "vllm_kv":
            assert c["stack"] in data["stacks"], c["id"]
    for kind in VALIDATION_LIMITS:
        assert any(c["kind"] == kind and c["split"] == "validation" for c in data["cases"]), kind
    assert sum(c["split"] == "validation" for c in data["cases"]) >= 25


# ---- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", [cid for cid, c in CASES.items() if c["split"] == "validation"])
def test_validation_case_within_its_kinds_limit(case_id):
    limit = VALIDATION_LIMITS[CASES[case_id]["kind"]]
    measured, estimated, note = comparison(case_id)
    assert abs(error(case_id)) <= limit, f"{case_id}: measured {measured:.3f}, estimated {estimated:.3f} {note}"


def test_fit_cases_reproduce_within_ten_percent():
    worst = {cid: error(cid) for cid, c in CASES.items() if c["split"] == "fit" and c["kind"] != "decode"}
    assert worst and all(abs(e) <= 0.10 for e in worst.values()), worst


def test_decode_speed_median_within_twenty_five_percent(capsys):
    errs = [abs(error(cid)) for cid, c in CASES.items() if c["kind"] == "decode" and c["split"] == "validation"]
    with capsys.disabled():
        for split in ("fit", "validation"):
            for kind in VALIDATION_LIMITS:
                es = [abs(error(cid)) for cid, c in CASES.items() if c["kind"] == kind and c["split"] == split]
                if es:
                    print(f"\nserving calibration {split:10s} {kind:18s} n={len(es):2d} median |error| "
                          f"{statistics.median(es):.1%}, max {max(es):.1%}", end="")
        print()
    assert statistics.median(errs) <= 0.25


def test_the_refused_start_of_the_log_is_refused_and_the_others_start():
    for cid, c in CASES.items():
        if c["kind"] != "vllm_kv":
            continue
        est = estimate_serving(_vllm_setup(c), engine_facts=calibration()["stacks"][c["stack"]])
        assert est.fits is c["measured"].get("fits", True), (cid, est.problems)


# ---- docs/serving.md -------------------------------------------------------------------------------


def calibration_table() -> str:
    lines = ["| case | split | kind | source | measured | estimated | error |", "|---|---|---|---|---|---|---|"]
    for c in calibration()["cases"]:
        measured, estimated, note = comparison(c["id"])
        unit = UNITS[c["kind"]]
        lines.append(f"| {c['id']} | {c['split']} | {c['kind']} | [{c['source']}]({c['url']}) | {measured:,.2f} {unit} "
                     f"| {estimated:,.2f} {unit}{' (' + note + ')' if note else ''} | {error(c['id']):+.1%} |")
    lines.append("")
    for split in ("fit", "validation"):
        parts = []
        for kind in VALIDATION_LIMITS:
            es = [abs(error(cid)) for cid, c in CASES.items() if c["kind"] == kind and c["split"] == split]
            if es:
                parts.append(f"{kind} {statistics.median(es):.1%} (n={len(es)})")
        lines.append(f"Median absolute error, **{split}** cases: " + "; ".join(parts) + ".")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def test_docs_calibration_table_is_in_sync():
    assert_block_in_sync(DOCS_FILE, BEGIN, END, calibration_table(),
                         "LLAMAFORGE_REGEN_DOCS=1 pytest tests/planning/test_serve_calibration.py")
