"""Demo size, real Axolotl on the CPU: SFT the tiny model a few steps, merge it, then DPO on the
cue-preference pairs with the recipe template the committed 8B DPO recipe comes from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ..specialists.tiny_training import cpu_plan, cut_to_steps, logged_metrics, train


def _pair_texts(corpus: Path) -> list[str]:
    texts = []
    for line in (corpus / "train.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        texts += [m["content"] for m in row["prompt"]] + [row["chosen"]["content"], row["rejected"]["content"]]
    return texts


def _implicit_margins(merged: Path, adapter: Path, corpus: Path) -> list[float]:
    """DPO's implicit reward margin of every train pair: (policy - reference) log-probability of the
    chosen answer minus the same for the rejected one; the reference is the adapter disabled."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32), adapter)
    model.eval()

    def logp(prompt, answer) -> float:
        head = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        ids = tok(head + answer + tok.eos_token, return_tensors="pt", add_special_tokens=False).input_ids
        start = len(tok(head, add_special_tokens=False).input_ids)
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
        return float(lp[start - 1:].sum())

    margins = []
    for line in (corpus / "train.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        chosen, rejected = row["chosen"]["content"], row["rejected"]["content"]
        policy = logp(row["prompt"], chosen) - logp(row["prompt"], rejected)
        with model.disable_adapter():
            reference = logp(row["prompt"], chosen) - logp(row["prompt"], rejected)
        margins.append(policy - reference)
    return margins


@pytest.mark.slow
def test_dpo_after_sft_on_the_tiny_model_logs_rewards_and_learns_the_pairs(tmp_path, monkeypatch, cli):
    from llamaforge.corpus.build import BuildOptions, build_corpus
    from llamaforge.demo.workflow import _texts_for_tokenizer, demo_recipe_request, demo_settings
    from llamaforge.export.merge import merge_adapter
    from llamaforge.paths import datasets_dir
    from llamaforge.recipe.dpo import DpoRequest, render_dpo_recipe
    from llamaforge.recipe.request import Layout, RecipeRequest
    from llamaforge.recipe.matrix import write_files
    from llamaforge.models.tiny import create_tiny_model

    monkeypatch.chdir(tmp_path)
    sft_corpus = build_corpus(datasets_dir() / "demo.yaml", BuildOptions(workers=1)).out_dir
    pairs = build_corpus(datasets_dir() / "examples/preference.yaml", BuildOptions(workers=1)).out_dir
    create_tiny_model(tmp_path / "model", _texts_for_tokenizer(sft_corpus) + _pair_texts(pairs))

    # SFT: the demo's recipe, a few steps, then merged and verified as `llamaforge export --merge` does
    tiny = demo_settings("tiny")
    sft = demo_recipe_request(tmp_path / "model", sft_corpus, tmp_path / "sft.yaml", tiny)
    write_files(sft.files, tmp_path)
    cut_to_steps(tmp_path / "sft.yaml")
    train(tmp_path / "sft.yaml", tmp_path)
    sft_out = tmp_path / "outputs/leviathan-tiny"
    assert merge_adapter(tmp_path / "model", sft_out, tmp_path / "merged").passed

    # DPO: the committed recipe's template, on the CPU, from the merged SFT model
    hyper = dict(tiny.hyper, epochs=3, learning_rate=1e-3, logging_steps=1, evals_per_epoch=1)
    req = RecipeRequest(model="tiny", gpus="cpu", method="lora", seq_len=512, lora_r=16, lora_alpha=32,
                        corpus="cue-preference", hyper_layers=(("common", hyper),))
    dpo = DpoRequest(request=req, after="tiny/sft", after_method="lora", beta=0.1)
    rec = render_dpo_recipe(dpo, Layout(recipe_dir_for_model=False, base=".", launch_from_root=True),
                            plan_obj=cpu_plan(lora_r=16, seq_len=512, micro_batch=4, reason="demo-size DPO"),
                            base_model=str(tmp_path / "merged"), train_files=[str(pairs / "train.jsonl")],
                            eval_file=str(pairs / "eval.jsonl"), output_dir="outputs/dpo", name="dpo")
    write_files(rec.files, tmp_path)
    res = cli("check", "dpo.yaml", "--json")
    assert res.code == 0, res.out
    log = train(tmp_path / "dpo.yaml", tmp_path)

    steps = [m for m in logged_metrics(log) if "loss" in m and "rewards/margins" in m]
    assert len(steps) >= 10, log[-3000:]
    assert all({"rewards/chosen", "rewards/rejected", "rewards/accuracies"} <= set(m) for m in steps)
    # the first step's loss is -log sigmoid(0) = ln 2: the reference is exactly the starting model
    # (the merged SFT model, the new adapter disabled), so the policy and the reference agree
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=2e-3) and steps[0]["rewards/margins"] == 0
    assert any(k.startswith("eval_rewards/") for m in logged_metrics(log) for k in m)

    adapter = tmp_path / "outputs/dpo"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]) == tmp_path / "merged"
    margins = _implicit_margins(tmp_path / "merged", adapter, pairs)
    assert sum(margins) / len(margins) > 0 and sum(m > 0 for m in margins) > len(margins) / 2, margins
