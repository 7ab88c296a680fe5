"""Behaviour of the memory / throughput / cost estimator on its own terms: weight formats,
sharding, activations, logits, offload, validation, FLOPs, hours and cost. The comparison with
published measurements is in test_estimate_calibration.py."""

from __future__ import annotations

import json

import pytest

from llamaforge.planning.catalog import get_model, parse_hardware
from llamaforge.errors import UserError
from llamaforge.planning.estimate import GIB, StackFacts, base_weight_bytes, estimate, flops_per_token, matmul_params
from llamaforge.planning.train_setup import ATTN_LINEAR, TrainSetup


def setup(model="llama-3.1-8b", gpus="1xH100-80GB", nodes=None, **kw) -> TrainSetup:
    return TrainSetup(model=get_model(model), hardware=parse_hardware(gpus, nodes=nodes), **kw)


# ---- weights --------------------------------------------------------------------------------------


def test_nf4_double_quant_bytes_follow_the_block_layout():
    m = get_model("llama-3.1-8b")
    lin = m.linear_params
    # 4 bits per weight + an 8-bit absmax per 64 weights + 8 bytes (fp32 scale and offset) per 256 blocks
    expected_linear = lin * 0.5 + lin / 64 * 1 + lin / 64 / 256 * 8
    parts = base_weight_bytes(m, "nf4_dq")
    assert parts["linear"] == pytest.approx(expected_linear, rel=1e-12)
    # bitsandbytes leaves embeddings, lm_head and norms in 16-bit
    assert parts["embeddings"] == (m.embedding_params + m.lm_head_params) * 2
    assert parts["norms"] == m.norm_params * 2
    # without double quantization the absmax stays fp32: 0.5625 bytes per weight
    assert base_weight_bytes(m, "nf4")["linear"] == pytest.approx(lin * (0.5 + 4 / 64))


def test_weight_formats_order_bf16_int8_nf4():
    m = get_model("llama-2-13b")
    sizes = {f: sum(base_weight_bytes(m, f).values()) for f in ("fp32", "bf16", "int8", "nf4", "nf4_dq")}
    assert sizes["fp32"] == pytest.approx(2 * sizes["bf16"], rel=1e-9)
    assert sizes["bf16"] > sizes["int8"] > sizes["nf4"] > sizes["nf4_dq"]
    # 13B in NF4 with double quantization: about 7.2 GB (6.7 GiB)
    assert 6.5 < sizes["nf4_dq"] / GIB < 7.0


# ---- the issue's 405B config -------------------------------------------------------------------------


def issue_405b(**kw):
    base = dict(model="llama-3.1-405b", gpus="8xH100-80GB", method="qlora", parallel="zero2", seq_len=4096,
                micro_batch=1, grad_accum=8, lora_r=64, optimizer="adamw_bnb_8bit")
    base.update(kw)
    return setup(**base)


def test_405b_qlora_with_zero2_does_not_fit_on_8xh100():
    est = estimate(issue_405b())
    assert not est.fits
    # ZeRO-2 leaves the ~200 GiB of 4-bit base weights whole on every GPU
    assert est.breakdown["weights"] > 190
    assert est.peak_gpu_gib > est.usable_gpu_gib


def test_405b_lora_with_load_in_4bit_reads_as_bf16_and_fits_even_less():
    # Axolotl 0.19 loads `adapter: lora` + `load_in_4bit` in bf16: 4 x the weights of QLoRA
    est = estimate(issue_405b(method="lora", weight_format="bf16"))
    assert not est.fits and est.breakdown["weights"] > 700


def test_405b_qlora_zero3_does_not_fit_because_the_whole_4bit_base_loads_onto_every_gpu():
    # Axolotl 0.19 + transformers' bitsandbytes quantizer place the whole quantized base on each rank
    # before ZeRO-3 shards it (facts/parallelism.yaml `quantized_loading`; DeepSpeed issue #5660)
    est = estimate(issue_405b(parallel="zero3"))
    assert not est.fits
    assert est.peak_phase == "load"
    whole = sum(base_weight_bytes(issue_405b().model, "nf4_dq").values()) / 2**30
    assert est.breakdown["whole_base_at_load"] == pytest.approx(whole, rel=0.05)
    assert 200 < whole < 230
    # once loaded, the steady state is sharded: the training phases alone would fit
    assert max(v for k, v in est.phases_gib.items() if k != "load") < est.usable_gpu_gib


def test_405b_qlora_fits_only_with_fsdp1_sharded_quantized_loading():
    fsdp2 = estimate(issue_405b(parallel="fsdp", optimizer="adamw_torch_fused"))  # FSDP2 refuses bnb 8-bit AdamW
    assert not fsdp2.fits and fsdp2.peak_phase == "load"
    fsdp1 = estimate(issue_405b(parallel="fsdp").with_(fsdp_version=1))
    assert fsdp1.fits and fsdp1.peak_phase != "load"
    # rank 0 holds the quantized base in CPU RAM while it shards it
    assert fsdp1.host_breakdown["loading"] > 200


def test_whole_base_load_is_fine_when_it_fits_one_gpu():
    est = estimate(setup(model="llama-3.1-70b", gpus="8xA100-80GB", method="qlora", parallel="zero3", seq_len=2048))
    assert est.fits and 35 < est.phases_gib["load"] < 50


def test_fsdp_version_goes_with_fsdp_only():
    with pytest.raises(UserError, match="--fsdp-version 1 goes with --parallel fsdp"):
        estimate(setup(model="llama-3.1-70b", gpus="8xA100-80GB", method="lora", parallel="zero3").with_(fsdp_version=1))
    # FSDP1 with a bf16 base (deprecated in Axolotl 0.19, still run) loads like FSDP2 and holds the same
    lora = setup(model="llama-3.1-70b", gpus="8xA100-80GB", method="lora", parallel="fsdp")
    assert estimate(lora.with_(fsdp_version=1)).peak_gpu_gib == pytest.approx(estimate(lora).peak_gpu_gib)


# ---- sharding ------------------------------------------------------------------------------------------


def test_zero_stages_shard_more_and_more_of_a_full_finetune():
    peaks = [estimate(setup(gpus="8xH100-80GB", method="full", parallel=p, seq_len=1024)).allocated_gib
             for p in ("ddp", "zero1", "zero2", "zero3")]
    assert peaks == sorted(peaks, reverse=True)
    assert peaks[0] - peaks[3] > 50       # DDP: 8 bytes/parameter + DDP buckets; ZeRO-3: 16/8


def test_zero3_optimizer_and_master_weights_are_divided_by_world_size():
    one = estimate(setup(gpus="8xH100-80GB", method="full", parallel="zero3"))
    two = estimate(setup(gpus="8xH100-80GB", nodes=2, method="full", parallel="zero3"))
    for part in ("weights", "optimizer", "master_weights"):
        assert two.breakdown[part] == pytest.approx(one.breakdown[part] / 2, rel=1e-9), part


def test_ddp_keeps_everything_whole_on_every_gpu():
    one = estimate(setup(method="lora"))
    eight = estimate(setup(gpus="8xH100-80GB", method="lora", parallel="ddp"))
    assert eight.breakdown["weights"] == pytest.approx(one.breakdown["weights"])


def test_fsdp_and_zero3_gather_parameters_while_computing():
    for parallel in ("zero3", "fsdp"):
        est = estimate(setup(gpus="8xH100-80GB", method="lora", parallel=parallel))
        assert est.phases_gib["backward"] > 0
        assert "gathered_params" in estimate(setup(gpus="8xH100-80GB", method="lora", parallel=parallel,
                                                   seq_len=256)).breakdown


# ---- activations and logits ------------------------------------------------------------------------------


def test_checkpointing_trades_activations_for_recompute():
    on = estimate(setup(method="lora", seq_len=4096))
    off = estimate(setup(method="lora", seq_len=4096, grad_ckpt=False))
    assert off.breakdown["activations"] > 10 * on.breakdown["activations"]
    assert flops_per_token(off.setup) < flops_per_token(on.setup)


def test_activations_and_logits_grow_linearly_with_tokens():
    a = estimate(setup(method="lora", seq_len=2048, grad_ckpt=False))
    b = estimate(setup(method="lora", seq_len=2048, micro_batch=2, grad_ckpt=False))
    assert b.breakdown["activations"] == pytest.approx(2 * a.breakdown["activations"], rel=1e-6)
    assert b.breakdown["logits"] == pytest.approx(2 * a.breakdown["logits"], rel=1e-6)


def test_llama3_logits_are_the_largest_activation_with_checkpointing():
    est = estimate(setup(method="qlora", gpus="1xRTX4090-24GB", seq_len=4096))
    assert est.peak_phase == "loss"
    # 4096 tokens x 128,256 entries x 12 bytes (bf16 logits, fp32 upcast, softmax and its gradient)
    assert est.breakdown["logits"] == pytest.approx(4096 * 128256 * 12 / GIB, rel=1e-9)
    assert est.breakdown["logits"] > est.breakdown["activations"]
    fused = estimate(est.setup, stack=StackFacts.axolotl().with_overrides({"loss": "fused"}))
    assert "logits" not in fused.breakdown and fused.peak_gpu_gib < est.peak_gpu_gib - 4


def test_lora_dropout_copies_cost_memory():
    with_drop = estimate(setup(method="lora", seq_len=8192, grad_ckpt=False))
    without = estimate(with_drop.setup, stack=StackFacts.axolotl().with_overrides({"lora_dropout": False}))
    assert with_drop.breakdown["activations"] > without.breakdown["activations"] * 1.3


def test_eager_attention_is_quadratic_in_sequence_length():
    def acts(seq, attn):
        return estimate(setup(method="lora", seq_len=seq, grad_ckpt=False, attn=attn)).breakdown["activations"]
    assert acts(4096, "flash_attention_2") == pytest.approx(2 * acts(2048, "flash_attention_2"), rel=1e-6)
    assert acts(4096, "eager") / acts(2048, "eager") > 2.5


# ---- adapters, optimizers, offload -------------------------------------------------------------------------


def test_lora_trains_only_adapters():
    lora = estimate(setup(method="lora", lora_r=16))
    t = lora.setup.lora_param_count()
    # fp32 adapters (PEFT), their fp32 gradients and AdamW's two fp32 states
    assert lora.breakdown["lora_weights"] == pytest.approx(4 * t / GIB)
    assert lora.breakdown["optimizer"] == pytest.approx(8 * t / GIB)
    full = estimate(setup(method="full", gpus="8xH100-80GB", parallel="zero3"))
    assert full.breakdown["optimizer"] > 100 * lora.breakdown["optimizer"] / 8 / 2


def test_eight_bit_optimizer_quarters_adam_states():
    a = estimate(setup(method="full", gpus="8xH100-80GB", parallel="zero1", optimizer="adamw_torch_fused"))
    b = estimate(a.setup.with_(optimizer="adamw_bnb_8bit"))
    assert b.breakdown["optimizer"] == pytest.approx(a.breakdown["optimizer"] / 4, rel=1e-9)


def test_paged_optimizer_states_are_outside_the_peak_but_on_the_device():
    est = estimate(setup(method="qlora", gpus="1xRTX4090-24GB", optimizer="paged_adamw_32bit"))
    assert "optimizer" not in est.breakdown
    assert est.paged_optimizer_gib > 0
    assert est.device_gib > est.reserved_gib + est.paged_optimizer_gib - 1e-9


def test_optimizer_offload_moves_state_to_host_ram():
    on_gpu = estimate(setup(method="full", gpus="8xH100-80GB", parallel="zero2"))
    off = estimate(on_gpu.setup.with_(offload="optimizer"))
    assert "optimizer" not in off.breakdown and "master_weights" not in off.breakdown
    assert off.host_breakdown["offloaded_optimizer"] > 60      # 8B x 16 bytes on one node
    assert off.host_ram_gib > on_gpu.host_ram_gib
    assert off.tokens_per_s < on_gpu.tokens_per_s


def test_parameter_offload_empties_the_gpu_of_weights():
    est = estimate(setup(model="llama-3.1-70b", gpus="2xRTX3090-24GB", method="qlora", parallel="zero3", offload="params"))
    assert "weights" not in est.breakdown
    assert est.host_breakdown["offloaded_parameters"] == pytest.approx(
        sum(base_weight_bytes(est.setup.model, "nf4_dq").values()) / GIB, rel=1e-9)


@pytest.mark.parametrize("kw,message", [
    (dict(gpus="8xH100-80GB", parallel="single"), "one GPU"),
    (dict(gpus="8xH100-80GB", parallel="zero2", offload="params"), "only ZeRO-3 can offload parameters"),
    (dict(gpus="8xH100-80GB", parallel="fsdp", offload="optimizer"), "--offload all"),
    (dict(gpus="8xH100-80GB", parallel="ddp", offload="optimizer"), "shards nothing"),
    (dict(gpus="8xH100-80GB", parallel="zero3", weight_format="int8"), "int8"),
    (dict(gpus="8xH100-80GB", parallel="fsdp", optimizer="adamw_bnb_8bit"), "refuses adamw_bnb_8bit"),
    (dict(optimizer="adamw_magic"), "unknown optimizer"),
    (dict(method="full", weight_format="nf4"), "does not go with method full"),
])
def test_invalid_combinations_are_user_errors(kw, message):
    base = dict(method="lora")
    base.update(kw)
    with pytest.raises(UserError, match=message):
        estimate(setup(**base))


# ---- throughput, hours, cost ---------------------------------------------------------------------------------


def test_flops_per_token_counts_passes():
    m = get_model("llama-3.1-8b")
    n = matmul_params(m)
    attn = 4 * m.num_layers * m.q_dim * 2048 / 2
    full = setup(method="full", grad_ckpt=False)
    assert flops_per_token(full) == pytest.approx(6 * n + 3 * attn)
    assert flops_per_token(full.with_(grad_ckpt=True)) == pytest.approx(8 * n + 4 * attn)
    lora = setup(method="lora", lora_targets=ATTN_LINEAR, grad_ckpt=False)
    assert flops_per_token(lora) == pytest.approx(4 * n + 3 * attn + 6 * lora.lora_param_count())


def test_hours_and_cost_follow_tokens_epochs_and_price():
    s = setup(method="lora", gpus="8xH100-80GB", parallel="ddp")
    est = estimate(s, tokens=2_500_000_000, epochs=2)
    assert est.hours == pytest.approx(5_000_000_000 / est.tokens_per_s / 3600)
    assert est.cost_usd == pytest.approx(est.hours * 8 * s.hardware.gpu.usd_per_hour)
    assert estimate(s).hours is None and estimate(s).cost_usd is None


def test_more_gpus_more_throughput_for_data_parallel_lora():
    one = estimate(setup(method="lora", gpus="1xA100-80GB"))
    eight = estimate(setup(method="lora", gpus="8xA100-80GB", parallel="ddp"))
    assert 6 * one.tokens_per_s < eight.tokens_per_s <= 8 * one.tokens_per_s


def test_utilisation_is_a_plausible_fraction():
    for kw in (dict(method="full", gpus="8xH100-80GB", parallel="zero3"), dict(method="qlora", gpus="1xRTX4070S-12GB")):
        est = estimate(setup(**kw))
        assert 0.1 < est.mfu < 0.6


# ---- the record ---------------------------------------------------------------------------------------------


def test_to_dict_is_json_ready_and_self_consistent():
    est = estimate(setup(method="qlora", gpus="1xRTX4070S-12GB"), tokens=10_000_000)
    d = json.loads(json.dumps(est.to_dict()))
    for key in ("peak_gpu_gib", "usable_gpu_gib", "host_ram_gib", "fits", "tokens_per_s", "hours", "cost_usd",
                "breakdown", "setup", "assumptions"):
        assert key in d
    assert d["setup"]["model"] == "llama-3.1-8b"
    assert sum(d["breakdown"].values()) == pytest.approx(d["peak_gpu_gib"], abs=0.01)
    assert d["fits"] is (d["peak_gpu_gib"] <= d["usable_gpu_gib"])
    assert len(d["assumptions"]) >= 8
