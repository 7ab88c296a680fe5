"""The demo corpus sources are what their generator writes (so their provenance is readable), and
the demo spec builds with the corpus builder."""

import importlib.util
import json

from llamaforge.paths import datasets_dir


def _generator():
    path = datasets_dir() / "sources/demo/generate.py"
    spec = importlib.util.spec_from_file_location("demo_generate", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_demo_sources_equal_the_generator_output():
    for name, text in _generator().render().items():
        assert (datasets_dir() / "sources/demo" / name).read_text(encoding="utf-8") == text, name


def test_demo_sources_cover_the_gates_prompts():
    gen = _generator()
    identity_prompts = {json.loads(line)["prompt"] for line in open(datasets_dir().parent / "evals/tasks/identity/identity_prompts.jsonl")}
    assert identity_prompts <= set(gen.IDENTITY_PROMPTS)
    suite = [json.loads(line)["prompt"] for line in open(datasets_dir().parent / "evals/tasks/inference_suite/inference_suite.jsonl")]
    taught = {q for _, qs in gen.GENERAL + gen.CODE + gen.REASONING for q in qs} | set(gen.IDENTITY_PROMPTS)
    # the demo teaches the suite's questions in several phrasings (documented in generate.py)
    assert sum(q in taught for q in suite) >= 16


def test_demo_spec_builds(tmp_path):
    from llamaforge.corpus.build import BuildOptions, build_corpus

    res = build_corpus(datasets_dir() / "demo.yaml", BuildOptions(workers=1), cwd=tmp_path)
    c = res.manifest["counts"]
    assert c["read"] == c["kept"] + c["duplicates"]["total"] + c["quarantined"] + c["filtered"]["total"]
    assert c["duplicates"]["exact"] == 1            # general.jsonl repeats one row on purpose
    assert res.manifest["files"]["sample"]["rows"] > 100
    assert res.manifest["persona"]["name"] == "Leviathan"
