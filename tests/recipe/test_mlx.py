"""The Mac path: Apple-Silicon machines in the catalog, the MLX-LM estimate and plan, `llamaforge
estimate --gpus 1x<Mac>`, the MLX-LM configs rendered from the matrix — and, slow, one of them
training the tiny model with real MLX-LM on this CPU from a corpus the corpus builder wrote."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import lru_cache

import pytest
import yaml

from llamaforge.planning.catalog import get_model, parse_apple_machine, parse_hardware
from llamaforge.errors import Infeasible, UserError
from llamaforge.planning.mlx_estimate import MlxSetup, estimate_mlx, plan_mlx
from llamaforge.paths import repo_root
from llamaforge.recipe.registry import list_recipes, read_header

ROOT = repo_root()
M3U = parse_apple_machine("1xM3Ultra-512GB")


def test_macs_are_not_cuda_gpus_and_say_where_to_go():
    with pytest.raises(UserError, match="Apple-Silicon Mac: Axolotl, DeepSpeed and bitsandbytes need CUDA"):
        parse_hardware("1xM3Ultra-512GB")
    with pytest.raises(UserError, match="the 512 GB Mac Studio is the M3 Ultra"):
        parse_apple_machine("1xM2Ultra-512GB")
    with pytest.raises(UserError, match="one Mac at a time"):
        parse_apple_machine("2xM3Ultra-512GB")


def test_quantized_weights_are_bits_plus_a_scale_and_bias_per_64_and_fit_where_16_bit_does_not():
    m70 = get_model("llama-3.1-70b")
    lora = estimate_mlx(MlxSetup(m70, M3U, "lora", batch_size=1, grad_checkpoint=True))
    q4 = estimate_mlx(MlxSetup(m70, M3U, "qlora", bits=4, batch_size=1, grad_checkpoint=True))
    quantizable = m70.linear_params + m70.embedding_params + m70.lm_head_params
    assert q4.breakdown["weights"] * 2**30 == pytest.approx(quantizable * (0.5 + 4 / 64) + m70.norm_params * 2)
    assert lora.breakdown["weights"] == pytest.approx(m70.parameter_count() * 2 / 2**30, rel=1e-3)
    small = parse_apple_machine("1xM3Max-48GB")
    with pytest.raises(Infeasible, match="does not fit"):
        plan_mlx(m70, small)
    assert plan_mlx(get_model("llama-3.1-8b"), small).setup.method in ("lora", "qlora")


def test_the_plan_prefers_precision_then_batch_and_raises_the_limit_it_was_given():
    m70 = get_model("llama-3.1-70b")
    plan = plan_mlx(m70, M3U, tokens=2_250_000, epochs=3)
    assert plan.setup.method == "lora" and plan.estimate.fits      # 16-bit LoRA of a 70B fits in 384 GiB
    tight = plan_mlx(m70, parse_apple_machine("1xM2Ultra-192GB"))
    assert (tight.setup.method, tight.setup.bits) != ("lora", 16)
    raised = plan_mlx(m70, parse_apple_machine("1xM2Ultra-192GB"), wired_limit_gib=176)
    assert raised.estimate.usable_gib == 176
    # speed: more adapted layers and checkpointing cost FLOPs; a quantized base runs slower per FLOP
    full = MlxSetup(m70, M3U, "lora", batch_size=1)
    assert estimate_mlx(full.with_(grad_checkpoint=True)).tokens_per_s < estimate_mlx(full).tokens_per_s
    assert estimate_mlx(full.with_(lora_layers=16)).tokens_per_s > estimate_mlx(full).tokens_per_s
    assert estimate_mlx(full.with_(method="qlora", bits=4)).tokens_per_s < estimate_mlx(full).tokens_per_s


def test_estimate_on_a_mac_lists_every_model_or_plans_one(cli):
    res = cli("estimate", "--gpus", "1xM3Ultra-512GB", "--json")
    assert res.code == 0, res.err
    data = res.json()
    rows = {r["model"]: r for r in data["models"]}
    assert data["trainer"] == "mlx-lm" and "tiny" not in rows
    assert rows["llama-3.1-70b"]["fits"] and rows["llama-3.1-405b"]["fits"]
    assert rows["llama-3.1-405b"]["setup"]["method"] == "qlora"
    res = cli("estimate", "--model", "llama-3.1-70b", "--gpus", "1xM3Ultra-512GB", "--method", "qlora",
              "--tokens", "2.25M", "--epochs", "3", "--json")
    assert res.code == 0 and res.json()["estimate"]["hours"] > 0 and res.json()["setup"]["method"] == "qlora"
    res = cli("estimate", "--model", "llama-3.1-405b", "--gpus", "1xM3Max-48GB", "--json")
    assert res.code == 1 and res.json()["ok"] is False
    res = cli("estimate", "--model", "llama-3.1-8b", "--gpus", "1xM3Ultra-512GB", "--method", "full")
    assert res.code == 2 and "not planned on a Mac" in res.err
    res = cli("estimate", "--gpus", "1xH100-80GB")
    assert res.code == 2 and "needs --model and --method" in res.err


# ---- the committed MLX-LM configs ----------------------------------------------------------------


def _mlx_recipes():
    return [e for e in list_recipes() if e.trainer == "mlx-lm"]


@lru_cache(maxsize=1)
def _mlx_lm_config_keys() -> frozenset[str]:
    """The config keys mlx-lm reads, asked in a child process: importing mlx_lm.lora patches
    PyYAML's SafeLoader for the whole process (it reads `1e3` as a float from then on)."""
    code = "import json; from mlx_lm.lora import CONFIG_DEFAULTS; print(json.dumps(sorted(CONFIG_DEFAULTS)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return frozenset(json.loads(out.strip().splitlines()[-1]))


def test_committed_mlx_configs_use_only_keys_mlx_lm_reads_and_state_the_plan():
    known = _mlx_lm_config_keys() | {"lr_schedule", "optimizer_config"}
    entries = _mlx_recipes()
    assert {e.id for e in entries} == {"llama-3.1-8b/mlx-lora-1xM3Ultra-512GB", "llama-3.1-70b/mlx-qlora-1xM3Ultra-512GB"}
    for e in entries:
        text = (ROOT / e.path).read_text()
        cfg, header = yaml.safe_load(text), read_header(text)
        assert set(cfg) <= known, set(cfg) - known
        assert header["trainer"] == "mlx-lm" and header["tokens_per_s"] > 0
        assert cfg["data"] == "build/mlx/leviathan" and cfg["fine_tune_type"] == "lora" and cfg["train"] is True
        assert set(cfg["lora_parameters"]) == {"rank", "scale", "dropout", "keys"}
        assert "ln -sfn ../../corpus/leviathan/eval.jsonl build/mlx/leviathan/valid.jsonl" in text
        assert cfg["iters"] == -(-3 * 3000 // cfg["batch_size"])       # 3 epochs of seed 004's 3,000 rows
    qlora = yaml.safe_load((ROOT / "recipes/llama-3.1-70b/mlx-qlora-1xM3Ultra-512GB.yaml").read_text())
    assert qlora["model"] == "mlx_models/llama-3.1-70b-4bit"
    text = (ROOT / "recipes/llama-3.1-70b/mlx-qlora-1xM3Ultra-512GB.yaml").read_text()
    assert "mlx_lm.convert --hf-path meta-llama/Llama-3.1-70B-Instruct -q --q-bits 4 --q-group-size 64" in text


# ---- slow: real MLX-LM on the CPU ----------------------------------------------------------------


@pytest.mark.slow
def test_an_mlx_config_rendered_from_the_matrix_trains_the_tiny_model_on_the_builders_corpus(tmp_path, monkeypatch):
    from llamaforge.corpus.build import BuildOptions, build_corpus
    from llamaforge.recipe.mlx import MlxEntry, render_mlx_recipe
    from llamaforge.paths import datasets_dir
    from llamaforge.recipe.matrix import load_matrix, write_files
    from llamaforge.models.tiny import create_tiny_model

    monkeypatch.chdir(tmp_path)
    res = build_corpus(datasets_dir() / "demo.yaml", BuildOptions(workers=1))
    train_rows = [json.loads(line) for line in (res.out_dir / "train.jsonl").open()]
    assert train_rows and all("messages" in r for r in train_rows)
    model_dir = tmp_path / "model"
    create_tiny_model(model_dir, [m["content"] for r in train_rows for m in r["messages"]])

    # the matrix's hyperparameter layers, the demo's learning rate; rendered like a committed config
    entry = MlxEntry(model="tiny", machine="1xM1Max-64GB", method="lora", seq_len=256, lora_r=8,
                     rows=len(train_rows), tokens_per_row=64, hyperparameters={"learning_rate": 0.01, "epochs": 1})
    rendered = render_mlx_recipe(entry, corpus="demo", layers=load_matrix().hyper_layers, base_model=str(model_dir),
                                 iters=40)
    write_files([rendered], tmp_path)
    recipe = tmp_path / rendered.path
    cfg = yaml.safe_load(recipe.read_text())
    assert cfg["model"] == str(model_dir) and cfg["data"] == "build/mlx/demo" and cfg["iters"] == 40
    cfg.update(steps_per_report=5, steps_per_eval=20, val_batches=2)
    header = "".join(line + "\n" for line in recipe.read_text().splitlines() if line.startswith("#"))
    recipe.write_text(header + yaml.safe_dump(cfg, sort_keys=False))

    # the header's own preparation line links the builder's train/eval files as MLX-LM's train/valid
    prepare = next(line[4:] for line in header.splitlines() if line.startswith("#   mkdir -p "))
    done = subprocess.run(["bash", "-c", prepare], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "build/mlx/demo/valid.jsonl").resolve() == (res.out_dir / "eval.jsonl").resolve()

    log = subprocess.run([sys.executable, "-m", "mlx_lm", "lora", "--config", str(recipe)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    out = re.sub(r"\x1b\[[0-9;]*m", "", log.stdout + log.stderr)
    assert log.returncode == 0, out[-4000:]
    # mlx-lm 0.32 reports `iter  train_loss  tok/s  tokens` rows (older releases: "Iter N: Train loss X")
    losses = [float(x) for x in re.findall(r"^\s*\d+\s+([0-9.]+) [▼▲=]", out, re.M)] or \
        [float(x) for x in re.findall(r"Train loss ([0-9.]+)", out)]
    val = [float(x) for x in re.findall(r"^\s*\d+\s+val ([0-9.]+)", out, re.M)] or \
        [float(x) for x in re.findall(r"Val loss ([0-9.]+)", out)]
    assert len(losses) >= 4 and val, out[-3000:]                        # it trained and read valid.jsonl
    assert losses[-1] < losses[0] and val[-1] < val[0], (losses, val)
    adapters = tmp_path / cfg["adapter_path"]
    assert (adapters / "adapters.safetensors").is_file()
    saved = json.loads((adapters / "adapter_config.json").read_text())
    assert saved["lora_parameters"]["rank"] == 8 and saved["num_layers"] == -1


def test_check_passes_the_committed_mlx_configs_and_flags_what_mlx_lm_would_ignore_or_need(cli, tmp_path):
    from llamaforge.planning.mlx_estimate import mlx_facts

    assert _mlx_lm_config_keys() <= set(mlx_facts()["config_keys"])     # the check knows every key mlx-lm reads
    paths = [str(ROOT / e.path) for e in _mlx_recipes()]
    res = cli("check", *paths, "--json")
    assert res.code == 0, res.out
    assert all(any(f["key"] == "memory" and "GiB peak" in f["message"] for f in c["findings"]) for c in res.json()["configs"])
    text = (ROOT / "recipes/llama-3.1-8b/mlx-lora-1xM3Ultra-512GB.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("batch_size: 4", "batch_sise: 4").replace("  scale: 2.0", "  alpha: 32"))
    res = cli("check", str(bad), "--json")
    keys = {f["key"]: f["message"] for f in res.json()["findings"] if f["severity"] == "error"}
    assert res.code == 1 and "did you mean `batch_size`" in keys["batch_sise"]
    assert "lora_parameters.scale" in keys and "lora_parameters.alpha" in keys
