"""`llamaforge estimate` and `llamaforge plan` as a user runs them: exit codes, JSON, one-line
errors, token-count suffixes, and no heavy imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from llamaforge.cli.planning_cmd import parse_token_count
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


# ---- issue 11: the CLI expresses the committed recipes; tight verdicts ----------------------------


def test_readme_70b_qlora_on_two_3090s_fits_with_fsdp1_sharded_loading(cli):
    args = ["estimate", "--model", "llama-3.1-70b", "--method", "qlora", "--gpus", "2xRTX3090-24GB",
            "--parallel", "fsdp", "--offload", "all"]
    fsdp2 = cli(*args, "--json")
    assert fsdp2.code == 1 and fsdp2.json()["peak_phase"] == "load"      # the whole 4-bit base per GPU
    fsdp1 = cli(*args, "--fsdp-version", "1", "--json")
    assert fsdp1.code == 0, fsdp1.err
    assert fsdp1.json()["setup"]["fsdp_version"] == 1 and fsdp1.json()["verdict"] == "fits"


def test_a_verdict_within_five_percent_of_the_usable_memory_is_tight(cli):
    args = ["estimate", "--model", "llama-3.1-8b", "--method", "full", "--gpus", "1xH100-80GB", "--optimizer", "adamw_torch"]
    res = cli(*args, "--json")
    assert res.code == 0
    d = res.json()
    assert d["fits"] is True and d["verdict"] == "tight"
    assert d["margin_gib"] == pytest.approx(d["usable_gpu_gib"] - d["peak_gpu_gib"], abs=2e-3)
    assert 0 < d["margin_gib"] < 0.05 * d["usable_gpu_gib"]
    table = cli(*args)
    assert "tight:" in table.out and "to spare" in table.out
    roomy = cli("estimate", "--model", "llama-3.1-8b", "--method", "full", "--gpus", "1xH100-80GB", "--json").json()
    assert roomy["verdict"] == "fits"
    short = cli("estimate", "--model", "llama-3.1-8b", "--method", "lora", "--gpus", "1xRTX4090-24GB",
                "--micro-batch", "2", "--json")
    assert short.code == 1 and short.json()["verdict"] == "does not fit" and short.json()["margin_gib"] < 0


def test_estimate_flags_that_change_memory(cli):
    base = ["estimate", "--model", "llama-3.1-8b", "--method", "lora", "--gpus", "1xH100-80GB", "--seq-len", "4096",
            "--no-grad-ckpt", "--json"]
    eager = cli(*base).json()
    compiled = cli(*base, "--torch-compile").json()
    assert compiled["setup"]["torch_compile"] is True
    assert compiled["breakdown"]["activations"] < eager["breakdown"]["activations"]
    unpacked = cli(*base, "--no-sample-packing").json()
    padded = cli(*base, "--no-sample-packing", "--pad-to-sequence-len").json()
    # same worst-case allocation; batches of varying length fragment the cache, fixed ones do not
    assert unpacked["allocated_gib"] == pytest.approx(padded["allocated_gib"])
    assert unpacked["reserved_gib"] > padded["reserved_gib"] + 5
    dpo = cli("estimate", "--model", "llama-3.1-8b", "--method", "lora", "--gpus", "1xH100-80GB", "--seq-len", "4096",
              "--micro-batch", "2", "--stage", "dpo", "--json")
    assert dpo.code == 0 and any("DPO" in a for a in dpo.json()["assumptions"])


@pytest.mark.parametrize("args,fragment", [
    (["--gpus", "8xH100-80GB", "--parallel", "zero3", "--fsdp-version", "1"], "--fsdp-version goes with --parallel fsdp"),
    (["--gpus", "8xH100-80GB", "--parallel", "fsdp", "--fsdp-version", "3"], "fsdp_version must be 1 or 2"),
    (["--gpus", "1xH100-80GB", "--stage", "ppo"], "--stage"),
])
def test_new_estimate_flags_reject_bad_values_in_one_line(cli, args, fragment):
    res = cli("estimate", "--model", "llama-3.1-8b", "--method", "lora", *args)
    assert res.code == 2 and fragment in res.err and "Traceback" not in res.err


def test_plan_can_be_held_to_an_fsdp_version(cli):
    common = ["plan", "--model", "llama-3.1-405b", "--gpus", "8xH100-80GB", "--method", "qlora", "--seq-len", "4096",
              "--lora-r", "64", "--parallel", "fsdp"]
    fsdp2 = cli(*common, "--fsdp-version", "2", "--json")
    assert fsdp2.code == 1 and fsdp2.json()["ok"] is False
    fsdp1 = cli(*common, "--fsdp-version", "1", "--json")
    assert fsdp1.code == 0 and fsdp1.json()["setup"]["fsdp_version"] == 1
