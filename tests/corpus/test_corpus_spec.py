from pathlib import Path

import pytest
import yaml

from llamaforge.corpus.spec import load_spec, resolve_sources, spec_from_dict
from llamaforge.errors import UserError
from llamaforge.paths import repo_root

BASE = {"name": "c", "sources": [{"path": "a.jsonl", "category": "general"}]}


def _spec(**changes):
    return spec_from_dict({**BASE, **changes}, origin="s.yaml")


def _error(**changes) -> str:
    with pytest.raises(UserError) as exc:
        _spec(**changes)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("s.yaml")
    return msg


def test_defaults():
    s = _spec()
    assert (s.seed, s.eval_fraction, s.sample_fraction, s.output) == (0, 0.02, 0.1, "build/corpus")
    assert s.sources[0].format == "auto" and not s.phases and s.phase_files is False


def test_hash_ignores_formatting_but_not_content():
    assert _spec().sha256 == spec_from_dict(dict(reversed(list(BASE.items())))).sha256
    assert _spec().sha256 != _spec(seed=1).sha256


def test_unknown_key_suggests_the_right_one():
    assert "did you mean `eval_fraction`" in _error(eval_fracton=0.1)
    assert "`sources[0].fromat`; did you mean `format`" in _error(
        sources=[{"path": "a.jsonl", "category": "y", "fromat": "auto"}])


@pytest.mark.parametrize("changes,needle", [
    ({"sources": [{"path": "a.jsonl", "category": "g", "format": "alpacca"}]}, "did you mean alpaca"),
    ({"sources": [{"path": "a.jsonl"}]}, "category_field"),
    ({"sources": [{"path": "a.jsonl", "hf": "x/y", "category": "g"}]}, "exactly one of"),
    ({"sources": [{"path": "a.txt", "category": "g"}]}, "unsupported file type"),
    ({"sources": []}, "is empty"),
    ({"eval_fraction": 1.5}, "not a fraction"),
    ({"seed": "zero"}, "expected an integer"),
    ({"name": "bad name!"}, "may hold only"),
    ({"mix": {"categories": {"a": {"share": 0.7}}, "general_share": 0.4}}, "more than 1"),
    ({"mix": {"categories": {"a": {"share": 0.5, "count": 3}}}}, "one of count, share and weight"),
    ({"phases": [{"name": "p", "categories": ["a"]}, {"name": "q", "categories": ["a"]}]}, "belongs to one phase"),
    ({"qc": {"drop": ["cliches"]}}, "unknown flag"),
    ({"persona": {"add_system_prompt": "missing"}}, "needs persona.system_prompt"),
    ({"phase_files": True}, "needs `phases:`"),
])
def test_spec_mistakes_are_one_line(changes, needle):
    assert needle in _error(**changes)


def test_invalid_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nsources: [\n  - path: a\n", encoding="utf-8")
    with pytest.raises(UserError, match="malformed YAML at line"):
        load_spec(p)
    with pytest.raises(UserError, match="not found"):
        load_spec(tmp_path / "missing.yaml")


def test_sources_resolve_relative_to_cwd_then_spec_dir(tmp_path, monkeypatch):
    (tmp_path / "specs" / "data").mkdir(parents=True)
    (tmp_path / "specs" / "data" / "a.jsonl").write_text("{}\n")
    (tmp_path / "specs" / "data" / "b.jsonl").write_text("{}\n")
    spec_file = tmp_path / "specs" / "s.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "s", "sources": [
        {"path": "data/a.jsonl", "category": "a"}, {"path": "data/*.jsonl", "category": "b", "name": "all"}]}))
    monkeypatch.chdir(tmp_path)
    found = resolve_sources(load_spec(spec_file), Path.cwd())
    assert [s.label for s in found] == ["data/a.jsonl", "all/a.jsonl", "all/b.jsonl"]
    spec_file.write_text(yaml.safe_dump({"name": "s", "sources": [{"path": "data/none.jsonl", "category": "a"}]}))
    with pytest.raises(UserError, match="data/none.jsonl not found"):
        resolve_sources(load_spec(spec_file), Path.cwd())


def test_shipped_specs_are_valid():
    root = repo_root()
    lev = load_spec(root / "datasets" / "leviathan.yaml")
    assert lev.sources[0].category_field == "_category"
    assert [p.name for p in lev.phases] == ["foundation", "integration", "identity"]
    assert lev.persona.name == "Leviathan" and lev.mix.general_share is not None
    assert load_spec(root / "datasets" / "examples" / "example.yaml").phases
