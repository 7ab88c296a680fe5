"""`llamaforge estimate` and `llamaforge plan` as a user runs them: exit codes, JSON, one-line
errors, token-count suffixes, and no heavy imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from llamaforge.cli.estimate_cmd import parse_token_count
from llamaforge.errors import UserError


def test_estimate_json_fits_exit_0(cli):
    res = cli("estimate", "--model", "llama-3.1-8b", "--method", "qlora", "--gpus", "1xRTX4070S-12GB",
              "--tokens", "2.5M", "--epochs", "3", "--json")
    assert res.code == 0, res.err
    d = res.json()
    assert d["fits"] is True and d["peak_gpu_gib"] < d["usable_gpu_gib"]
    for key in ("host_ram_gib", "tokens_per_s", "hours", "cost_usd", "breakdown"):
        assert d[key] is not None
    assert d["tokens"] == 2_500_000 and d["epochs"] == 3
    assert d["setup"]["parallel"] == "single"


def test_estimate_the_issue_405b_config_does_not_fit_exit_1(cli):
    res = cli("estimate", "--model", "llama-3.1-405b", "--method", "qlora", "--lora-r", "64", "--gpus", "8xH100-80GB",
              "--parallel", "zero2", "--seq-len", "4096", "--optimizer", "adamw_bnb_8bit", "--json")
    assert res.code == 1
    d = res.json()
    assert d["fits"] is False and d["breakdown"]["weights"] > 190


def test_estimate_table_output_names_components_and_assumptions(cli):
    res = cli("estimate", "--model", "llama-2-13b", "--method", "lora", "--gpus", "2xA100-80GB",
              "--parallel", "zero3", "--lora-targets", "q_proj,v_proj", "--no-grad-ckpt", "--seq-len", "1024")
    assert res.code == 0, res.err
    for word in ("weights", "activations", "peak", "usable", "Host RAM", "tokens/s", "assumptions", "q_proj, v_proj"):
        assert word in res.out, word


@pytest.mark.parametrize("args,fragment", [
    (["--parallel", "zero2", "--offload", "params", "--gpus", "8xH100-80GB"], "only ZeRO-3 can offload parameters"),
    (["--gpus", "8xH100-80GB", "--parallel", "single"], "runs on one GPU"),
    (["--gpus", "3xH9000-80GB"], "unknown GPU"),
    (["--gpus", "1xH100-80GB", "--tokens", "lots"], "--tokens"),
    (["--gpus", "1xH100-80GB", "--lora-targets", "w_proj"], "unknown LoRA target"),
])
def test_estimate_bad_input_is_one_line_exit_2(cli, args, fragment):
    res = cli("estimate", "--model", "llama-3.1-8b", "--method", "lora", *args)
    assert res.code == 2
    assert fragment in res.err and "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) <= 2


def test_plan_json_keeps_the_global_batch(cli):
    res = cli("plan", "--model", "llama-3.1-70b", "--gpus", "8xH100-80GB", "--method", "lora", "--seq-len", "4096",
              "--global-batch", "64", "--tokens", "1.2B", "--json")
    assert res.code == 0, res.err
    d = res.json()
    s = d["setup"]
    assert d["ok"] and s["micro_batch"] * s["grad_accum"] * 8 == 64 == s["global_batch"]
    assert d["estimate"]["fits"] and d["estimate"]["hours"] > 0 and d["reasons"]


def test_plan_table_output(cli):
    res = cli("plan", "--model", "llama-3.1-8b", "--gpus", "1xRTX4070S-12GB")
    assert res.code == 0, res.err
    assert "qlora" in res.out and "why" in res.out and "considered and refused" in res.out


def test_plan_refusal_exit_1_with_suggestion(cli):
    res = cli("plan", "--model", "llama-3.1-405b", "--gpus", "1xRTX4090-24GB", "--method", "lora", "--json")
    assert res.code == 1
    d = res.json()
    assert d["ok"] is False and "does not fit" in d["reason"] and d["suggestion"]
    text = cli("plan", "--model", "llama-3.1-405b", "--gpus", "1xRTX4090-24GB", "--method", "lora")
    assert text.code == 1 and "smallest catalog hardware that fits" in text.err


def test_plan_indivisible_global_batch_exit_2(cli):
    res = cli("plan", "--model", "llama-3.1-8b", "--gpus", "8xH100-80GB", "--global-batch", "12")
    assert res.code == 2 and "not divisible" in res.err


@pytest.mark.parametrize("text,value", [
    ("2.5M", 2_500_000), ("1.2B", 1_200_000_000), ("800k", 800_000), ("1000000", 1_000_000),
    ("1_000", 1_000), ("3e6", 3_000_000), ("0.5T", 500_000_000_000),
])
def test_token_counts_accept_suffixes(text, value):
    assert parse_token_count(text) == value


def test_token_count_rejects_words():
    with pytest.raises(UserError):
        parse_token_count("2.5 million")


def test_help_plan_and_estimate_do_not_import_heavy_packages():
    code = textwrap.dedent("""
        import sys
        from llamaforge.cli import main
        for argv in (["--help"], ["plan", "--model", "llama-3.1-70b", "--gpus", "2xRTX3090-24GB", "--json"],
                     ["estimate", "--model", "llama-3.1-8b", "--method", "qlora", "--gpus", "1xRTX4090-24GB", "--json"]):
            try:
                main(argv)
            except SystemExit:
                pass
        heavy = sorted(m for m in ("torch", "transformers", "axolotl", "deepspeed", "lm_eval", "datasets", "matplotlib")
                       if m in sys.modules)
        print("HEAVY:" + ",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY:" in out.stdout, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:", out.stdout.splitlines()[-1]
