"""The planner: the committed recipe matrix plans, the global batch is kept exactly, the method,
parallelism, offload, micro-batch, checkpointing, packing and attention choices follow their rules,
and refusals name hardware that does fit."""

from __future__ import annotations

import dataclasses
import json

import pytest

from llamaforge.planning.catalog import Hardware, get_gpu, get_model, parse_hardware
from llamaforge.errors import Infeasible, UserError
from llamaforge.planning.estimate import estimate, parallelism_facts
from llamaforge.planning.plan import candidate_hardware, default_global_batch, plan, smallest_fitting_hardware

# The matrix the lead renders (issue 2, item 5), with the sequence lengths of templates/matrix.yaml.
MATRIX = [
    ("llama-3.1-8b", "1xRTX4070S-12GB", 1, "qlora", 2048, 16),
    ("llama-3.1-8b", "1xRTX4090-24GB", 1, None, 2048, 16),
    ("llama-3.1-8b", "1xH100-80GB", 1, "lora", 4096, 16),
    ("llama-3.1-8b", "8xH100-80GB", 1, "full", 4096, 16),
    ("llama-2-13b", "1xRTX4070S-12GB", 1, "qlora", 2048, 16),
    ("llama-2-13b", "1xA100-80GB", 1, "lora", 4096, 16),
    ("llama-3.1-70b", "2xRTX3090-24GB", 1, "qlora", 2048, 16),
    ("llama-3.1-70b", "8xA100-80GB", 1, "lora", 4096, 16),
    ("llama-3.1-70b", "8xH100-80GB", 1, "lora", 4096, 16),
    ("llama-3.1-405b", "8xH100-80GB", 1, "qlora", 4096, 64),
    ("llama-3.1-405b", "8xH200-141GB", 1, "lora", 4096, 64),
    ("llama-3.1-405b", "8xH100-80GB", 2, "lora", 4096, 64),
]


@pytest.mark.parametrize("model,gpus,nodes,method,seq,r", MATRIX, ids=[f"{m}-{g}-{n}n" for m, g, n, *_ in MATRIX])
def test_committed_matrix_plans(model, gpus, nodes, method, seq, r):
    hw = parse_hardware(gpus, nodes=nodes)
    p = plan(get_model(model), hw, method=method, seq_len=seq, lora_r=r)
    s, est = p.setup, p.estimate
    assert method is None or s.method == method
    assert s.seq_len == seq and (not s.is_adapter or s.lora_r == r)
    # the global batch is kept exactly: micro x accumulation x GPUs
    assert s.micro_batch * s.grad_accum * hw.world_size == default_global_batch(s.model)
    margin = parallelism_facts()["planner_memory_margin"]
    assert est.fits and est.peak_gpu_gib <= est.usable_gpu_gib * (1 - margin)
    assert est == estimate(s) or est.peak_gpu_gib == pytest.approx(estimate(s).peak_gpu_gib)
    assert s.attn == "flash_attention_2" and s.sample_packing
    for topic in ("method", "parallelism", "offload", "micro-batch", "accumulation", "checkpointing",
                  "packing", "attention"):
        assert any(topic in r for r in p.reasons), topic


def test_default_global_batch_by_size():
    assert default_global_batch(get_model("llama-3.1-8b")) == 32
    assert default_global_batch(get_model("llama-2-13b")) == 32
    assert default_global_batch(get_model("llama-3.1-70b")) == 64
    assert default_global_batch(get_model("llama-3.1-405b")) == 64


def test_method_order_full_then_lora_then_qlora():
    m = get_model("llama-3.1-8b")
    assert plan(m, parse_hardware("8xH100-80GB")).setup.method == "full"
    on_4090 = plan(m, parse_hardware("1xRTX4090-24GB"))
    assert on_4090.setup.method == "lora" and on_4090.setup.offload == "none"
    # full would only fit by offloading to CPU RAM; the planner prefers LoRA on the GPU
    assert any(r["setup"].startswith("full") for r in on_4090.rejected)
    on_12gb = plan(m, parse_hardware("1xRTX4070S-12GB"))
    assert on_12gb.setup.method == "qlora"
    assert {r["setup"].split()[0] for r in on_12gb.rejected} >= {"full", "lora"}


def test_offload_only_when_nothing_fits_without_it():
    m = get_model("llama-3.1-70b")
    tight = plan(m, parse_hardware("2xRTX3090-24GB"), method="qlora")
    assert tight.setup.offload != "none"
    assert any("offload" in r and "CPU RAM" in r for r in tight.reasons)
    roomy = plan(m, parse_hardware("2xA100-80GB"), method="qlora")
    assert roomy.setup.offload == "none"


def test_full_finetune_on_several_gpus_skips_pure_bf16_ddp():
    p = plan(get_model("llama-3.1-8b"), parse_hardware("8xH100-80GB"), method="full")
    assert p.setup.parallel != "ddp"


def test_global_batch_not_divisible_by_gpus_is_refused():
    with pytest.raises(UserError, match="not divisible by the 8 GPUs"):
        plan(get_model("llama-3.1-8b"), parse_hardware("8xH100-80GB"), global_batch=30)


def test_requested_global_batch_and_micro_batch_are_kept():
    p = plan(get_model("llama-3.1-8b"), parse_hardware("4xA100-80GB"), method="lora", global_batch=48, micro_batch=3)
    assert (p.setup.micro_batch, p.setup.grad_accum, p.setup.global_batch) == (3, 4, 48)
    with pytest.raises(UserError, match="does not divide"):
        plan(get_model("llama-3.1-8b"), parse_hardware("4xA100-80GB"), global_batch=48, micro_batch=5)


def test_micro_batch_is_the_largest_that_fits():
    p = plan(get_model("llama-2-13b"), parse_hardware("1xA100-80GB"), method="lora", seq_len=4096)
    bigger = p.setup.with_(micro_batch=p.setup.micro_batch * 2, grad_accum=max(1, p.setup.grad_accum // 2))
    margin = parallelism_facts()["planner_memory_margin"]
    est = estimate(bigger)
    assert est.peak_gpu_gib > est.usable_gpu_gib * (1 - margin) or p.setup.grad_accum == 1


def test_checkpointing_off_only_with_room_to_spare():
    headroom = parallelism_facts()["planner_no_checkpointing_headroom"]
    for model, gpus, method in (("llama-3.1-8b", "1xH100-80GB", "lora"), ("llama-3.1-8b", "1xRTX4070S-12GB", "qlora")):
        p = plan(get_model(model), parse_hardware(gpus), method=method, seq_len=4096 if "H100" in gpus else 1024)
        if not p.setup.grad_ckpt:
            assert p.estimate.peak_gpu_gib <= p.estimate.usable_gpu_gib * (1 - headroom)
    # a 12 GB card has no such room
    assert plan(get_model("llama-3.1-8b"), parse_hardware("1xRTX4070S-12GB"), method="qlora").setup.grad_ckpt


def test_old_gpu_gets_sdpa_and_no_packing():
    turing = dataclasses.replace(get_gpu("A10G-24GB"), id="T4-16GB", memory_gib=15.0, compute_capability="7.5")
    p = plan(get_model("llama-3.1-8b"), Hardware(gpu=turing), method="qlora", seq_len=1024)
    assert p.setup.attn == "sdpa" and not p.setup.sample_packing
    assert any("sdpa" in r for r in p.reasons)


def test_infeasible_names_smallest_fitting_hardware():
    m = get_model("llama-3.1-405b")
    with pytest.raises(Infeasible) as info:
        plan(m, parse_hardware("1xRTX4070S-12GB"), seq_len=2048)
    exc = info.value
    assert exc.exit_code == 1 and "does not fit on 1xRTX4070S-12GB" in str(exc)
    assert exc.suggestion
    suggested = parse_hardware(exc.suggestion)
    assert plan(m, suggested, seq_len=2048).estimate.fits


def test_smallest_fitting_hardware_is_the_cheapest_that_fits_without_offload():
    m = get_model("llama-3.1-70b")
    hw = smallest_fitting_hardware(m, method="lora", seq_len=2048)
    assert hw is not None
    assert plan(m, hw, method="lora", seq_len=2048).setup.offload == "none"
    cheaper = [h for h in candidate_hardware() if h.usd_per_hour < hw.usd_per_hour and 64 % h.world_size == 0]
    for h in cheaper:
        with pytest.raises(Infeasible):
            p = plan(m, h, method="lora", seq_len=2048, _suggest=False)
            if p.setup.offload != "none":
                raise Infeasible("fits only with offload")


def test_refusal_says_which_sequence_length_would_fit():
    with pytest.raises(Infeasible) as info:
        plan(get_model("llama-2-13b"), parse_hardware("1xRTX4070S-12GB"), method="qlora", seq_len=16384)
    assert info.value.details.get("longest_sequence") in (1024, 2048, 4096, 8192)
    assert "fits at sequence length" in str(info.value)


def test_plan_to_dict_is_json_ready():
    p = plan(get_model("llama-3.1-8b"), parse_hardware("1xRTX4090-24GB"), tokens=1_000_000, epochs=3)
    d = json.loads(json.dumps(p.to_dict()))
    assert d["setup"]["global_batch"] == 32 and d["estimate"]["hours"] > 0
    assert d["reasons"] and isinstance(d["rejected"], list)
