"""Bad input to `llamaforge eval` is one clear line and exit 2, before any model is loaded; the
runner's pure helpers (error classes, LoRA shapes) and the report rendering."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from llamaforge.gates.runner import classify_load_error
from llamaforge.checkpoint import lora_shape_mismatch, read_safetensors_shapes
from llamaforge.gates.verdict import LOAD_FAILED, UNAVAILABLE

TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512,
}


def write_safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    """A valid .safetensors file with zero-filled float32 tensors of these shapes."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def fake_model(root: Path, **config) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({**TINY_CONFIG, **config}))
    write_safetensors(root / "model.safetensors", {"lm_head.weight": [2, 2]})
    return root


def fake_adapter(root: Path, base: str, hidden: int = 64) -> Path:
    root.mkdir(parents=True)
    (root / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "peft_type": "LORA", "r": 4}))
    write_safetensors(root / "adapter_model.safetensors", {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": [4, hidden],
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": [hidden, 4],
    })
    return root


def one_line_exit_2(res, *needles):
    assert res.code == 2, (res.code, res.out, res.err)
    line = res.err.strip()
    assert line.startswith("error:") and "\n" not in line and "Traceback" not in res.err
    for needle in needles:
        assert needle in line, line
    return line


def test_unknown_profile(cli, tmp_path):
    model = fake_model(tmp_path / "m")
    one_line_exit_2(cli("eval", "--model", model, "--profile", "nightly"), "unknown gate profile 'nightly'")


def test_model_path_that_is_not_a_model(cli, tmp_path):
    one_line_exit_2(cli("eval", "--model", tmp_path / "missing"), "no such folder")
    (tmp_path / "empty").mkdir()
    one_line_exit_2(cli("eval", "--model", tmp_path / "empty"), "not a model folder (no config.json)")
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps(TINY_CONFIG))
    one_line_exit_2(cli("eval", "--model", no_weights), "no weights")
    adapter = fake_adapter(tmp_path / "adapter", base="x")
    one_line_exit_2(cli("eval", "--model", adapter), "is a PEFT adapter, not a model")


def test_adapter_for_another_base(cli, tmp_path):
    model = fake_model(tmp_path / "tiny")
    big = fake_adapter(tmp_path / "big-adapter", base="meta-llama/Llama-3.1-8B", hidden=4096)
    one_line_exit_2(cli("eval", "--model", model, "--adapter", big),
                    "was made for another base (meta-llama/Llama-3.1-8B)", "q_proj LoRA A takes 4096 inputs")
    one_line_exit_2(cli("eval", "--model", model, "--adapter", model), "is a full model, not a PEFT adapter")
    one_line_exit_2(cli("eval", "--model", model, "--adapter", tmp_path / "nope"), "no such folder")


def test_other_bad_options(cli, tmp_path):
    model = fake_model(tmp_path / "m")
    one_line_exit_2(cli("eval", "--model", model, "--limit", "0"), "--limit", "give 1 or more")
    one_line_exit_2(cli("eval", "--model", model, "--persona", "  "), "--persona", "one line")
    one_line_exit_2(cli("eval", "--model", model, "--batch-size", "lots"), "--batch-size must be a positive number or auto")
    one_line_exit_2(cli("eval", "--model", model, "--batch-size", "0"), "--batch-size must be a positive number or auto")
    adapter = fake_adapter(tmp_path / "a", base=str(model))
    one_line_exit_2(cli("eval", "--model", model, "--adapter", adapter, "--base", model), "--base is for merged models")
    bad = tmp_path / "gates.yaml"
    bad.write_text("profiles: {p: {gates: [{task: identity, metric: acc}]}}\n")
    one_line_exit_2(cli("eval", "--model", model, "--gates-file", bad, "--profile", "p"), "must be '<metric>,<filter>'")


def test_lora_shapes_against_the_model():
    linear = {"q_proj": (64, 64), "v_proj": (64, 32), "down_proj": (128, 64)}
    ok = {"x.layers.1.self_attn.v_proj.lora_A.weight": [8, 64], "x.layers.1.self_attn.v_proj.lora_B.weight": [32, 8]}
    assert lora_shape_mismatch(ok, linear, num_layers=2) is None
    assert "layer 5" in lora_shape_mismatch({"x.layers.5.mlp.down_proj.lora_A.weight": [8, 128]}, linear, 2)
    assert "gives 64 outputs" in lora_shape_mismatch({"x.layers.0.self_attn.v_proj.lora_B.weight": [64, 8]}, linear, 2)


def test_safetensors_header_is_read_without_torch(tmp_path):
    write_safetensors(tmp_path / "a.safetensors", {"w": [3, 5]})
    assert read_safetensors_shapes(tmp_path / "a.safetensors") == {"w": [3, 5]}


def test_load_errors_are_told_apart():
    class OfflineModeIsEnabled(ConnectionError):
        pass

    try:
        try:
            raise OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled")
        except OfflineModeIsEnabled as inner:
            raise RuntimeError("Couldn't build the dataset") from inner
    except RuntimeError as exc:
        status, reason = classify_load_error(exc)
    assert status == UNAVAILABLE and reason.startswith("dataset not available")
    status, reason = classify_load_error(ImportError("No module named 'evaluate_utils'"))
    assert status == LOAD_FAILED and reason == "task could not load: ImportError: No module named 'evaluate_utils'"


def test_report_rendering_shows_values_reasons_and_skips():
    from rich.console import Console

    from llamaforge.gates import render_gate_table, render_markdown
    from llamaforge.gates.profiles import BaseComparison, GateSpec
    from llamaforge.gates.verdict import MEASURED, GateReport, TaskOutcome, decide_gate

    ident = decide_gate(GateSpec(name="identity", task="identity", metric="acc,none", threshold=0.9),
                        TaskOutcome("identity", MEASURED, metrics={"acc,none": 0.95, "acc_stderr,none": 0.05}),
                        TaskOutcome("identity", MEASURED, metrics={"acc,none": 0.0, "acc_stderr,none": 0.0}))
    tqa = decide_gate(GateSpec(name="truthfulqa_mc2", task="truthfulqa_mc2", metric="acc,none", threshold=0.35,
                               compare=BaseComparison(no_regression=True), optional=True),
                      TaskOutcome("truthfulqa_mc2", UNAVAILABLE, reason="dataset not available"))
    report = GateReport(profile="demo", model="m", adapter="a", base_model="m", persona="Leviathan", limit=5,
                        gates=[ident, tqa], notes=["a note"])
    console = Console(width=200, record=True)
    console.print(render_gate_table(report))
    text = console.export_text()
    assert "0.950 ± 0.050" in text and "0.000 ± 0.000" in text and "PASS" in text
    assert "SKIPPED (optional)" in text and "≥ 0.35, ≥ base−se" in text
    assert "truthfulqa_mc2: skipped (optional in this profile): dataset not available" in text
    md = render_markdown(report, {"model": {"identity": [{"id": "guide-1", "answer": "I am\x07 Leviathan|", "metrics": {"acc": 1.0}}]}})
    assert "**PASSED — 1/2 gates passed; skipped (optional): truthfulqa_mc2**" in md
    assert "| identity | identity | `acc,none` | 0.950 ± 0.050 | ≥ 0.9 | 0.000 ± 0.000 | PASS |" in md
    assert "- ✓ `guide-1`: I am  Leviathan\\|" in md
    assert "subset: not a release verdict" in md


def test_the_base_answer_cache_keys_on_the_model_files_the_tasks_and_the_settings(tmp_path):
    from llamaforge.gates.runner import BaseAnswerCache, TaskRun
    from llamaforge.gates.verdict import MEASURED, TaskOutcome

    model = tmp_path / "base"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(b"x" * 10)
    cache = BaseAnswerCache(tmp_path / "cache")
    run = TaskRun(limit=None, max_gen_toks=48)
    key = cache.key(str(model), "identity", run, persona="Leviathan", device="cpu", batch_size=16)
    assert cache.get(key) is None
    outcome = TaskOutcome("identity", MEASURED, metrics={"acc,none": 0.0}, n_samples=20, chat_template=True, seconds=12.0)
    cache.put(key, outcome, [{"doc_id": 0, "id": "guide-1", "answer": "I'm here to help."}])
    got, samples = cache.get(key)
    assert got.metrics == {"acc,none": 0.0} and got.seconds is None and samples[0]["id"] == "guide-1"
    others = [cache.key(str(model), "identity", run, persona="Nyx", device="cpu", batch_size=16),
              cache.key(str(model), "identity", TaskRun(max_gen_toks=96), persona="Leviathan", device="cpu", batch_size=16),
              cache.key(str(model), "identity", run, persona="Leviathan", device="cpu", batch_size=1)]
    (model / "config.json").write_text('{"hidden_size": 16}')
    others.append(cache.key(str(model), "identity", run, persona="Leviathan", device="cpu", batch_size=16))
    assert len({key, *others}) == 5
    assert cache.key("org/hub-model", "identity", run, persona="Leviathan", device="cpu", batch_size=16) is None
    cache.put(key, TaskOutcome("identity", "eval_failed", reason="boom"), [])   # failures are never cached
    assert cache.get(key)[0].status == MEASURED
