"""End-to-end builds of small corpora (in this process; fast)."""

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from llamaforge.corpus import build as build_module
from llamaforge.corpus.build import BuildOptions, build_corpus
from llamaforge.corpus.manifest import count_identity_errors, load_manifest, manifest_hash
from llamaforge.errors import UserError

from .corpus_helpers import chat, read_jsonl, write_jsonl

# One planted bad row of every kind, with the reason each must be quarantined for.
PLANTED = [
    (b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]\n', "invalid_json"),
    (b'{"text": "caf\xe9"}\n', "invalid_utf8"),
    (b'[1, 2]\n', "not_an_object"),
    (b'{"messages": 7}\n', "wrong_type"),
    (b'{"messages": [{"role": "user", "content": "n"}, {"role": "assistant", "content": 5}]}\n', "wrong_type"),
    (b'{"messages": [{"role": "user", "content": "n"}, {"role": "assistant"}]}\n', "missing_field"),
    (b'{"instruction": "no output"}\n', "missing_field"),
    (b'{"messages": []}\n', "empty_conversation"),
    (b'{"messages": [{"role": "robot", "content": "n"}, {"role": "assistant", "content": "a"}]}\n', "unknown_role"),
    (b'{"messages": [{"role": "user", "content": "only a question"}]}\n', "no_final_assistant"),
    (b'{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]}\n', "empty_message"),
    (b'{"nothing": "known"}\n', "unknown_format"),
    (b'{"messages": [{"role": "user", "content": "cut"}, {"role": "assis', "truncated_last_line"),
]


def _rows(category, n, prefix=None):
    prefix = prefix or category
    return [chat(f"{prefix} question {i}?", f"{prefix} answer number {i}, a full sentence.", _category=category)
            for i in range(n)]


def _hashes(out: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


def test_planted_bad_rows_are_quarantined_with_line_and_reason(corpus_dir):
    good = _rows("general", 20)
    blank_and_crlf = [b"\n", b"   \r\n"]
    path = corpus_dir / "mixed.jsonl"
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf")  # a UTF-8 BOM
        for row in good:
            f.write(json.dumps(row).encode() + b"\r\n")  # CRLF line endings
        for raw in blank_and_crlf:
            f.write(raw)
        for raw, _ in PLANTED:
            f.write(raw)
    spec = corpus_dir.spec(sources=[{"path": "mixed.jsonl", "category_field": "_category", "category": "general"}])
    m = build_corpus(spec).manifest
    q = read_jsonl(corpus_dir / "out" / "c" / "quarantine.jsonl")
    first_bad_line = 1 + len(good) + len(blank_and_crlf)
    assert [(e["line"], e["reason"]) for e in q] == [
        (first_bad_line + i, reason) for i, (_raw, reason) in enumerate(PLANTED)]
    assert all(e["source"] == "mixed.jsonl" and e["detail"] for e in q)
    assert "\\xe9" in q[1]["text"]  # invalid UTF-8 shown escaped, never repaired
    c = m["counts"]
    assert c["read"] == len(good) + len(PLANTED)  # blank lines are not rows
    assert c["quarantined"] == len(PLANTED) and c["kept"] == len(good)
    assert c["quarantined_by_reason"] == dict(sorted(Counter(r for _raw, r in PLANTED).items()))
    assert not count_identity_errors(c)
    # the same line numbers when the file is cut into many small ranges
    build_corpus(spec, BuildOptions(chunk_bytes=300, workers=1))
    assert read_jsonl(corpus_dir / "out" / "c" / "quarantine.jsonl") == q


def test_counts_reconcile_per_source_and_category_with_duplicates(corpus_dir):
    write_jsonl(corpus_dir / "a.jsonl", _rows("general", 30) + _rows("code", 10) + _rows("general", 5),
                raw_lines=[b"not json\n"])
    # b.jsonl repeats 5 rows of a.jsonl (a duplicate across sources) and adds its own
    write_jsonl(corpus_dir / "b.jsonl", _rows("general", 5) + _rows("identity", 12))
    spec = corpus_dir.spec(sources=[{"path": "a.jsonl", "category_field": "_category"},
                                    {"path": "b.jsonl", "category_field": "_category"}], eval_fraction=0.1)
    c = build_corpus(spec).manifest["counts"]
    assert not count_identity_errors(c)
    assert c["duplicates"]["exact"] == 10  # 5 inside a.jsonl, 5 across sources
    assert c["per_source"]["b.jsonl"]["duplicates"]["exact"] == 5
    assert c["per_source"]["a.jsonl"]["quarantined"] == 1
    assert c["per_category"]["identity"]["kept"] == 12
    for name, block in c["per_category"].items():
        assert block["read"] == block["kept"] + block["duplicates"]["total"] + block["quarantined"] + \
            block["filtered"]["total"], name


def test_identity_violation_is_refused(monkeypatch):
    from llamaforge.corpus.manifest import check_counts

    good = {"read": 3, "kept": 2, "duplicates": {"exact": 1, "near": 0, "total": 1}, "quarantined": 0,
            "filtered": {"total": 0, "by_reason": {}}}
    check_counts(good)
    with pytest.raises(AssertionError, match="do not reconcile"):
        check_counts({**good, "kept": 1})


def test_rebuild_is_byte_identical_whatever_the_workers(corpus_dir):
    write_jsonl(corpus_dir / "big.jsonl", _rows("general", 400) + _rows("code", 150) + _rows("identity", 60),
                raw_lines=[b"{bad\n"])
    spec = corpus_dir.spec(sources=[{"path": "big.jsonl", "category_field": "_category"}],
                           mix={"categories": {"identity": {"count": 100}}},
                           phases=[{"name": "base", "categories": ["general", "code"]},
                                   {"name": "persona", "categories": ["identity"]}])
    out = corpus_dir / "out" / "c"
    build_corpus(spec)
    first = _hashes(out)
    build_corpus(spec)
    assert _hashes(out) == first
    build_corpus(spec, BuildOptions(workers=2, chunk_bytes=4096, bucket_bytes=2048))
    assert _hashes(out) == first
    load_manifest(out, verify="sha256")  # the hashes taken while writing are those of the files
    assert not list((corpus_dir / "out").glob(".c.*"))  # no temporary folders left


def test_splits_are_stratified_and_sample_is_round_fraction(corpus_dir):
    write_jsonl(corpus_dir / "s.jsonl", _rows("general", 333) + _rows("code", 121) + _rows("identity", 47))
    spec = corpus_dir.spec(sources=[{"path": "s.jsonl", "category_field": "_category"}],
                           eval_fraction=0.05, sample_fraction=0.1,
                           mix={"categories": {"identity": {"count": 90}}})
    m = build_corpus(spec).manifest
    out = corpus_dir / "out" / "c"
    train, sample, ev = (read_jsonl(out / f"{n}.jsonl") for n in ("train", "sample", "eval"))
    tc, sc = Counter(r["_category"] for r in train), Counter(r["_category"] for r in sample)
    for cat in tc:
        assert abs(sc[cat] - round(0.1 * tc[cat])) <= 1, cat
    ec = Counter(r["_category"] for r in ev)
    assert ec == {"general": round(333 * 0.05), "code": round(121 * 0.05), "identity": round(47 * 0.05)}
    assert not {r["_id"] for r in ev} & {r["_id"] for r in train}  # no leak from eval into train
    assert tc["identity"] == 90
    repeats = [r for r in train if "_repeat" in r]
    assert len(repeats) == 90 - (47 - round(47 * 0.05)) and all(r["_category"] == "identity" for r in repeats)
    assert list(train[0]) == ["messages", "_category", "_source", "_id"]
    assert m["counts"]["sample_rows"] == len(sample)


def test_limit_then_add_extends_deterministically(corpus_dir):
    write_jsonl(corpus_dir / "s.jsonl", _rows("general", 300) + _rows("code", 100) + _rows("identity", 100))
    spec = corpus_dir.spec(sources=[{"path": "s.jsonl", "category_field": "_category"}])
    out = corpus_dir / "out" / "c"
    m500 = build_corpus(spec, BuildOptions(limit=50)).manifest
    first = {(r["_id"], r.get("_repeat", 0)) for r in read_jsonl(out / "train.jsonl")}
    assert len(first) == 50
    assert Counter(r["_category"] for r in read_jsonl(out / "train.jsonl")) == {"general": 30, "code": 10, "identity": 10}
    m = build_corpus(spec, BuildOptions(add=50)).manifest
    second = {(r["_id"], r.get("_repeat", 0)) for r in read_jsonl(out / "train.jsonl")}
    assert len(second) == 100 and first < second
    assert m["build"] == {"limit": 100, "extends": {"limit": 50, "manifest_sha256": m["build"]["extends"]["manifest_sha256"]}}
    assert m500["counts"]["filtered"]["by_reason"]["limit"] > m["counts"]["filtered"]["by_reason"]["limit"]
    hashes = _hashes(out)
    build_corpus(spec, BuildOptions(limit=100))
    h2 = _hashes(out)
    assert h2["train.jsonl"] == hashes["train.jsonl"]  # --add 50 after 50 == --limit 100


def test_add_needs_a_previous_limited_build_of_the_same_spec(corpus_dir):
    write_jsonl(corpus_dir / "s.jsonl", _rows("general", 20))
    spec = corpus_dir.spec(sources=[{"path": "s.jsonl", "category_field": "_category"}])
    with pytest.raises(UserError, match="has none"):
        build_corpus(spec, BuildOptions(add=5))
    build_corpus(spec)
    with pytest.raises(UserError, match="no limit"):
        build_corpus(spec, BuildOptions(add=5))
    build_corpus(spec, BuildOptions(limit=5))
    other = corpus_dir.spec(sources=[{"path": "s.jsonl", "category_field": "_category"}], seed=3)
    with pytest.raises(UserError, match="another spec or seed"):
        build_corpus(other, BuildOptions(add=5))


@pytest.mark.parametrize("sources,needle", [
    ([{"path": "missing.jsonl", "category": "g"}], "missing.jsonl not found"),
    ([{"path": "s.jsonl", "category": "g", "format": "xml"}], "unknown format 'xml'"),
])
def test_user_mistakes_exit_2_and_write_nothing(corpus_dir, cli, sources, needle):
    write_jsonl(corpus_dir / "s.jsonl", _rows("general", 3))
    spec = corpus_dir.spec(sources=sources)
    res = cli("corpus", "build", spec)
    assert res.code == 2 and needle in res.err and "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) == 1
    assert not (corpus_dir / "out").exists()


def test_unreadable_spec_exits_2(corpus_dir, cli):
    (corpus_dir / "bad.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    res = cli("corpus", "build", corpus_dir / "bad.yaml")
    assert res.code == 2 and "malformed YAML" in res.err
    (corpus_dir / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    assert cli("corpus", "build", corpus_dir / "bin.yaml").code == 2


def test_hf_dataset_unavailable_offline_is_one_clear_line(corpus_dir, cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    spec = corpus_dir.spec(sources=[{"hf": "llamaforge-test/no-such-dataset", "category": "general"}])
    res = cli("corpus", "build", spec)
    assert res.code == 2 and "not available" in res.err and "local Hugging Face cache" in res.err
    assert not (corpus_dir / "out").exists()


def test_hf_source_reads_a_local_dataset_folder(corpus_dir):
    write_jsonl(corpus_dir / "hfdata" / "train.jsonl", _rows("general", 8) + [{"messages": "bad"}])
    spec = corpus_dir.spec(sources=[{"hf": str(corpus_dir / "hfdata"), "category": "general", "name": "local-hf"}])
    m = build_corpus(spec).manifest
    assert m["counts"]["kept"] == 8 and m["counts"]["quarantined"] == 1
    q = read_jsonl(corpus_dir / "out" / "c" / "quarantine.jsonl")
    assert q[0]["row"] == 9 and q[0]["line"] is None and q[0]["source"] == "local-hf"


def test_json_parquet_and_csv_sources(corpus_dir):
    (corpus_dir / "arr.json").write_text(json.dumps([chat("q1", "a1"), {"text": 3}, chat("q2", "a2")]))
    (corpus_dir / "lines.json").write_text("\n".join(json.dumps(chat(f"l{i}", f"a{i}")) for i in range(3)) + "\n")
    with open(corpus_dir / "t.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["instruction", "input", "output"])
        w.writerow(["Say hi", "", "hi"])
        w.writerow(["Multi\nline", "x", "ok"])
        w.writerow(["Only two", "values"])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([chat("p1", "r1"), chat("p2", "r2")]), corpus_dir / "t.parquet")
    spec = corpus_dir.spec(sources=[{"path": "arr.json", "category": "a"}, {"path": "lines.json", "category": "b"},
                                    {"path": "t.csv", "category": "c", "format": "alpaca"},
                                    {"path": "t.parquet", "category": "d"}])
    c = build_corpus(spec).manifest["counts"]
    assert {k: v["kept"] for k, v in c["per_category"].items()} == {"a": 2, "b": 3, "c": 2, "d": 2}
    q = read_jsonl(corpus_dir / "out" / "c" / "quarantine.jsonl")
    assert [(e["source"], e["row"], e["reason"]) for e in q] == [("arr.json", 2, "wrong_type"),
                                                                 ("t.csv", 3, "wrong_type")]


def test_interrupted_build_leaves_the_previous_corpus(corpus_dir, monkeypatch):
    write_jsonl(corpus_dir / "s.jsonl", _rows("general", 20))
    spec = corpus_dir.spec(sources=[{"path": "s.jsonl", "category": "general"}])
    build_corpus(spec)
    out = corpus_dir / "out" / "c"
    before = _hashes(out)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "_finish", boom)
    write_jsonl(corpus_dir / "s.jsonl", _rows("general", 30))
    with pytest.raises(KeyboardInterrupt):
        build_corpus(spec)
    assert _hashes(out) == before
    assert sorted(p.name for p in (corpus_dir / "out").iterdir()) == ["c"]


def test_manifest_validation_catches_changes(corpus_dir):
    write_jsonl(corpus_dir / "s.jsonl", _rows("general", 20))
    build_corpus(corpus_dir.spec(sources=[{"path": "s.jsonl", "category": "general"}]))
    out = corpus_dir / "out" / "c"
    m = load_manifest(out, verify="sha256")
    assert m["dir"] == str(out.resolve()) and m["persona"]["name"] is None
    h = manifest_hash(out)
    assert h == manifest_hash(out / "manifest.json") == hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    train = out / "train.jsonl"
    data = train.read_bytes()
    train.write_bytes(data.replace(b"general answer", b"general ANSWER", 1))  # same size, other bytes
    load_manifest(out)  # sizes still match
    with pytest.raises(UserError, match="does not match its sha256"):
        load_manifest(out, verify="sha256")
    train.write_bytes(data + b"\n")
    with pytest.raises(UserError, match="changed after the build"):
        load_manifest(out)
    train.unlink()
    with pytest.raises(UserError, match="missing"):
        load_manifest(out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["counts"]["kept"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="corrupt"):
        load_manifest(out, verify="none")
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        load_manifest(out)
    with pytest.raises(UserError, match="not found"):
        load_manifest(corpus_dir / "nowhere")


def test_qc_flags_drop_review_and_openers(corpus_dir):
    rows = _rows("general", 30)
    rows += [chat(f"feel {i}", f"As an AI, I find myself unable to feel {i} things.", _category="general")
             for i in range(6)]
    rows += [chat(f"short {i}", "ok", _category="general") for i in range(4)]
    rows += [chat(f"loop {i}", "again " * 12 + str(i), _category="general") for i in range(2)]
    write_jsonl(corpus_dir / "q.jsonl", rows)
    spec = corpus_dir.spec(sources=[{"path": "q.jsonl", "category_field": "_category"}], eval_fraction=0.0,
                           qc={"drop": ["short_answer"], "review_rows_per_category": 10})
    m = build_corpus(spec).manifest
    out = corpus_dir / "out" / "c"
    assert m["counts"]["filtered"]["by_reason"] == {"qc:short_answer": 4}
    report = json.loads((out / "qc.json").read_text())
    flags = report["per_category"]["general"]["flags"]
    assert flags["cliche"]["flagged"] == 6 and flags["persona_break"]["flagged"] == 6
    assert flags["repetition"]["flagged"] == 2 and flags["short_answer"]["dropped"] == 4
    assert report["phrase_hits"]["cliche"] == {"i find myself": 6}
    # openers (first 4 words) counted over the kept rows; only those seen at least twice are listed
    assert report["top_openers"] == [{"opener": "as an ai, i", "rows": 6},
                                     {"opener": "again again again again", "rows": 2}]
    review = (out / "review.md").read_text()
    assert review.count("### general") == 10 and "q.jsonl line" in review
    assert "as an ai" in (out / "qc.md").read_text().lower()


def test_phrase_flags_on_every_row_when_asked(corpus_dir):
    rows = [chat(f"q{i}", f"answer {i}: " + ("I can't help with that." if i % 3 == 0 else "sure thing here."),
                 _category="general") for i in range(30)]
    write_jsonl(corpus_dir / "q.jsonl", rows)
    spec = corpus_dir.spec(sources=[{"path": "q.jsonl", "category_field": "_category"}], eval_fraction=0.0,
                           qc={"scope": "all", "sample_rows_per_category": 0})
    build_corpus(spec)
    report = json.loads((corpus_dir / "out" / "c" / "qc.json").read_text())
    refusal = report["per_category"]["general"]["flags"]["refusal"]
    assert refusal == {"flagged": 10, "measured": 30, "share": 0.3333, "scope": "train rows"}


def test_over_length_rows_warn_and_can_be_dropped(corpus_dir):
    rows = _rows("general", 10) + [chat("long", "word " * 400, _category="general")]
    write_jsonl(corpus_dir / "l.jsonl", rows)
    spec = corpus_dir.spec(sources=[{"path": "l.jsonl", "category_field": "_category"}], eval_fraction=0.0,
                           lengths={"sequence_len": 256})
    m = build_corpus(spec).manifest
    assert m["lengths"]["per_category"]["general"]["over_sequence_len"] == 1
    assert any("longer than sequence_len" in w for w in m["warnings"])
    spec = corpus_dir.spec(sources=[{"path": "l.jsonl", "category_field": "_category"}], eval_fraction=0.0,
                           lengths={"sequence_len": 256, "drop_over_sequence_len": True})
    m = build_corpus(spec).manifest
    assert m["counts"]["filtered"]["by_reason"] == {"over_sequence_len": 1}
    assert m["lengths"]["per_category"]["general"]["over_sequence_len"] == 0


def test_exact_lengths_with_a_local_tokenizer(corpus_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (corpus_dir / "tok").mkdir()
    tok.save(str(corpus_dir / "tok" / "tokenizer.json"))
    write_jsonl(corpus_dir / "t.jsonl", [chat("a b a", "b b b b b", _category="g")])
    spec = corpus_dir.spec(sources=[{"path": "t.jsonl", "category_field": "_category"}], eval_fraction=0.0,
                           lengths={"tokenizer": "tok", "template_tokens_per_message": 2})
    m = build_corpus(spec).manifest
    assert m["lengths"]["exact"] and m["lengths"]["total"]["max"] == 3 + 5 + 2 * 2
    spec = corpus_dir.spec(sources=[{"path": "t.jsonl", "category_field": "_category"}],
                           lengths={"tokenizer": "./nope"})
    with pytest.raises(UserError, match="not found"):
        build_corpus(spec)
    (corpus_dir / "broken").mkdir()
    (corpus_dir / "broken" / "tokenizer.json").write_text("{}")
    spec = corpus_dir.spec(sources=[{"path": "t.jsonl", "category_field": "_category"}],
                           lengths={"tokenizer": "broken"})
    with pytest.raises(UserError, match="cannot be loaded"):
        build_corpus(spec)


def test_near_duplicates_are_counted(corpus_dir):
    text = ("The moonlight burst into the room as if it had been waiting at the window for a long time; "
            "the night was fresh, bright and still, and the trees were black on one side and silver on the other.")
    rows = [chat("describe the night", text, _category="g"),
            chat("describe the night", text.replace("still", "quiet"), _category="g"),
            chat("something else", "A completely different answer about Python lists and dictionaries.", _category="g")]
    write_jsonl(corpus_dir / "n.jsonl", rows)
    spec = corpus_dir.spec(sources=[{"path": "n.jsonl", "category_field": "_category"}], eval_fraction=0.0,
                           dedup={"near": True, "near_threshold": 0.7})
    c = build_corpus(spec).manifest["counts"]
    assert c["duplicates"] == {"exact": 0, "near": 1, "total": 1} and c["kept"] == 2


def test_persona_system_prompt_added_when_missing(corpus_dir):
    write_jsonl(corpus_dir / "p.jsonl", [chat("who?", "Leviathan."),
                                         {"messages": [{"role": "system", "content": "own"},
                                                       {"role": "user", "content": "q"},
                                                       {"role": "assistant", "content": "a"}]}])
    spec = corpus_dir.spec(sources=[{"path": "p.jsonl", "category": "identity"}], eval_fraction=0.0,
                           persona={"name": "Leviathan", "system_prompt": "You are Leviathan.",
                                    "add_system_prompt": "missing"})
    m = build_corpus(spec).manifest
    systems = sorted(r["messages"][0]["content"] for r in read_jsonl(corpus_dir / "out" / "c" / "train.jsonl"))
    assert systems == ["You are Leviathan.", "own"] and m["persona"]["name"] == "Leviathan"


def test_phase_files_hold_the_train_rows_in_phase_order(corpus_dir):
    write_jsonl(corpus_dir / "s.jsonl", _rows("general", 40) + _rows("code", 20) + _rows("identity", 10))
    spec = corpus_dir.spec(sources=[{"path": "s.jsonl", "category_field": "_category"}],
                           phases=[{"name": "foundation", "categories": ["general", "code"]},
                                   {"name": "identity", "categories": ["*"]}])
    m = build_corpus(spec).manifest
    out = corpus_dir / "out" / "c"
    train = read_jsonl(out / "train.jsonl")
    cats = [r["_category"] for r in train]
    first_identity = cats.index("identity")
    assert set(cats[:first_identity]) == {"general", "code"} and set(cats[first_identity:]) == {"identity"}
    phase_rows = [read_jsonl(out / p["path"]) for p in m["phases"]]
    assert phase_rows[0] + phase_rows[1] == train
    assert [p["name"] for p in m["phases"]] == ["foundation", "identity"] and m["curriculum"]
    assert m["files"]["train.01-foundation"]["rows"] == len(phase_rows[0])
    assert read_jsonl(out / m["phases"][0]["sample_path"]) + read_jsonl(out / m["phases"][1]["sample_path"]) == \
        read_jsonl(out / "sample.jsonl")


def test_cli_json_summary_and_inspect(corpus_dir, cli):
    write_jsonl(corpus_dir / "s.jsonl", _rows("general", 12))
    spec = corpus_dir.spec(sources=[{"path": "s.jsonl", "category": "general"}])
    res = cli("corpus", "build", spec, "--json")
    assert res.code == 0, res.err
    data = res.json()
    assert data["counts"]["kept"] == 12 and data["manifest_sha256"] == manifest_hash(corpus_dir / "out" / "c")
    res = cli("corpus", "build", spec)
    assert res.code == 0 and "read 12 = kept 12" in res.out
    res = cli("corpus", "inspect", corpus_dir / "out" / "c", "--verify", "--json")
    assert res.code == 0 and res.json()["verified"] == "sha256"
    assert cli("corpus", "inspect", corpus_dir / "nowhere").code == 2


def test_example_spec_builds(cli, tmp_path, monkeypatch):
    from llamaforge.paths import repo_root

    monkeypatch.chdir(tmp_path)
    res = cli("corpus", "build", repo_root() / "datasets" / "examples" / "example.yaml", "--json")
    assert res.code == 0, res.err
    c = res.json()["counts"]
    assert c["quarantined"] == 12 and c["per_category"]["identity"]["train_rows"] == 40
    assert c["filtered"]["by_reason"]["qc:persona_break"] == 1


def test_leviathan_spec_names_its_missing_source(cli, tmp_path, monkeypatch):
    from llamaforge.paths import repo_root

    monkeypatch.chdir(tmp_path)
    res = cli("corpus", "build", repo_root() / "datasets" / "leviathan.yaml")
    assert res.code == 2 and "FINAL_CORPUS_7M_PLUS_ESOTERIC.jsonl not found" in res.err


def test_demo_sources_build(corpus_dir):
    from llamaforge.paths import repo_root

    demo = repo_root() / "datasets" / "sources" / "demo"
    if not demo.is_dir():
        pytest.skip("the demo corpus sources are not in this checkout")
    sources = [{"path": str(p), "category": p.stem} for p in sorted(demo.glob("*.jsonl"))]
    m = build_corpus(corpus_dir.spec(sources=sources)).manifest
    assert m["counts"]["kept"] > 0 and not count_identity_errors(m["counts"])
