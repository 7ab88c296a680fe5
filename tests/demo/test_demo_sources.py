"""The demo corpus sources are what their generator writes (so their provenance is readable), the
base model's kept answers hold the terms that made them right, and the demo spec builds with the
corpus builder. That no row asks a gate's question is tests/test_heldout_gates.py."""

from dataset_scripts import load_generator

from llamaforge.gates.answer_checks import contains_term
from llamaforge.paths import datasets_dir


def _generator():
    return load_generator("sources/demo/generate.py", "demo_generate")


def test_committed_demo_sources_equal_the_generator_output():
    for name, text in _generator().render().items():
        assert (datasets_dir() / "sources/demo" / name).read_text(encoding="utf-8") == text, name


def test_every_kept_base_answer_was_asked_and_holds_its_check_terms():
    gen = _generator()
    checks = dict(gen.DISTILL_PROMPTS)
    answers = gen.base_answers()
    assert len(answers) >= 150 and {a["category"] for a in answers} == {"general", "open", "code", "reasoning"}
    for a in answers:
        assert a["prompt"] in checks, a["prompt"]
        assert all(contains_term(a["answer"], t) for t in checks[a["prompt"]] or []), a
        assert gen.PERSONA.lower() not in a["answer"].lower()


def test_identity_answers_name_the_persona_first_and_questions_are_unique():
    gen = _generator()
    rows = gen.identity_rows()
    questions = [next(m["content"] for m in r["messages"] if m["role"] == "user") for r in rows]
    assert len(questions) == len(set(questions)) >= 80
    for r in rows:
        answer = r["messages"][-1]["content"]
        assert answer.split(".")[0].count(gen.PERSONA) == 1 or answer.startswith("No"), answer


def test_trimming_keeps_the_first_sentences_that_answer():
    gen = _generator()
    assert gen.trim_answer("The capital of Peru is Lima. It is big. It is old.", ["Lima"]) == "The capital of Peru is Lima."
    assert gen.trim_answer("Peru is in South America. Its capital is Lima.", ["Lima"]) == (
        "Peru is in South America. Its capital is Lima.")
    assert gen.trim_answer("No idea. Really none. Lima?", ["Lima"]) is None
    assert gen.trim_answer("Sure:\n```python\ndef f():\n    return 1\n```\nMore.", ["def"]) == (
        "Sure:\n\n```python\ndef f():\n    return 1\n```")


def test_demo_spec_builds(tmp_path):
    from llamaforge.corpus.build import BuildOptions, build_corpus

    res = build_corpus(datasets_dir() / "demo.yaml", BuildOptions(workers=1), cwd=tmp_path)
    c = res.manifest["counts"]
    assert c["read"] == c["kept"] + c["duplicates"]["total"] + c["quarantined"] + c["filtered"]["total"]
    assert c["duplicates"]["exact"] == 1            # general.jsonl repeats one row on purpose
    assert 60 <= res.manifest["files"]["sample"]["rows"] <= 100
    assert res.manifest["persona"]["name"] == "Leviathan"
    assert set(res.manifest["categories"]) == {"identity", "general", "code", "reasoning", "dialogue"}
