"""A specialist's slice: a corpus spec that `extends` the shared one and keeps some categories. The
corpus builder reads, validates and counts every row; the other categories are filtered `category`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llamaforge.corpus.build import BuildOptions, build_corpus
from llamaforge.corpus.manifest import count_identity_errors
from llamaforge.corpus.spec import load_spec
from llamaforge.errors import UserError


def _chat(user: str, answer: str, category: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
            "_category": category}


@pytest.fixture
def shared(tmp_path, monkeypatch):
    """A shared corpus (memory, code, general rows) in data/, its spec beside it; cwd = tmp_path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    rows = [_chat(f"memory question {i}?", f"a memory answer number {i}, complete.", "memory") for i in range(12)]
    rows += [_chat(f"code question {i}?", f"a code answer number {i}, complete.", "code") for i in range(20)]
    rows += [_chat(f"general question {i}?", f"a general answer number {i}, complete.", "general") for i in range(8)]
    rows.append(_chat("memory question 3?", "a memory answer number 3, complete.", "code"))  # same text as a kept row
    rows.append({"messages": [{"role": "user", "content": "broken"}], "_category": "code"})  # bad: no answer
    with open(tmp_path / "data/rows.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    spec = {"name": "shared", "seed": 0, "output": "out", "eval_fraction": 0.1, "sample_fraction": 0.5,
            "sources": [{"path": "rows.jsonl", "category_field": "_category"}]}   # relative to data/
    (tmp_path / "data/shared.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path


def _slice(root: Path, name: str = "slice.yaml", **keys) -> Path:
    data = {"extends": "data/shared.yaml", "name": "shared-memory", "keep_categories": ["memory", "general"], **keys}
    path = root / "slices" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_slice_keeps_its_categories_and_counts_every_other_row_as_filtered(shared):
    res = build_corpus(_slice(shared), BuildOptions(workers=1))
    m = res.manifest
    counts = m["counts"]
    assert counts["read"] == 42 and counts["quarantined"] == 1
    assert counts["filtered"]["by_reason"] == {"category": 21}          # 20 code rows + the code copy of memory 3
    assert counts["kept"] == 20 and counts["duplicates"]["total"] == 0    # filtered first: memory 3 is no duplicate
    assert count_identity_errors(counts) == []
    rows = [json.loads(line) for name in ("train", "eval") for line in (res.out_dir / f"{name}.jsonl").open()]
    assert {r["_category"] for r in rows} == {"memory", "general"} and len(rows) == 20
    assert m["spec"]["extends"].endswith("data/shared.yaml") and m["spec"]["keep_categories"] == ["memory", "general"]
    assert res.out_dir == shared / "out/shared-memory"                   # the parent's output, the slice's name


def test_the_shared_corpus_keeps_everything_and_dedups_across_categories(shared):
    res = build_corpus(shared / "data/shared.yaml", BuildOptions(workers=1))
    counts = res.manifest["counts"]
    assert counts["filtered"]["total"] == 0 and counts["duplicates"]["exact"] == 1 and counts["kept"] == 40


def test_extends_mistakes_are_one_line(shared):
    with pytest.raises(UserError, match="extends: nowhere.yaml not found"):
        load_spec(_slice(shared, extends="nowhere.yaml"))
    nested = _slice(shared, name="nested.yaml", extends="slices/slice.yaml")
    _slice(shared)
    with pytest.raises(UserError, match="which extends another spec"):
        load_spec(nested)
    with pytest.raises(UserError, match="keep_categories: is empty"):
        load_spec(_slice(shared, keep_categories=[]))
    with pytest.raises(UserError, match="keep_categories: every entry must be non-empty text"):
        load_spec(_slice(shared, keep_categories=["memory", 3]))


def test_a_slice_spec_hash_changes_with_its_parent(shared):
    first = load_spec(_slice(shared)).sha256
    parent = yaml.safe_load((shared / "data/shared.yaml").read_text())
    parent["eval_fraction"] = 0.2
    (shared / "data/shared.yaml").write_text(yaml.safe_dump(parent))
    assert load_spec(_slice(shared)).sha256 != first
