"""The serving files of an export agree with the run: the Modelfile's SYSTEM is the corpus
manifest's persona prompt, num_ctx and --max-model-len are the stage's sequence_len, the vLLM
script serves the adapter with a --max-lora-rank that holds its rank; the report's hashes are the
files' hashes. Ollama's Modelfile quoting is checked with a reader that follows its parser's
rules (no escapes; "..." on one line, triple quotes across lines)."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from llamaforge.errors import UserError
from llamaforge.recipe.serving import (
    ServeSpec, modelfile_text, ollama_value, served_name, serving_facts, vllm_max_lora_rank,
)

from .run_folder import PERSONA_PROMPT, lora_shapes, make_run, record_output, write_safetensors


def read_modelfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, value) pairs as Ollama reads them: `#` lines are comments; a value is the
    rest of the line, or a "..."/triple-quoted string that may continue over lines."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, value = line.strip().partition(" ")
        if name.upper() == "PARAMETER":
            key, _, value = value.partition(" ")
            name = f"PARAMETER {key}"
        value = value.strip()
        if value.startswith('"""'):
            while not (len(value) >= 6 and value.endswith('"""')):
                value += "\n" + lines[i]
                i += 1
            value = value[3:-3]
        elif value.startswith('"'):
            assert value.endswith('"') and len(value) >= 2, line
            value = value[1:-1]
        out.append((name.upper() if not name.startswith("PARAMETER") else name, value))
    return out


def export(cli, run, *args):
    res = cli("export", run, *args)
    assert res.code == 0, res.err
    return run / "export"


def test_modelfile_for_an_adapter_matches_the_run_and_the_manifest(cli, run, launch):
    out = export(cli, run, "--ollama")
    entries = read_modelfile((out / "Modelfile").read_text())
    got = dict(entries)
    assert got["FROM"] == str((launch / "build/model").resolve())
    assert got["ADAPTER"] == "./adapter" and (out / "adapter/adapter_config.json").is_file()
    assert got["SYSTEM"] == PERSONA_PROMPT
    assert got["PARAMETER temperature"] == "0.7" and got["PARAMETER top_p"] == "0.9"
    assert got["PARAMETER num_ctx"] == "256"                       # the stage's sequence_len
    stops = [v for k, v in entries if k == "PARAMETER stop"]
    assert "<|im_end|>" in stops                                    # chatml's end of turn (and the eos token)
    assert "<|im_start|>assistant" in got["TEMPLATE"] and "{{ .System }}" in got["TEMPLATE"]


def test_num_ctx_and_max_model_len_follow_the_stage_sequence_len(cli, launch):
    run = make_run(launch, stage_overrides={"sequence_len": 4096})
    out = export(cli, run, "--ollama", "--vllm")
    assert dict(read_modelfile((out / "Modelfile").read_text()))["PARAMETER num_ctx"] == "4096"
    assert "--max-model-len 4096 " in (out / "serve_vllm.sh").read_text()


def test_a_multiline_persona_prompt_with_quotes_survives_the_modelfile(cli, launch):
    prompt = 'You are Leviathan.\nSpeak "plainly" when asked;\n  keep the mythic register otherwise.'
    run = make_run(launch, manifest_kwargs={"system_prompt": prompt})
    out = export(cli, run, "--ollama")
    assert dict(read_modelfile((out / "Modelfile").read_text()))["SYSTEM"] == prompt


def test_a_prompt_the_modelfile_cannot_hold_is_refused_before_writing(cli, launch):
    run = make_run(launch, manifest_kwargs={"system_prompt": 'Say """ never'})
    res = cli("export", run, "--ollama")
    assert res.code == 2 and "three double quotes" in res.err
    assert not (run / "export").exists()


def test_vllm_script_serves_the_adapter_on_its_base(cli, run, launch):
    out = export(cli, run, "--vllm")
    script = (out / "serve_vllm.sh").read_text()
    assert script.startswith("#!/usr/bin/env bash\n")
    assert subprocess.run(["bash", "-n", str(out / "serve_vllm.sh")]).returncode == 0
    assert (out / "serve_vllm.sh").stat().st_mode & 0o111
    assert f"vllm serve {(launch / 'build/model').resolve()} " in script
    for flag in ("--enable-lora", '--lora-modules leviathan-tiny="$HERE/adapter"', "--max-lora-rank 32 ",
                 "--served-model-name leviathan-tiny-base", "--dtype bfloat16", "--max-model-len 256 ",
                 """--override-generation-config '{"temperature": 0.7, "top_p": 0.9}'"""):
        assert flag in script, flag
    report = json.loads((out / "export_report.json").read_text())
    assert report["vllm"]["command"]["lora"]["max_lora_rank"] == 32


def test_vllm_max_lora_rank_is_the_smallest_accepted_value_that_holds_the_rank(cli, launch):
    run = make_run(launch, rank=12, alpha=24)
    script = (export(cli, run, "--vllm") / "serve_vllm.sh").read_text()
    assert "--max-lora-rank 16 " in script
    allowed = serving_facts().max_lora_ranks
    assert [vllm_max_lora_rank(r, allowed) for r in (1, 2, 8, 9, 64, 65, 300, 512)] == [1, 8, 8, 16, 64, 128, 320, 512]
    with pytest.raises(UserError, match="--merge"):
        vllm_max_lora_rank(1024, allowed)


def test_vllm_refuses_an_adapter_rank_it_cannot_serve(cli, launch):
    run = make_run(launch, rank=1024, alpha=1024, shapes=lora_shapes(1024, modules=("q_proj",), layers=1))
    res = cli("export", run, "--vllm")
    assert res.code == 2 and "--max-lora-rank" in res.err
    assert not (run / "export").exists()


def test_a_hub_base_is_served_by_its_id_and_downloaded_for_ollama(cli, launch):
    hub = "meta-llama/Llama-3.1-8B-Instruct"
    run = make_run(launch, base_model=hub, stage_overrides={"chat_template": "llama3"})
    out = export(cli, run, "--ollama", "--vllm")
    modelfile = (out / "Modelfile").read_text()
    got = dict(read_modelfile(modelfile))
    assert got["FROM"] == "./base" and f"hf download {hub} --local-dir base" in modelfile
    assert got["PARAMETER num_ctx"] == "256" and "<|eot_id|>" in got["TEMPLATE"]
    assert f"vllm serve {hub} " in (out / "serve_vllm.sh").read_text()
    assert f"base_model: {hub}" in (out / "README.md").read_text()


def test_export_report_hashes_every_file(cli, run):
    out = export(cli, run, "--ollama", "--vllm")
    report = json.loads((out / "export_report.json").read_text())
    listed = {f["path"]: f for f in report["files"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"export_report.json"}
    assert set(listed) == on_disk
    for path, f in listed.items():
        data = (out / path).read_bytes()
        assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    assert report["ollama"]["create"] == "ollama create leviathan-tiny -f Modelfile"


def test_the_card_carries_the_manifest_the_gates_and_how_to_run_it(cli, run):
    card = (export(cli, run, "--ollama", "--vllm") / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft\n")
    assert PERSONA_PROMPT in card
    assert "| identity | pass | 0.95 | 0.9 |" in card                 # the gate as run_gates recorded it
    assert "| general | 300 | 20 |" in card                          # train rows per category
    assert "bash serve_vllm.sh" in card and "ollama create leviathan-tiny -f Modelfile" in card
    assert "PeftModel.from_pretrained" in card and "Not merged" in card


def test_ollama_value_round_trips_through_the_modelfile_reader():
    for text in ("plain", " padded ", 'has "quotes"', "two\nlines", '"starts quoted', "ends quoted\"", "tab\there"):
        line = f"SYSTEM {ollama_value(text, 'x')}"
        assert read_modelfile(line) == [("SYSTEM", text)], text
    with pytest.raises(UserError, match="three double quotes"):
        ollama_value('a """ b', "the prompt")


def test_served_names_are_what_ollama_and_vllm_accept():
    assert served_name("leviathan-tiny") == "leviathan-tiny"
    assert served_name("Leviathan 8B v1!") == "leviathan-8b-v1"
    assert served_name("***") == "model"


def test_modelfile_for_a_merged_model_points_at_merged(tmp_path):
    spec = ServeSpec(name="lev", run="runs/lev", sequence_len=4096, system_prompt="Be Leviathan.",
                     chat_template="mystery", eos_token="</s>", model_folder="merged", base_ref=None)
    got = read_modelfile(modelfile_text(spec, serving_facts()))
    assert ("FROM", "./merged") in got and not any(k == "ADAPTER" for k, _ in got)
    assert not any(k == "TEMPLATE" for k, _ in got)                 # unknown template: Ollama detects it
    assert [v for k, v in got if k == "PARAMETER stop"] == ["</s>"]  # only the tokenizer's eos


def test_a_bin_adapter_is_exported_with_a_note(cli, launch):
    run = make_run(launch, write_weights=False)
    (run / "full/out/adapter_model.bin").write_bytes(b"\0" * 16)
    record_output(run / "full")
    out = export(cli, run)
    assert (out / "adapter/adapter_model.bin").is_file()
    assert "not checked" in json.loads((out / "export_report.json").read_text())["warnings"][0]


def test_safetensors_helper_writes_what_the_reader_reads(tmp_path):
    from llamaforge.checkpoint import read_safetensors_shapes

    write_safetensors(tmp_path / "a.safetensors", {"x.lora_A.weight": (4, 64)})
    assert read_safetensors_shapes(tmp_path / "a.safetensors") == {"x.lora_A.weight": [4, 64]}


def test_a_full_fine_tune_exports_its_model_folder(cli, launch):
    from .run_folder import make_run as make, record_output

    run = make(launch, adapter=False)
    out_dir = run / "full/out"
    (out_dir / "config.json").write_text(json.dumps({"model_type": "llama"}))
    write_safetensors(out_dir / "model.safetensors", {"lm_head.weight": (512, 64)})
    (out_dir / "training_args.bin").write_bytes(b"\0")
    record_output(run / "full")
    res = cli("export", run, "--merge")
    assert res.code == 2 and "full fine-tune" in res.err and "drop --merge" in res.err
    out = export(cli, run, "--ollama", "--vllm")
    assert sorted(p.name for p in (out / "model").iterdir()) == ["config.json", "model.safetensors", "tokenizer_config.json"]
    assert dict(read_modelfile((out / "Modelfile").read_text()))["FROM"] == "./model"
    script = (out / "serve_vllm.sh").read_text()
    assert 'vllm serve "$HERE/model"' in script and "--enable-lora" not in script
    report = json.loads((out / "export_report.json").read_text())
    assert report["kind"] == "full" and report["merge"] is None
    assert "AutoModelForCausalLM.from_pretrained(\"model\"" in (out / "README.md").read_text()
