"""The memory model beyond the dense, data-parallel Llama: mixtures of experts, context / tensor /
expert parallelism, a tiled MLP, activation offloading, fused cross-entropies and reward heads, and
the planner using them where nothing fits as it is (docs/hardware.md, "Long context and N-D
parallelism"). Each test compares two estimates that differ in one thing, so that it fails when the
term it is about is dropped or inverted."""

from __future__ import annotations

import math

import pytest

from llamaforge.planning.catalog import get_model, parse_hardware
from llamaforge.errors import UserError
from llamaforge.planning.estimate import GIB, estimate, flops_per_token
from llamaforge.planning.memory import memory_terms, StackFacts
from llamaforge.planning.plan import plan
from llamaforge.planning.train_setup import TrainSetup, estimate_cli_args

H100x8 = parse_hardware("8xH100-80GB")
L8B = get_model("llama-3.1-8b")
MIXTRAL = get_model("mixtral-8x7b")


def setup(**kw) -> TrainSetup:
    base = dict(model=L8B, hardware=H100x8, method="full", parallel="fsdp", seq_len=8192, micro_batch=1,
                grad_accum=1, optimizer="adamw_torch_fused", attn="flash_attention_2", sample_packing=True)
    return TrainSetup(**{**base, **kw})


def at(s: TrainSetup, moment: str = "backward") -> dict:
    return {k: v / GIB for k, v in memory_terms(s, StackFacts.axolotl()).at(moment).items()}


# ---- mixture of experts -------------------------------------------------------------------------------


def test_all_experts_are_resident_and_only_the_routed_ones_compute():
    moe = setup(model=MIXTRAL, method="lora", parallel="ddp")
    weights = at(moe)["weights"]
    assert weights == pytest.approx(MIXTRAL.parameter_count() * 2 / GIB, rel=0.01)     # 46.7B in bf16
    dense_flops = 6 * MIXTRAL.parameter_count()
    assert flops_per_token(moe) < dense_flops / 2                                      # 12.9B compute, not 46.7B
    # QLoRA on transformers 5: the experts are 3D parameters bitsandbytes leaves bf16, unless quantize_moe_experts
    q = at(setup(model=MIXTRAL, method="qlora", parallel="ddp"))["weights"]
    qq = at(setup(model=MIXTRAL, method="qlora", parallel="ddp", quantize_experts=True))["weights"]
    assert q > 80 and qq < 30
    assert "dequantized_weights" in at(setup(model=MIXTRAL, method="qlora", parallel="ddp", quantize_experts=True))


def test_routed_tokens_and_expert_lora():
    lora = setup(model=MIXTRAL, method="lora", parallel="ddp")
    with_experts = lora.with_(lora_expert_targets=("gate_up_proj", "down_proj"))
    e = MIXTRAL.expert_shapes()
    per_layer = 16 * 8 * ((e["gate_proj"][0] + 2 * e["gate_proj"][1]) + (e["down_proj"][0] + e["down_proj"][1]))
    assert with_experts.lora_param_count() - lora.lora_param_count() == per_layer * MIXTRAL.num_layers
    # a trained expert keeps its dispatched input: more activations than frozen experts
    assert at(with_experts)["activations"] > at(lora)["activations"]
    with pytest.raises(UserError):
        estimate(setup(method="lora", parallel="ddp", lora_expert_targets=("down_proj",)))   # a dense model


def test_expert_parallel_splits_the_experts_where_nothing_else_shards_them():
    ddp = setup(model=MIXTRAL, method="lora", parallel="ddp")
    ep = ddp.with_(expert_parallel=8)
    assert at(ep)["weights"] < at(ddp)["weights"] / 4
    fsdp = setup(model=MIXTRAL, method="lora")
    assert at(fsdp.with_(expert_parallel=8))["weights"] == pytest.approx(at(fsdp)["weights"])   # FSDP shards them anyway


# ---- context and tensor parallelism --------------------------------------------------------------------


def test_context_parallel_splits_each_sequence():
    one, cp = setup(seq_len=65536), setup(seq_len=65536, context_parallel=8)
    assert cp.tokens_per_gpu == 8192 and cp.data_parallel == 1 and cp.global_batch == 1
    assert at(cp)["activations"] < at(one)["activations"] / 6
    assert at(cp, "loss")["logits"] == pytest.approx(at(one, "loss")["logits"] / 8)
    assert at(cp)["context_parallel"] > 0 and "context_parallel" not in at(one)
    with pytest.raises(UserError, match="flash_attention_2"):
        estimate(cp.with_(attn="sdpa"))
    with pytest.raises(UserError, match="micro-batch 1"):
        estimate(cp.with_(micro_batch=2))
    with pytest.raises(UserError, match="divide"):
        estimate(setup(context_parallel=3))


def test_tensor_parallel_splits_the_linears_not_the_embeddings():
    tp = setup(parallel="ddp", tensor_parallel=2)
    assert at(tp)["weights"] < at(setup(parallel="ddp"))["weights"] * 0.6
    assert tp.data_parallel == 4
    assert estimate(tp).flops_per_token == estimate(setup(parallel="ddp")).flops_per_token
    with pytest.raises(UserError, match="tensor parallelism"):
        estimate(tp.with_(optimizer="adamw_bnb_8bit"))


# ---- memory savers ----------------------------------------------------------------------------------------


def test_tiled_mlp_keeps_only_the_mlp_input_and_recomputes_by_shard():
    plain, tiled = setup(seq_len=131072, grad_ckpt=False), setup(seq_len=131072, grad_ckpt=False, tiled_mlp=True)
    assert at(tiled)["activations"] < at(plain)["activations"] * 0.7
    assert at(tiled)["tiled_mlp"] > 0
    from llamaforge.planning.memory import tiled_mlp_shards

    assert tiled_mlp_shards(tiled) == math.ceil(131072 / 32768) == 4
    assert tiled_mlp_shards(tiled.with_(tiled_mlp_shards=16)) == 16
    assert tiled_mlp_shards(tiled.with_(context_parallel=8, sample_packing=True)) == 1


def test_activation_offloading_moves_checkpointed_inputs_to_host_ram():
    on, off = setup(seq_len=131072, activation_offload="cpu"), setup(seq_len=131072)
    assert at(on)["activations"] < at(off)["activations"]
    host = memory_terms(on, StackFacts.axolotl()).host["offloaded_activations"]
    assert host == pytest.approx(L8B.num_layers * 2 * L8B.hidden_size * 131072 * 8)
    assert "offloaded_activations" not in memory_terms(on.with_(activation_offload="disk"), StackFacts.axolotl()).host
    with pytest.raises(UserError, match="gradient checkpointing"):
        estimate(on.with_(grad_ckpt=False))


@pytest.mark.parametrize("loss,per_logit", [("default", 12), ("chunked", 3), ("cce", 0), ("liger", 0)])
def test_fused_cross_entropies_never_hold_the_logits(loss, per_logit):
    s = setup(loss=loss)
    extra = {"cce": 2, "liger": 6}.get(loss, 0) * L8B.hidden_size
    assert at(s, "loss").get("logits", 0) * GIB == pytest.approx((per_logit * L8B.vocab_size + extra) * 8192)


def test_a_reward_model_has_a_score_head():
    reward = setup(head="score")
    assert "logits" not in at(reward, "loss")
    assert at(reward)["weights"] < at(setup())["weights"]
    assert estimate(reward).flops_per_token < estimate(setup()).flops_per_token


# ---- reproducible from the command line, and planned ---------------------------------------------------------


def test_estimate_flags_reproduce_a_long_context_setup(cli):
    s = setup(seq_len=262144, context_parallel=8, tiled_mlp=True, activation_offload="legacy", loss="liger")
    args = estimate_cli_args(s, tokens=None)
    for flag in ("--context-parallel", "--tiled-mlp", "--activation-offload", "--loss"):
        assert flag in args
    res = cli(*args[1:], "--json")
    assert res.code == 0, res.err
    assert res.json()["peak_gpu_gib"] == pytest.approx(estimate(s).peak_gpu_gib, abs=0.01)


def test_the_planner_uses_the_savers_where_nothing_fits_as_it_is():
    p = plan(L8B, H100x8, method="full", seq_len=131072)
    s = p.setup
    assert s.loss == "liger" and p.estimate.fits
    assert any("memory savers" in r for r in p.reasons)
    assert any("logits" in r["why"] for r in p.rejected)          # the plain setups that do not fit
    longer = plan(L8B, H100x8, method="full", seq_len=1048576).setup
    assert longer.context_parallel > 1 and longer.tiled_mlp
    # a short sequence needs none of them
    short = plan(L8B, H100x8, method="full", seq_len=4096).setup
    assert (short.loss, short.tiled_mlp, short.context_parallel) == ("default", False, 1)


def test_a_rendered_long_context_recipe_is_read_back_as_planned(tmp_path, cli):
    from llamaforge.check.findings import check_config

    res = cli("render", "--model", "llama-3.1-8b", "--gpus", "8xH100-80GB", "--method", "full",
              "--seq-len", "1048576", "-o", str(tmp_path))
    assert res.code == 0, res.err
    recipe = next(tmp_path.glob("*.yaml"))
    text = recipe.read_text()
    assert "liger_fused_linear_cross_entropy: true" in text and "context_parallel_size:" in text
    report = check_config(recipe, hardware="8xH100-80GB", schema=False)
    planned = plan(L8B, H100x8, method="full", seq_len=1048576)
    assert report.setup.context_parallel == planned.setup.context_parallel
    assert report.estimate.peak_gpu_gib == pytest.approx(planned.estimate.peak_gpu_gib, abs=0.05)
