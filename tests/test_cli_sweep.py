"""A sweep of every subcommand with bad values: zero, negative, NaN, infinities, huge numbers, a
file where a folder is expected and the reverse, a path under a file, a missing input, an output
that is the input, names with line breaks. Each must end with exactly one `error:` line on stderr,
nothing on stdout, exit code 2, no traceback, and nothing written (the working folder and
recipes/ are unchanged, byte for byte)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llamaforge.paths import recipes_dir

HUGE = str(10**30)
BAD_NUMBERS = ["0", "-1", "nan", "inf", "-inf"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder with a file, a folder, valid inputs and damaged ones."""
    from export.run_folder import lora_shapes, make_run, write_base_config, write_safetensors

    root = tmp_path_factory.mktemp("sweep")
    (root / "afile").write_text("x\n")
    (root / "afolder").mkdir()
    (root / "passages.jsonl").write_text('{"passage": "The sea was calm."}\n')
    (root / "results.jsonl").write_text('{"custom_id": "a:1", "response": {"status_code": 200, "body": {}}}\n')
    (root / "good.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                              {"role": "assistant", "content": "hello there"}]}) + "\n")
    (root / "bad.jsonl").write_text("not json\n{\"messages\": 3}\n")
    spec = "name: {name}\nseed: 0\noutput: {output}\nsources:\n  - path: {src}\n    category: general\n"
    (root / "spec_out_file.yaml").write_text(spec.format(name="c", output="afile", src="good.jsonl"))
    (root / "spec_empty.yaml").write_text(spec.format(name="e", output="out", src="bad.jsonl"))
    (root / "spec_typo.yaml").write_text("nmae: c\nseed: 0\nsources:\n  - path: good.jsonl\n    category: general\n")
    (root / "spec_persona.yaml").write_text(spec.format(name="p", output="out", src="good.jsonl")
                                           + 'persona:\n  name: "Levi\\nathan"\n')
    write_base_config(root / "build/model")
    write_safetensors(root / "build/model/model.safetensors", {"model.embed_tokens.weight": (512, 64)})
    truncated = root / "adapter-truncated"
    truncated.mkdir()
    (truncated / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "base_model_name_or_path": "build/model"}))
    write_safetensors(truncated / "adapter_model.safetensors", lora_shapes(8))
    data = (truncated / "adapter_model.safetensors").read_bytes()
    (truncated / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    noweights = root / "adapter-noweights"
    noweights.mkdir()
    (noweights / "adapter_config.json").write_text((truncated / "adapter_config.json").read_text())
    make_run(root)
    return root


def snapshot(*folders: Path) -> dict:
    out = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                out[str(p)] = (p.is_dir(), st.st_size, None if p.is_dir() else st.st_mtime_ns)
    return out


R = "recipes/llama-3.1-8b/lora-1xH100-80GB.yaml"
EST = ["estimate", "--model", "llama-3.1-8b", "--method", "lora", "--gpus", "1xH100-80GB"]
PLAN = ["plan", "--model", "llama-3.1-8b", "--gpus", "1xH100-80GB"]
RENDER = ["render", "--model", "llama-3.1-8b", "--gpus", "1xH100-80GB"]
ELICIT = ["corpus", "elicit", "passages.jsonl", "-t", "conversational"]
EVAL = ["gates", "--model", "build/model"]

CASES = [
    # estimate / plan: every number, and the hardware and model they name
    *[[*EST, opt, v] for opt in ("--micro-batch", "--grad-accum", "--seq-len", "--lora-r", "--nodes")
      for v in ("0", "-1")],
    *[[*EST, "--epochs", v] for v in BAD_NUMBERS + ["1e308"]],
    *[[*EST, "--tokens", v] for v in ("0", "-5", "1e400", "nan", "abc", "1e300")],
    [*EST, "--gpus", "0xH100-80GB"], [*EST, "--model", "afolder"], [*EST, "--model", "afile"],
    [*EST, "--model", "./missing/config.json"], [*EST, "--method", "bogus"],
    *[[*PLAN, opt, v] for opt in ("--micro-batch", "--global-batch", "--seq-len", "--lora-r", "--nodes")
      for v in ("0", "-1")],
    *[[*PLAN, "--epochs", v] for v in BAD_NUMBERS],
    [*PLAN, "--tokens", "1e400"], [*PLAN, "--micro-batch", "abc"], [*PLAN, "--bogus"],
    # render / cp / ls
    *[[*RENDER, opt, v, "-o", "out"] for opt in ("--nodes", "--seq-len", "--lora-r", "--global-batch")
      for v in ("0", "-1")],
    [*RENDER, "-o", "afile"], [*RENDER, "-o", "afile/sub"], [*RENDER, "-o", "a\nb"], ["render", "--force"],
    ["render", "--prune", "--check"], ["render", "--only", "nope/none"],
    ["cp", "llama-3.1-8b/lora-1xH100-80GB", "afile/x.yaml"], ["cp", "llama-3.1-8b/lora-1xH100-80GB", "x.txt"],
    ["cp", "nope/none", "x.yaml"], ["cp", "llama-3.1-8b/lora-1xH100-80GB", "a\nb.yaml"],
    ["cp", "llama-3.1-8b/lora-1xH100-80GB", "afile"],
    # check
    ["check", R, "--nodes", "0"], ["check", "afolder"], ["check", "missing.yaml"],
    # corpus
    ["corpus", "build", "missing.yaml"], ["corpus", "build", "afolder"], ["corpus", "build", "spec_out_file.yaml"],
    ["corpus", "build", "spec_empty.yaml"], ["corpus", "build", "spec_typo.yaml"], ["corpus", "build", "spec_persona.yaml"],
    *[["corpus", "build", "spec_empty.yaml", opt, v] for opt, v in (("--workers", "0"), ("--workers", "-1"),
                                                                    ("--limit", "-1"), ("--add", "0"), ("--limit", HUGE))],
    ["corpus", "inspect", "missing"], ["corpus", "inspect", "afolder"], ["corpus", "inspect", "afile"],
    [*ELICIT, "-o", "passages.jsonl"], [*ELICIT, "-o", "afolder"], [*ELICIT, "-o", "afile/x.jsonl"],
    *[[*ELICIT, "--temperature", v] for v in ("nan", "-1", "3", "inf")],
    *[[*ELICIT, "--max-tokens", v] for v in ("-5", "0", HUGE)],
    [*ELICIT, "--persona", "a\nb"], [*ELICIT, "--model", ""], ["corpus", "elicit", "passages.jsonl", "-t", "bogus"],
    ["corpus", "elicit", "afolder", "-t", "conversational"], ["corpus", "elicit", "missing.jsonl", "-t", "conversational"],
    ["corpus", "collect", "results.jsonl", "-o", "results.jsonl"], ["corpus", "collect", "results.jsonl", "-o", "afolder"],
    ["corpus", "collect", "results.jsonl", "-o", "afile/x.jsonl"], ["corpus", "collect", "afolder", "-o", "x.jsonl"],
    ["corpus", "collect", "results.jsonl", "-o", "x.jsonl", "--category", "a\nb"],
    # demo (checked before the demo starts)
    ["demo", "--workdir", "afile"], ["demo", "--runs-dir", "afile"], ["demo", "--workdir", "afile/sub"],
    # eval: refused before any evaluation
    ["eval", "--model", "missing"], ["eval", "--model", "afile"], ["eval", "--model", "adapter-truncated"],
    [*EVAL, "--adapter", "adapter-truncated"], [*EVAL, "--adapter", "adapter-noweights"], [*EVAL, "--adapter", "afile"],
    [*EVAL, "--output", "afile"], [*EVAL, "--device", "bogus"], [*EVAL, "--device", "cuda:7"],
    *[[*EVAL, opt, v] for opt in ("--limit", "--max-gen-toks") for v in ("0", "-1")],
    [*EVAL, "--batch-size", "0"], [*EVAL, "--batch-size", "lots"], [*EVAL, "--gates-file", "missing.yaml"],
    [*EVAL, "--persona", ""], [*EVAL, "--profile", "bogus"],
    # export / ladder
    ["export", "missing"], ["export", "afile"], ["export", "runs/leviathan-tiny", "--output", "afile"],
    ["export", "runs/leviathan-tiny", "--quantize", "bogus"], ["export", "runs/leviathan-tiny", "--push", "bad id"],
    ["ladder", "--corpus", "missing"], ["ladder", "--corpus", "build/corpus/demo", "--epochs", "nan"],
    ["ladder", "--corpus", "build/corpus/demo", "--epochs", "0"], ["ladder", "--corpus", "build/corpus/demo", "--epochs", "1e308"],
    # serve-plan, and the serving options of estimate and export
    *[["serve-plan", "--model", "llama-3.1-8b", "--gpus", "1xRTX4090-24GB", opt, v]
      for opt, values in (("--context", ("0", "-1")), ("--max-loras", ("-1",)), ("--max-lora-rank", ("0",)),
                          ("--concurrency", ("0",)), ("--gpu-memory-utilization", ("0", "2", "nan")),
                          ("--max-num-seqs", ("0",)), ("--parallel", ("0",)), ("--reserve-gib", ("-1", "nan")),
                          ("--wired-limit-gib", ("0", "nan")))
      for v in values],
    ["serve-plan", "--model", "afolder", "--gpus", "1xRTX4090-24GB"],
    [*EST, "--wired-limit-gib", "0"],
    ["export", "runs/leviathan-tiny", "--serve-context", "0"], ["export", "runs/leviathan-tiny", "--serve-reserve-gib", "-1"],
    # run
    ["run", "missing.yaml", "--stage", "validate"], ["run", "afolder", "--stage", "validate"],
    ["run", R, "--stage", "bogus"], ["run", R, "--stage", "validate", "--name", "a\nb"],
    ["run", R, "--stage", "validate", "--name", "a/b"], ["run", R, "--stage", "validate", "--runs-dir", "afile"],
    ["run", R, "--stage", "validate", "--corpus", "missing"],
    # fetch-model: only what facts/pretrained.yaml can bring
    ["fetch-model", "no-such-model"], ["fetch-model", "llama-3.1-8b"],
]


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a).replace("\n", "\\n")[:90])
def test_a_bad_value_is_one_line_exit_2_and_writes_nothing(cli, world, monkeypatch, args):
    monkeypatch.chdir(world)
    repo_args = [str(recipes_dir().parent / a) if a == R else a for a in args]
    before = snapshot(world, recipes_dir())
    res = cli(*repo_args)
    assert res.code == 2, (res.code, res.out, res.err)
    assert "Traceback" not in res.err and res.out == ""
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.err
    assert snapshot(world, recipes_dir()) == before, "something was written"


def test_the_sweep_covers_every_subcommand():
    from llamaforge.cli import app
    from typer.main import get_command

    group = get_command(app)
    names = set()
    for name, cmd in group.commands.items():
        subs = getattr(cmd, "commands", None)
        names |= {f"{name} {s}" for s in subs} if subs else {name}
    covered = {" ".join(a[:2]) if a[0] == "corpus" else a[0] for a in CASES}
    without_values = {"models", "gpus", "ls", "corpus templates"}   # they take no value that can be bad
    assert names - without_values <= covered, names - without_values - covered


def test_a_real_process_prints_one_line_for_a_usage_error(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "llamaforge", "plan", "--model", "llama-3.1-8b", "--gpus", "1xH100-80GB",
                           "--micro-batch", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: Invalid value for '--micro-batch'")
