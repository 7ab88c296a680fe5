"""The contract with the recipes, checked with Axolotl 0.19's own dataset preparation: the rows the
builder writes load through `type: chat_template` (ChatML) with labels on the assistant turns only,
and curriculum phase files keep their order when the recipe sets shuffle_merged_datasets: false and
curriculum_sampling: true."""

import json
import os
from pathlib import Path

import pytest
import yaml

from llamaforge.corpus.build import build_corpus
from llamaforge.paths import repo_root

pytestmark = pytest.mark.slow

BLOCK = {"type": "chat_template", "field_messages": "messages",
         "message_property_mappings": {"role": "role", "content": "content"},
         "roles_to_train": ["assistant"], "train_on_eos": "turn"}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from llamaforge.models.tiny import create_tiny_model

    work = tmp_path_factory.mktemp("axolotl")
    result = build_corpus(repo_root() / "datasets" / "examples" / "example.yaml", cwd=work)
    out = result.out_dir
    texts = [m["content"] for r in _rows(out / "train.jsonl") for m in r["messages"]]
    model = create_tiny_model(work / "tiny", texts * 4)
    return work, out, result.manifest, model


def _prepare(work: Path, model: Path, name: str, train_files: list[Path], eval_file: Path, **extra):
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets

    cfg = {"base_model": str(model), "tokenizer_config": str(model), "chat_template": "chatml",
           "sequence_len": 512, "excess_length_strategy": "drop", "seed": 0,
           "datasets": [{"path": str(p), **BLOCK} for p in train_files],
           "test_datasets": [{"path": str(eval_file), **BLOCK}],
           "dataset_prepared_path": str(work / f"prepared-{name}"), "output_dir": str(work / f"out-{name}"),
           "micro_batch_size": 1, "gradient_accumulation_steps": 1, "num_epochs": 1, "learning_rate": 1e-4,
           "dataset_num_proc": 1, **extra}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    meta = load_datasets(cfg=load_cfg(str(path)))
    return meta.train_dataset, meta.eval_dataset


def _trained_text(tok, row) -> str:
    return tok.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label != -100])


def test_rows_load_through_chat_template_with_assistant_only_labels_in_phase_order(built):
    from transformers import AutoTokenizer

    work, out, manifest, model = built
    phases = [out / p["path"] for p in manifest["phases"]]
    train, evals = _prepare(work, model, "curriculum", phases, out / "eval.jsonl",
                            shuffle_merged_datasets=False, curriculum_sampling=True)
    tok = AutoTokenizer.from_pretrained(str(model))
    expected = [r for p in phases for r in _rows(p)]
    assert len(train) == len(expected) == manifest["counts"]["train_rows"]
    assert len(evals) == manifest["counts"]["eval_rows"]
    for row, source in zip(train, expected):
        answers = [m["content"] for m in source["messages"] if m["role"] == "assistant"]
        # labels cover exactly the assistant turns (and their end-of-turn token), in file order
        assert _trained_text(tok, row) == "".join(a + "<|im_end|>" for a in answers)
        prompt = tok.decode(row["input_ids"])
        for m in source["messages"]:
            assert f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>" in prompt
    # sequential packing keeps that order too (what sample_packing_sequentially does with the sampler)
    import numpy as np
    from axolotl.utils.samplers.multipack import MultipackBatchSampler
    from torch.utils.data import SequentialSampler

    lengths = np.array([len(r["input_ids"]) for r in train])
    sampler = MultipackBatchSampler(SequentialSampler(range(len(train))), batch_size=1, batch_max_len=512,
                                    lengths=lengths, bin_size=200, sequential=True, drop_last=False)
    order = [i for batch in sampler for b in batch for i in b]
    assert order == sorted(order) and len(order) == len(train)


def test_without_the_curriculum_keys_axolotl_shuffles_the_phases(built):
    work, out, manifest, model = built
    phases = [out / p["path"] for p in manifest["phases"]]
    train, _ = _prepare(work, model, "shuffled", phases, out / "eval.jsonl")
    first_phase_rows = manifest["phases"][0]["train_rows"][1]
    # identity rows (the last phase) are longer prompts; in order they would all come last
    lengths = [len(r["input_ids"]) for r in train]
    curriculum, _ = _prepare(work, model, "ordered", phases, out / "eval.jsonl",
                             shuffle_merged_datasets=False, curriculum_sampling=True)
    assert lengths != [len(r["input_ids"]) for r in curriculum]
    assert len(train) == len(curriculum) and first_phase_rows < len(train)
