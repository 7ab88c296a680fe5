"""Stock Axolotl 0.19, launched with plain `accelerate launch`, trains the rows of a curriculum
corpus's train.jsonl in file order (phase after phase) when the recipe carries the keys the committed
recipes carry, and shuffles them without those keys. The order is recorded from the batches the
trainer really runs: a small Axolotl plugin (a stock extension point, `plugins:`) writes each step's
input_ids, which are decoded back to the rows' markers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

CURRICULUM_KEYS = ("shuffle_merged_datasets", "curriculum_sampling", "sample_packing_sequentially")
PHASES = ("first", "second", "third")
ROW = re.compile(r"ROW(\d{4})")

RECORDER = '''
import json, os
from axolotl.integrations.base import BasePlugin


class OrderRecorder(BasePlugin):
    """Appends the input_ids of every training step to $ORDER_LOG; changes nothing else."""

    def post_trainer_create(self, cfg, trainer):
        path = os.environ["ORDER_LOG"]
        step = trainer.training_step

        def training_step(model, inputs, *args, **kwargs):
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(inputs["input_ids"].tolist()) + "\\n")
            return step(model, inputs, *args, **kwargs)

        trainer.training_step = training_step
'''


@pytest.fixture(scope="module")
def phased(tmp_path_factory):
    """A corpus with three phases (each row's answer carries a ROWnnnn marker), built by the corpus
    builder into build/corpus/curriculum/, and the tiny model."""
    from llamaforge.corpus.build import BuildOptions, build_corpus
    from llamaforge.models.tiny import create_tiny_model

    root = tmp_path_factory.mktemp("curriculum")
    words = "tide salt stone ember river hollow lantern moss quiet thunder".split()
    texts = []
    for p, phase in enumerate(PHASES):
        rows = []
        for i in range(24):
            n = 100 * (p + 1) + i
            filler = " ".join(words[(n + k) % len(words)] for k in range(12 + i % 7))
            answer = f"Reply ROW{n:04d} of the {phase} phase: {filler}."
            rows.append({"messages": [{"role": "user", "content": f"Question {n} about {phase} {filler[:20]}?"},
                                      {"role": "assistant", "content": answer}]})
            texts += [answer, rows[-1]["messages"][0]["content"]]
        (root / f"{phase}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = {"name": "curriculum", "seed": 0, "output": "build/corpus", "eval_fraction": 0.05, "sample_fraction": 0.5,
            "sources": [{"path": str(root / f"{p}.jsonl"), "category": p} for p in PHASES],
            "phases": [{"name": p, "categories": [p]} for p in PHASES]}
    (root / "curriculum.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    build_corpus(root / "curriculum.yaml", BuildOptions(workers=1), cwd=root)
    create_tiny_model(root / "model", texts * 3)
    (root / "order_recorder.py").write_text(RECORDER, encoding="utf-8")
    return root


def _render(root: Path, name: str):
    """A CPU recipe rendered by the templates for a corpus with three phases (as the matrix renders
    the committed recipes for leviathan's), with sample packing like them."""
    from llamaforge.planning.catalog import get_model, parse_hardware
    from llamaforge.demo.workflow import demo_settings
    from llamaforge.planning.plan import Plan
    from llamaforge.recipe.request import Layout, RecipeRequest
    from llamaforge.recipe.sft import render_recipe
    from llamaforge.recipe.matrix import write_files
    from llamaforge.planning.train_setup import TrainSetup

    setup = TrainSetup(model=get_model("tiny"), hardware=parse_hardware("cpu", allow_cpu=True), method="lora",
                       lora_r=8, seq_len=256, micro_batch=1, grad_accum=1, grad_ckpt=False, optimizer="adamw_torch",
                       attn="sdpa", sample_packing=True)
    plan = Plan(setup=setup, estimate=None, reasons=["the curriculum-order test"], rejected=[])
    req = RecipeRequest(model="tiny", gpus="cpu", method="lora", corpus="curriculum", phases=PHASES,
                        hyper_layers=(("common", dict(demo_settings("tiny").hyper, epochs=1, evals_per_epoch=1, saves_per_epoch=1)),))
    rec = render_recipe(req, Layout(recipe_dir_for_model=False, base=".", launch_from_root=True), plan_obj=plan,
                        base_model=str(root / "model"), name=name, output_dir=f"out-{name}")
    write_files(rec.files, root)
    return root / f"{name}.yaml"


def _train(root: Path, recipe: Path, **changes) -> list[int]:
    """Train with plain `accelerate launch` and the recorder plugin; the ROW markers in the order
    the trainer saw them."""
    from transformers import AutoTokenizer

    cfg = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    cfg["plugins"] = ["order_recorder.OrderRecorder"]
    cfg["eval_sample_packing"] = False       # a few eval rows cannot fill a packed eval batch
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    run_cfg = root / f"{recipe.stem}.run.yaml"
    run_cfg.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    log = root / f"{recipe.stem}.order.jsonl"
    log.unlink(missing_ok=True)
    env = dict(os.environ, AXOLOTL_DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", ORDER_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["accelerate", "launch", "--cpu", "--num_processes", "1", "-m", "axolotl.cli.train",
                           str(run_cfg)], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tok = AutoTokenizer.from_pretrained(str(root / "model"))
    seen = []
    for line in log.read_text(encoding="utf-8").splitlines():
        for row in json.loads(line):
            seen += [int(m) for m in ROW.findall(tok.decode(row))]
    return seen


def test_the_committed_recipes_carry_the_keys_this_test_proves():
    from llamaforge.paths import recipes_dir

    cfg = yaml.safe_load((recipes_dir() / "llama-3.1-8b" / "lora-1xH100-80GB.yaml").read_text(encoding="utf-8"))
    assert {k: cfg.get(k) for k in CURRICULUM_KEYS} == {
        "shuffle_merged_datasets": False, "curriculum_sampling": True, "sample_packing_sequentially": True}
    assert cfg["sample_packing"] is True


def test_stock_axolotl_trains_the_phases_in_order_with_the_recipe_keys(phased):
    root = phased
    recipe = _render(root, "ordered")
    cfg = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    assert {k: cfg.get(k) for k in CURRICULUM_KEYS} == {
        "shuffle_merged_datasets": False, "curriculum_sampling": True, "sample_packing_sequentially": True}
    train = [json.loads(line) for line in (root / "build/corpus/curriculum/train.jsonl").read_text().splitlines()]
    expected = [int(ROW.search(r["messages"][-1]["content"]).group(1)) for r in train]
    assert [n // 100 for n in expected] == sorted(n // 100 for n in expected)      # the file: phase after phase

    seen = _train(root, recipe)
    # every packed batch in file order; the last, incomplete pack may be dropped (drop_last)
    assert len(seen) >= 0.8 * len(expected)
    assert seen == expected[: len(seen)]
    assert {n // 100 for n in seen} == {1, 2, 3}

    # without the keys Axolotl shuffles the rows and packs them out of order
    shuffled = _train(root, recipe, max_steps=6, **{k: None for k in CURRICULUM_KEYS})
    assert shuffled and shuffled != expected[: len(shuffled)]
