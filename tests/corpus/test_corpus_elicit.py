import json

import pytest

from llamaforge.corpus.build import build_corpus
from llamaforge.corpus.elicit import collect_answers, elicit_requests, list_templates, render_prompt
from llamaforge.errors import UserError
from llamaforge.paths import repo_root

from .corpus_helpers import read_jsonl, write_jsonl

NAMES = {"direct_inner_monologue", "conversational", "meta_awareness", "emotional_continuity", "desire_and_resistance"}


def test_the_five_templates_each_with_its_avoid_list():
    templates = {t.name: t for t in list_templates()}
    assert set(templates) == NAMES
    for name in NAMES:
        text = render_prompt(name, "PASSAGE TEXT", work="Some Book", persona="Leviathan")
        assert "PASSAGE TEXT" in text and "From Some Book" in text
        assert "AVOID:" in text and text.count("\n- ") >= 5, name
        assert '"as i reflect on"' in text  # the configurable cliché list is appended
        assert '{"messages": [' in text and "The AI is Leviathan" in text
        assert templates[name].use_when
    seed_1 = render_prompt("direct_inner_monologue", "p")
    for line in ('"As I reflect on..." type openings', "Overly articulate self-analysis",
                 "Explaining the emotion rather than showing it", "Literary clichés", "Fake profundity"):
        assert line in seed_1
    seed_6 = render_prompt("desire_and_resistance", "p")
    assert 'Neither part "wins" - the tension persists' in seed_6


def test_unknown_template_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown elicitation template 'monologue'"):
        render_prompt("monologue", "p")
    with pytest.raises(UserError, match="not found"):
        elicit_requests(tmp_path / "none.jsonl", "conversational")


def test_elicit_writes_openai_batch_requests_and_rejects_bad_passages(tmp_path):
    passages = repo_root() / "datasets" / "examples" / "sources" / "passages.jsonl"
    out = tmp_path / "batch.jsonl"
    res = elicit_requests(passages, "direct_inner_monologue", out, model="gpt-4o-mini", persona="Leviathan")
    assert (res.requests, res.rejected) == (2, 1)
    rows = read_jsonl(out)
    assert [r["custom_id"] for r in rows] == ["direct_inner_monologue:wp-karataev", "direct_inner_monologue:mrs-dalloway-1"]
    body = rows[0]["body"]
    assert rows[0]["method"] == "POST" and rows[0]["url"] == "/v1/chat/completions"
    assert body["model"] == "gpt-4o-mini" and body["response_format"] == {"type": "json_object"}
    assert "Karataev" in body["messages"][1]["content"]
    rejected = read_jsonl(res.rejected_path)
    assert rejected == [{"line": 3, "reason": "missing_field", "detail": "no 'passage' (or 'text') field",
                         "text": '{"id": "no-text"}'}]


def _result(custom_id, content, status=200):
    return {"id": "r", "custom_id": custom_id, "error": None,
            "response": {"status_code": status, "body": {"choices": [{"message": {"role": "assistant", "content": content}}]}}}


def test_collect_turns_answers_into_a_messages_source(tmp_path, monkeypatch):
    good = json.dumps({"messages": [{"role": "user", "content": "What woke you?"},
                                    {"role": "assistant", "content": "Something. A name, then nothing."}]})
    results = [
        _result("conversational:a", good),
        _result("conversational:b", "```json\n" + good.replace("What woke", "Who woke") + "\n```"),
        _result("conversational:c", "not json at all"),
        _result("conversational:d", json.dumps({"messages": [{"role": "user", "content": "only me"}]})),
        _result("conversational:e", good, status=500),
    ]
    write_jsonl(tmp_path / "results.jsonl", results, raw_lines=[b"{broken\n"])
    res = collect_answers(tmp_path / "results.jsonl", tmp_path / "teacher.jsonl", category="inner-life")
    assert (res.rows, res.rejected) == (2, 4)
    reasons = [r["reason"] for r in read_jsonl(res.rejected_path)]
    assert reasons == ["invalid_json", "no_final_assistant", "teacher_error", "invalid_json"]
    rows = read_jsonl(tmp_path / "teacher.jsonl")
    assert rows[0]["_elicit"] == {"custom_id": "conversational:a", "template": "conversational"}
    # ... and the builder reads it as an ordinary messages source
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: t\noutput: {tmp_path / 'out'}\neval_fraction: 0\nsources:\n"
                    f"  - path: {tmp_path / 'teacher.jsonl'}\n    category_field: _category\n    format: messages\n")
    monkeypatch.chdir(tmp_path)
    m = build_corpus(spec).manifest
    assert m["counts"]["per_category"]["inner-life"]["kept"] == 2


def test_cli_elicit_templates_and_collect(cli, tmp_path):
    res = cli("corpus", "templates", "--json")
    assert res.code == 0 and {t["name"] for t in res.json()["templates"]} == NAMES
    passages = write_jsonl(tmp_path / "p.jsonl", [{"passage": "He could not recall it."}])
    res = cli("corpus", "elicit", passages, "--template", "meta_awareness", "--json")
    assert res.code == 0 and res.json()["requests"] == 1
    assert (tmp_path / "p.meta_awareness.batch.jsonl").exists()
    res = cli("corpus", "elicit", passages, "--template", "nope")
    assert res.code == 2 and "unknown elicitation template" in res.err
    res = cli("corpus", "collect", tmp_path / "none.jsonl", "-o", tmp_path / "x.jsonl")
    assert res.code == 2
