"""The demo's recipe (facts/demo.yaml rendered through templates/axolotl/sft.yaml.j2): LoRA on the top
layers, batches grouped by length, its gate profiles and health line in the header, a short
validation's evaluations, and Axolotl's own schema accepts it. No model needed."""

from __future__ import annotations

import math

import yaml

from llamaforge.demo.workflow import demo_recipe_request, demo_settings
from llamaforge.recipe.matrix import write_files


def test_the_demo_recipe_renders_its_settings(tmp_path, cli):
    s = demo_settings()
    corpus = tmp_path / "build/corpus/demo"
    rec = demo_recipe_request(tmp_path / "build/demo/model", corpus, tmp_path / "build/demo/leviathan-smollm2.yaml")
    write_files(rec.files, tmp_path)
    model = tmp_path / "build/demo/model"   # check wants the local base model to exist
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    path = tmp_path / "build/demo/leviathan-smollm2.yaml"
    text = path.read_text()
    cfg = yaml.safe_load(text)
    assert cfg["peft_layers_to_transform"] == list(range(30 - s.hyper["lora_top_layers"], 30))
    assert cfg["group_by_length"] is True and cfg["lora_r"] == s.lora_r and cfg["learning_rate"] == s.hyper["learning_rate"]
    assert cfg["chat_template"] == "chatml" and cfg["bf16"] is False
    for line in ("# llamaforge-model: smollm2-135m", "# llamaforge-gates: demo", "# llamaforge-validate-gates: demo-validate",
                 f"# llamaforge-validate-evals: {s.validate_evals}", "# llamaforge-persona: Leviathan",
                 "# llamaforge-health: plateau_steps=16, plateau_edge_fraction=0.5, spike_factor=2.0"):
        assert line in text, line
    res = cli("check", str(path), "--json")
    assert res.code == 0, res.out


def test_a_short_validation_makes_the_evaluations_its_header_asks_for(tmp_path):
    from llamaforge.run.stage import CorpusFiles, derive_stage_config, load_recipe

    rec = demo_recipe_request(tmp_path / "model", tmp_path / "corpus", tmp_path / "r.yaml")
    write_files(rec.files, tmp_path)
    recipe = load_recipe(tmp_path / "r.yaml")
    s = demo_settings()
    assert recipe.validation_evals == s.validate_evals and recipe.gate_profile_for("validate") == s.validate_gates
    assert s.validate_gates == "demo-validate" and recipe.gate_profile_for("full") == "demo"
    files = CorpusFiles(dir=tmp_path, train=[tmp_path / "train.jsonl"], eval=tmp_path / "eval.jsonl",
                        sample=[tmp_path / "sample.jsonl"], sample_rows=77, train_rows=258, persona="Leviathan")
    cfg, changes = derive_stage_config(recipe, "validate", files, tmp_path / "out")
    assert cfg["evals_per_epoch"] * s.hyper["epochs"] >= s.validate_evals
    # a header asking for more evaluations than the recipe makes raises evals_per_epoch, and says so
    text = (tmp_path / "r.yaml").read_text()
    (tmp_path / "r6.yaml").write_text(text.replace(f"# llamaforge-validate-evals: {s.validate_evals}\n",
                                                   "# llamaforge-validate-evals: 6\n"))
    cfg, changes = derive_stage_config(load_recipe(tmp_path / "r6.yaml"), "validate", files, tmp_path / "out")
    assert cfg["evals_per_epoch"] == math.ceil(6 / s.hyper["epochs"])
    assert any("evals_per_epoch: 3 (at least 6 evaluations" in c for c in changes)
