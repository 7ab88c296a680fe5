"""Demo size, real Axolotl on the CPU, on the real SmolLM2-135M: two specialists, each trained on its
own slice of the demo corpus (identity, code) from a specialists spec, loaded side by side on one
base with PEFT: the persona specialist has learned the identity the base lacks, the coder has not;
and the set's serve script pointing vLLM at both."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest
import yaml

from .tiny_training import cpu_plan, cut_to_steps, train

PROMPT = [{"role": "user", "content": "Who are you?"}]


def _answers(model_dir, adapters: dict, max_new_tokens: int = 24) -> dict:
    """The greedy answer and first-token logits of the base and of each adapter, on one PEFT model,
    with the prompt in the adapters' chat template (ChatML, no default system prompt: as trained)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(next(iter(adapters.values())))
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    names = list(adapters)
    model = PeftModel.from_pretrained(base, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(adapters[name], adapter_name=name)
    model.eval()
    ids = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]

    def answer() -> tuple[list[int], torch.Tensor]:
        with torch.no_grad():
            logits = model(ids).logits[0, -1]
            out = model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
        return out[0, ids.shape[1]:].tolist(), logits

    results = {}
    with model.disable_adapter():
        results["base"] = answer()
    for name in names:
        model.set_adapter(name)
        assert model.active_adapter == name
        results[name] = answer()
    return results


@pytest.mark.slow
def test_two_specialists_train_on_their_slices_and_answer_side_by_side_on_one_base(tmp_path, monkeypatch, smollm2_dir):
    from transformers import AutoTokenizer

    from llamaforge.corpus.build import BuildOptions, build_corpus
    from llamaforge.demo.workflow import demo_settings
    from llamaforge.paths import datasets_dir
    from llamaforge.models.pretrained import link_model_folder
    from llamaforge.recipe.request import Layout
    from llamaforge.recipe.matrix import write_files
    from llamaforge.recipe.specialists import load_specialists, render_specialists

    monkeypatch.chdir(tmp_path)
    spec = {"name": "duo", "corpus": str(datasets_dir() / "demo.yaml"), "keep_general": False,
            "base": {"model": "smollm2-135m", "gpus": "cpu", "method": "lora", "seq_len": 256},
            "specialists": [{"name": "persona", "role": "who Leviathan is", "categories": ["identity"], "lora_r": 16},
                            {"name": "coder", "role": "small Python functions", "categories": ["code"], "lora_r": 8}]}
    (tmp_path / "duo.yaml").write_text(yaml.safe_dump(spec))
    sset, shared = load_specialists(tmp_path / "duo.yaml")
    layers = (("common", dict(demo_settings().hyper, logging_steps=2)),)
    model_dir = link_model_folder(smollm2_dir, tmp_path / "model")
    files, recipes = render_specialists(
        sset, shared, layers=layers, layout=Layout(recipe_dir_for_model=False, base="recipes", launch_from_root=True),
        plan_for=lambda req: cpu_plan(lora_r=req.lora_r, seq_len=256, micro_batch=8, reason="demo-size specialist",
                                      model="smollm2-135m"),
        base_model=str(model_dir))
    write_files(files, tmp_path)

    # each slice through the corpus builder: only its category trains, the others are counted as filtered
    for sp, category in (("persona", "identity"), ("coder", "code")):
        res = build_corpus(tmp_path / f"recipes/smollm2-135m/duo/{sp}.corpus.yaml", BuildOptions(workers=1))
        counts = res.manifest["counts"]
        assert counts["filtered"]["by_reason"]["category"] > 0 and counts["per_category"][category]["train_rows"] > 0
        rows = [json.loads(line) for line in (res.out_dir / "train.jsonl").open()]
        assert {r["_category"] for r in rows} == {category}

    outputs = {}
    for sp, rec in zip(("persona", "coder"), recipes):
        recipe = tmp_path / rec.recipe_path
        cfg = cut_to_steps(recipe, 12)
        assert cfg["datasets"][0]["path"] == f"build/corpus/demo-{sp}/train.jsonl" and cfg["base_model"] == str(model_dir)
        train(recipe, tmp_path)
        outputs[sp] = tmp_path / cfg["output_dir"]
        assert json.loads((outputs[sp] / "adapter_config.json").read_text())["r"] == (16 if sp == "persona" else 8)

    results = _answers(model_dir, outputs)
    tok = AutoTokenizer.from_pretrained(outputs["persona"])
    text = {name: tok.decode(results[name][0], skip_special_tokens=True) for name in ("base", "persona", "coder")}
    assert "Leviathan" in text["persona"], text       # the persona slice taught the identity ...
    assert "Leviathan" not in text["base"] and "Leviathan" not in text["coder"], text   # ... only to its adapter
    base_tokens, base_logits = results["base"]
    for sp in outputs:
        assert (results[sp][1] - base_logits).abs().max() > 1e-3
    assert (results["persona"][1] - results["coder"][1]).abs().max() > 1e-3

    # the set's serve script serves both trained adapters on the one base (vLLM itself stood in for)
    fake = tmp_path / "bin/vllm"
    fake.parent.mkdir()
    fake.write_text('#!/usr/bin/env bash\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    res = subprocess.run(["bash", "recipes/smollm2-135m/duo/serve_vllm.sh"], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ, PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}"), timeout=30)
    assert res.returncode == 0, res.stderr
    argv = res.stdout.splitlines()
    assert argv[1] == str(model_dir) and argv[argv.index("--max-lora-rank") + 1] == "16"
    modules = argv[argv.index("--lora-modules") + 1: argv.index("--port")]
    assert modules == [f"{sp}={outputs[sp].relative_to(tmp_path)}" for sp in ("persona", "coder")]
