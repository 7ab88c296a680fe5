"""The serving estimator's arithmetic, the planner's choices and refusals, `llamaforge serve-plan`,
and the committed serving plans (Nyx on 2 x RTX 3090, ΔΦ-0 on an RTX 4070 SUPER)."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from llamaforge.planning.catalog import get_gpu, get_model, gpus, parse_apple_machine
from llamaforge.errors import Infeasible, UserError
from llamaforge.paths import repo_root
from llamaforge.planning.serve_estimate import (
    GIB, ServeSetup, estimate_serving, kv_bytes_per_token, lora_slot_bytes_per_gpu, vllm_weight_bytes_per_gpu,
)
from llamaforge.planning.serve_plan import ServeRequest, plan_serving, smallest_serving_hardware

ROOT = repo_root()
M8, M13, M70 = get_model("llama-3.1-8b"), get_model("llama-2-13b"), get_model("llama-3.1-70b")
RTX3090, RTX4070S, H100 = get_gpu("RTX3090-24GB"), get_gpu("RTX4070S-12GB"), get_gpu("H100-80GB")


# ---- arithmetic ---------------------------------------------------------------------------------------


def test_kv_cache_per_token_splits_kv_heads_over_tensor_parallelism_and_replicates_below_one():
    assert kv_bytes_per_token(M8, 2.0) == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert kv_bytes_per_token(M70, 2.0, tp=2) == 2 * 80 * 4 * 128 * 2           # 160 KiB per GPU
    assert kv_bytes_per_token(M70, 2.0, tp=8) == 2 * 80 * 1 * 128 * 2
    assert kv_bytes_per_token(M13, 2.0) == 2 * 40 * 40 * 128 * 2                 # Llama 2 13B: no GQA, 800 KiB


def test_lora_slots_are_every_linear_of_every_layer_for_every_slot():
    # 8B, one GPU, 2 slots of rank 16: sum of (in + out) over the seven linears x 32 layers x 2 bytes
    per_rank = (4096 + 4096) + (4096 + 1024) * 2 + (4096 + 4096) + (4096 + 14336) * 2 + (14336 + 4096)
    assert lora_slot_bytes_per_gpu(M8, 2, 16, tp=1) == 2 * 16 * per_rank * 32 * 2
    # column-parallel layers keep A whole and shard B; row-parallel ones shard A and keep B
    tp2 = (4096 + 2048) + (4096 + 512) * 2 + (2048 + 4096) + (4096 + 7168) * 2 + (7168 + 4096)
    assert lora_slot_bytes_per_gpu(M8, 1, 8, tp=2) == 8 * tp2 * 32 * 2
    assert lora_slot_bytes_per_gpu(M8, 0, 16, tp=1) == 0


def test_weights_per_gpu_by_format():
    bf16 = sum(vllm_weight_bytes_per_gpu(M8, "bf16", 1).values()) / GIB
    assert bf16 == pytest.approx(M8.parameter_count() * 2 / GIB, rel=1e-3)
    awq = vllm_weight_bytes_per_gpu(M70, "awq", 2)
    assert awq["linears"] == pytest.approx(M70.linear_params * (0.5 + 2.5 / 128) / 2)
    assert awq["embeddings"] == pytest.approx((M70.embedding_params + M70.lm_head_params) * 2 / 2)


def test_vllm_refuses_a_context_its_kv_cache_cannot_hold_and_names_the_longest():
    s = ServeSetup(M8, RTX3090, engine="vllm", weights="bf16", context=29000, max_num_batched_tokens=29000, max_num_seqs=256)
    est = estimate_serving(s)
    assert not est.fits and est.kv_tokens < 29000 and "refuses to start" in est.problems[0]


def test_the_share_outside_vllm_must_hold_the_context_and_graphs():
    est = estimate_serving(ServeSetup(M8, H100, engine="vllm", context=4096, gpu_memory_utilization=1.0))
    assert not est.fits and any("outside vLLM's share" in p for p in est.problems)
    eager = estimate_serving(ServeSetup(M8, H100, engine="vllm", context=4096, gpu_memory_utilization=0.99,
                                        enforce_eager=True))
    graphs = estimate_serving(ServeSetup(M8, H100, engine="vllm", context=4096, gpu_memory_utilization=0.99))
    assert eager.headroom_gib > graphs.headroom_gib


def test_ollama_offloads_fewer_layers_when_the_model_does_not_fit():
    est = estimate_serving(ServeSetup(M13, RTX4070S, engine="ollama", weights="q8_0", context=4096, kv_dtype="f16"))
    assert not est.fits and 0 < est.gpu_layers < M13.num_layers and "on the CPU" in est.problems[0]


def test_a_mac_gives_the_gpu_its_default_share_unless_the_wired_limit_was_raised():
    mac = parse_apple_machine("1xM3Ultra-512GB")
    assert mac.gpu_usable_gib() == pytest.approx(384.0)
    assert parse_apple_machine("M1Max-64GB").gpu_usable_gib() == pytest.approx(48.0)
    est = estimate_serving(ServeSetup(M70, mac, engine="ollama", weights="f16", context=8192))
    raised = estimate_serving(ServeSetup(M70, mac, engine="ollama", weights="f16", context=8192, wired_limit_gib=480))
    assert est.budget_gib == pytest.approx(384.0) and raised.budget_gib == pytest.approx(480.0)


@pytest.mark.parametrize("setup, message", [
    (dict(device=parse_apple_machine("1xM3Ultra-512GB"), engine="vllm"), "vLLM needs CUDA GPUs"),
    (dict(engine="vllm", weights="q4_K_M"), "does not serve weight format"),
    (dict(engine="ollama", weights="q4_K_M", max_loras=2, max_lora_rank=16), "one adapter per model"),
    (dict(engine="ollama", weights="q4_K_M", kv_dtype="q8_0"), "needs flash attention"),
    (dict(engine="vllm", count=3), "must divide the model's 64 attention heads"),
    (dict(engine="vllm", max_loras=1, max_lora_rank=24), "accepts only"),
])
def test_combinations_the_engines_do_not_run_are_refused(setup, message):
    base = dict(model=M70, device=RTX3090, count=2, engine="vllm", weights="bf16", context=4096,
                kv_dtype="f16" if setup.get("engine") == "ollama" else "auto")
    with pytest.raises(UserError, match=message):
        estimate_serving(ServeSetup(**{**base, **setup}))


# ---- the planner ------------------------------------------------------------------------------------


def test_nyx_on_two_3090s_the_authors_8bit_does_not_fit_and_awq_serves_all_five_adapters():
    with pytest.raises(Infeasible, match=r"int8 weights \+ LoRA slots \+ profiling need 3\d\.\d GiB per GPU") as exc:
        plan_serving(ServeRequest(M70, RTX3090, 2, "vllm", 4096, weights="int8", max_loras=5, max_lora_rank=32))
    assert exc.value.suggestion and exc.value.suggestion != "2xRTX3090-24GB"
    plan = plan_serving(ServeRequest(M70, RTX3090, 2, "vllm", 4096, max_loras=5, max_lora_rank=32))
    s, est = plan.setup, plan.estimate
    assert s.weights == "awq" and s.max_loras == 5 and est.fits and est.kv_tokens >= 4096
    assert [r["setup"].split(" ")[0] for r in plan.rejected] == ["bf16", "fp8", "int8"]


def test_deltaphi_on_a_4070_super_q4_k_m_with_the_kv_cache_the_desktop_leaves_room_for():
    bare = plan_serving(ServeRequest(M13, RTX4070S, 1, "ollama", 4096))
    assert (bare.setup.weights, bare.setup.kv_dtype) == ("q4_K_M", "f16")
    desktop = plan_serving(ServeRequest(M13, RTX4070S, 1, "ollama", 4096, reserve_gib=1.0))
    assert (desktop.setup.weights, desktop.setup.kv_dtype) == ("q4_K_M", "q8_0") and desktop.setup.flash_attention
    assert desktop.longest_context >= 4096


def test_the_suggested_hardware_is_the_cheapest_that_serves_the_request():
    req = ServeRequest(M70, RTX4070S, 1, "vllm", 4096)
    hw = smallest_serving_hardware(req)
    count, gid = hw.split("x", 1)
    assert plan_serving(ServeRequest(M70, get_gpu(gid), int(count), "vllm", 4096)).estimate.fits
    price = gpus()[gid].usd_per_hour * int(count)
    for g in gpus().values():
        for n in (1, 2, 4, 8):
            if g.usd_per_hour * n < price and M70.num_heads % n == 0:
                with pytest.raises(UserError):
                    plan_serving(ServeRequest(M70, g, n, "vllm", 4096), suggest=False)


# ---- the command --------------------------------------------------------------------------------------


def test_serve_plan_cli_answers_and_refuses_with_exit_codes(cli):
    res = cli("serve-plan", "--model", "llama-3.1-70b", "--gpus", "2xRTX3090-24GB", "--max-loras", "5",
              "--max-lora-rank", "32", "--json")
    assert res.code == 0, res.err
    data = res.json()
    assert data["ok"] and data["setup"]["weights"] == "awq" and "--quantization awq_marlin" in data["command"]
    res = cli("serve-plan", "--model", "llama-3.1-70b", "--gpus", "2xRTX3090-24GB", "--max-loras", "5",
              "--max-lora-rank", "32", "--weights", "int8", "--json")
    assert res.code == 1 and res.json()["ok"] is False and res.json()["suggestion"]
    res = cli("serve-plan", "--model", "llama-2-13b", "--gpus", "1xRTX4070S-12GB", "--engine", "ollama")
    assert res.code == 0 and "ollama create NAME -q q4_K_M" in res.out
    res = cli("serve-plan", "--model", "llama-3.1-70b", "--gpus", "1xM3Ultra-512GB", "--json")
    assert res.code == 0 and res.json()["setup"]["engine"] == "ollama" and res.json()["setup"]["weights"] == "f16"


# ---- the committed plans -----------------------------------------------------------------------------


def _fake(tmp_path, name: str, body: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / name
    exe.write_text("#!/usr/bin/env bash\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_the_committed_deltaphi_plan_starts_ollama_with_the_plans_settings(tmp_path):
    env = _fake(tmp_path, "ollama", 'echo "FA=$OLLAMA_FLASH_ATTENTION KV=$OLLAMA_KV_CACHE_TYPE PAR=$OLLAMA_NUM_PARALLEL $*"\n')
    res = subprocess.run(["bash", str(ROOT / "recipes/llama-2-13b/deltaphi/serve_ollama.sh")], env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stdout.strip() == "FA=1 KV=q8_0 PAR=1 serve"
    modelfile = (ROOT / "recipes/llama-2-13b/deltaphi/Modelfile").read_text()
    assert "PARAMETER num_ctx 4096" in modelfile and "ollama create deltaphi -q q4_K_M -f Modelfile" in modelfile
    assert "FROM ../../../outputs/llama-2-13b/qlora-1xRTX4070S-12GB/merged" in modelfile
