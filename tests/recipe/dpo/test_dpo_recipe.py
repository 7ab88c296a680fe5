"""The DPO stage's pricing, planning and the committed 8B DPO recipe (pure; no Axolotl)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from llamaforge.errors import Infeasible, UserError
from llamaforge.planning.estimate import estimate, matmul_params
from llamaforge.paths import repo_root
from llamaforge.planning.dpo import estimate_dpo, sft_equivalent
from llamaforge.recipe.dpo import dpo_requests, plan_dpo_request
from llamaforge.recipe.registry import read_header
from llamaforge.recipe.request import RecipeRequest
from llamaforge.recipe.matrix import load_matrix

DPO_RECIPE = repo_root() / "recipes/llama-3.1-8b/dpo-lora-1xH100-80GB.yaml"


def _request(**changes) -> RecipeRequest:
    return replace(RecipeRequest(model="llama-3.1-8b", gpus="1xH100-80GB", method="lora", seq_len=4096), **changes)


def test_a_dpo_step_is_priced_as_two_unpacked_sequences_per_pair_plus_a_reference_forward():
    setup = plan_dpo_request(_request()).setup
    dpo = estimate_dpo(setup, tokens=10**9)
    sft = estimate(sft_equivalent(setup), tokens=10**9)
    assert sft_equivalent(setup).micro_batch == 2 * setup.micro_batch and not sft_equivalent(setup).sample_packing
    assert dpo.peak_gpu_gib == sft.peak_gpu_gib and dpo.host_ram_gib == sft.host_ram_gib
    reference = 2.0 * matmul_params(setup.model)
    assert dpo.tokens_per_s == pytest.approx(sft.tokens_per_s * sft.flops_per_token / (sft.flops_per_token + reference))
    assert dpo.hours == pytest.approx(sft.hours * sft.tokens_per_s / dpo.tokens_per_s)
    assert dpo.setup == setup and any("reference forward" in a for a in dpo.assumptions)


def test_the_plan_counts_pairs_never_packs_and_fits_with_the_planners_margin():
    p = plan_dpo_request(_request(global_batch=32))
    s = p.setup
    assert s.global_batch == 32 and not s.sample_packing and s.method == "lora"
    assert p.estimate.peak_gpu_gib <= p.estimate.usable_gpu_gib * 0.95
    headroom = 0.05 if s.grad_ckpt else 0.15          # the planner's margins with and without checkpointing
    bigger = estimate_dpo(s.with_(micro_batch=2 * s.micro_batch, grad_accum=s.grad_accum // 2))
    assert s.grad_accum == 1 or bigger.peak_gpu_gib > bigger.usable_gpu_gib * (1 - headroom)   # the largest that fits
    assert any("reference is that model with the adapter disabled" in r for r in p.reasons)


def test_dpo_refuses_a_full_fine_tune_and_what_does_not_fit():
    with pytest.raises(UserError, match="needs method lora or qlora"):
        plan_dpo_request(_request(method="full"))
    with pytest.raises(UserError, match="full-parameter DPO"):
        estimate_dpo(plan_dpo_request(_request()).setup.with_(method="full"))
    # QLoRA SFT of 8B fits a 12 GB card at 2,048 tokens; a pair (two sequences) does not
    with pytest.raises(Infeasible, match="one pair .2 sequences of 2048 tokens.") as err:
        plan_dpo_request(_request(gpus="1xRTX4070S-12GB", method="qlora", seq_len=2048))
    assert "shorter seq_len" in err.value.suggestion and "QLoRA" not in err.value.suggestion


def test_the_committed_dpo_recipe_starts_from_the_merged_sft_model_and_reads_pairs():
    text = DPO_RECIPE.read_text()
    cfg, header = yaml.safe_load(text), read_header(text)
    assert header["stage"] == "dpo" and header["method"] == "lora" and header["model"] == "llama-3.1-8b"
    sft_path = repo_root() / header["after"]
    sft = yaml.safe_load(sft_path.read_text())
    assert cfg["base_model"] == f"{sft['output_dir']}/merged"           # where `axolotl merge-lora SFT` writes it
    assert f"axolotl merge-lora {header['after']}" in text
    assert cfg["rl"] == "dpo" and cfg["rl_beta"] == 0.1 and cfg["adapter"] == "lora"
    assert cfg["chat_template"] == sft["chat_template"]
    for ds in cfg["datasets"] + cfg["test_datasets"]:
        assert ds["type"] == "chat_template.default"
        assert (ds["field_messages"], ds["field_chosen"], ds["field_rejected"]) == ("prompt", "chosen", "rejected")
        assert ds["path"].startswith("build/corpus/leviathan-preference/")
    assert "sample_packing" not in cfg and cfg["num_epochs"] == 1 and cfg["learning_rate"] == 5e-6
    plan = plan_dpo_request(load_matrix().preference[0].request)
    assert header["peak_gpu_gib"] == round(plan.estimate.peak_gpu_gib, 1)
    assert cfg["micro_batch_size"] * cfg["gradient_accumulation_steps"] == plan.setup.global_batch


def test_the_preference_corpus_spec_it_reads_is_a_preference_corpus():
    from llamaforge.corpus.spec import load_spec

    spec = load_spec(repo_root() / "datasets/leviathan-preference.yaml")
    assert spec.kind == "preference" and spec.name == "leviathan-preference"


@pytest.mark.parametrize("entry, message", [
    ({"after": "llama-3.1-8b/nothing", "corpus": "p"}, "is not a recipe of the matrix"),
    ({"corpus": "p"}, "needs `after`"),
    ({"after": "llama-3.1-8b/lora-1xH100-80GB", "corpus": "p", "beta": -1}, "beta must be a positive number"),
    ({"after": "llama-3.1-8b/lora-1xH100-80GB", "corpus": "p", "gamma": 1}, "unknown key.*gamma"),
    ({"after": "llama-3.1-8b/lora-1xH100-80GB", "corpus": "p", "hyperparameters": {"lr": 1}}, "unknown hyperparameter"),
])
def test_matrix_preference_mistakes_are_one_line(entry, message):
    m = load_matrix()
    by_id = {"llama-3.1-8b/lora-1xH100-80GB": _request()}
    with pytest.raises(UserError, match=message):
        dpo_requests([entry], by_id, m.hyper_layers, "matrix.yaml")


def test_a_dpo_after_a_full_fine_tune_starts_from_its_output_dir():
    m = load_matrix()
    full = next(r for r in m.requests if r.method == "full")
    by_id = {"llama-3.1-8b/full-8xH100-80GB": full}
    [d] = dpo_requests([{"after": "llama-3.1-8b/full-8xH100-80GB", "corpus": "p"}], by_id, m.hyper_layers,
                       "matrix.yaml")
    assert d.request.method == "lora" and d.base_model == "outputs/llama-3.1-8b/full-8xH100-80GB"


def test_the_ladder_prices_the_sft_recipe_not_the_dpo_one_on_the_same_hardware():
    from llamaforge.planning.catalog import parse_hardware
    from llamaforge.planning.ladder import CorpusTokens, load_ladder_facts, rung_result
    from llamaforge.recipe.registry import list_recipes

    rung = next(r for r in load_ladder_facts().rungs if r.model == "llama-3.1-8b")
    tokens = CorpusTokens(tokens_per_epoch=10**9, exact=False, method="test", approximation="test")
    result = rung_result(rung, parse_hardware("1xH100-80GB"), tokens, 1.0, list_recipes())
    assert result.recipe == "recipes/llama-3.1-8b/lora-1xH100-80GB.yaml"
