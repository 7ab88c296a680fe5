"""The specialists spec, the slices it derives, and what `llamaforge render` commits for it: one recipe
per specialist, its slice, and one vLLM multi-LoRA serve script (run here against a stand-in `vllm`)."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
import yaml

from llamaforge.corpus.spec import load_spec
from llamaforge.errors import UserError
from llamaforge.paths import repo_root
from llamaforge.recipe.registry import read_header
from llamaforge.recipe.specialists import kept_categories, load_specialists, slice_spec_data, specialists_from_dict

ROOT = repo_root()
SEED_001 = ["mnemosyne", "moira", "aletheia", "kairos", "eleos"]


@pytest.fixture(scope="module")
def committed():
    return load_specialists(ROOT / "datasets/specialists.yaml")


def _spec(**changes) -> dict:
    data = {"name": "nyx", "corpus": "datasets/leviathan.yaml",
            "base": {"model": "llama-3.1-70b", "gpus": "8xH100-80GB", "method": "lora", "seq_len": 4096},
            "specialists": [{"name": "mnemosyne", "categories": ["memory"], "lora_r": 16},
                            {"name": "eleos", "categories": ["compassion"], "lora_r": 8}]}
    data.update(changes)
    return data


def test_the_committed_spec_is_seed_001s_70b_base_with_five_specialists(committed):
    sset, shared = committed
    assert [s.name for s in sset.specialists] == SEED_001
    assert sset.base.model == "llama-3.1-70b" and sset.base.method == "lora"
    assert sset.corpus == "datasets/leviathan.yaml" and shared["name"] == "leviathan"
    assert all(s.role and s.categories for s in sset.specialists)


@pytest.mark.parametrize("changes, message", [
    ({"specialists": []}, "specialists: is empty"),
    ({"specialists": [{"name": "Moira", "categories": ["x"]}]}, "lower-case letters"),
    ({"specialists": [{"name": "a", "categories": ["x"]}, {"name": "a", "categories": ["y"]}]}, "listed twice"),
    ({"specialists": [{"name": "a"}]}, "give the categories"),
    ({"specialists": [{"name": "a", "categories": ["x"], "lora_r": 1024}]}, "between 1 and 512"),
    ({"specialists": [{"name": "a", "categories": ["x"], "rank": 8}]}, "unknown key `specialists\\[0\\].rank`"),
    ({"specialists": [{"name": "a", "sources": [{"path": "x.jsonl"}]}]}, "its own `category:`"),
    ({"base": {"model": "llama-3.1-70b", "gpus": "8xH100-80GB", "method": "full"}}, "use lora or qlora"),
    ({"base": {"gpus": "8xH100-80GB"}}, "base.model: is required"),
    ({"serve": {"tensor_parallel_size": 4}}, "unknown key `serve.tensor_parallel_size`"),
    ({"serve": {"gpus": "2xRTX3090"}}, "serve.gpus: malformed hardware"),
    ({"serve": {"weights": "q4_K_M"}}, "serve.weights: 'q4_K_M': use one of bf16"),
    ({"serve": {"concurrency": 0}}, "must be 1 or more"),
])
def test_spec_mistakes_are_one_line_naming_the_key(changes, message):
    with pytest.raises(UserError, match=message):
        specialists_from_dict(_spec(**changes), origin="s.yaml", corpus="datasets/leviathan.yaml")


def test_a_slice_keeps_its_categories_its_sources_and_the_general_ones_and_restricts_phases_and_mix():
    shared = {"name": "lev", "sources": [{"path": "all.jsonl", "category_field": "_category"}],
              "mix": {"general_share": 0.15, "categories": {"identity": {"min_unique": 5}, "code": {"weight": 2}}},
              "phases": [{"name": "foundation", "categories": ["general", "code", "*"]},
                         {"name": "integration", "categories": ["psychology"]},
                         {"name": "identity", "categories": ["identity"]}]}
    own = {"path": "memories.jsonl", "category": "memory"}
    sset = specialists_from_dict(_spec(specialists=[{"name": "mnemosyne", "categories": ["identity"], "sources": [own]}]),
                                 origin="s.yaml", corpus="datasets/lev.yaml")
    sp = sset.specialists[0]
    data = slice_spec_data(sset, sp, shared)
    assert data["extends"] == "datasets/lev.yaml" and data["name"] == "lev-mnemosyne"
    assert data["keep_categories"] == ["general", "identity", "memory"] == kept_categories(sset, sp, shared)
    assert data["sources"] == shared["sources"] + [own]
    assert data["phases"] == [{"name": "foundation", "categories": ["general", "*"]},   # memory falls under "*"
                              {"name": "identity", "categories": ["identity"]}]
    assert data["mix"]["categories"] == {"identity": {"min_unique": 5}} and data["mix"]["general_share"] == 0.15

    narrow = specialists_from_dict(_spec(keep_general=False), origin="s.yaml", corpus="datasets/lev.yaml")
    data = slice_spec_data(narrow, narrow.specialists[0], shared)
    assert data["keep_categories"] == ["memory"] and "general_share" not in data["mix"]
    assert "sources" not in data


def test_every_specialist_has_a_committed_recipe_on_its_slice_with_its_rank(committed):
    sset, shared = committed
    for sp in sset.specialists:
        recipe = ROOT / f"recipes/llama-3.1-70b/nyx-{sp.name}-lora-8xH100-80GB.yaml"
        text = recipe.read_text()
        cfg, header = yaml.safe_load(text), read_header(text)
        assert header["specialist"] == f"nyx/{sp.name}" and header["model"] == "llama-3.1-70b"
        assert cfg["lora_r"] == sp.lora_r and cfg["base_model"] == "meta-llama/Llama-3.1-70B-Instruct"
        assert cfg["datasets"][0]["path"] == f"build/corpus/leviathan-{sp.name}/train.jsonl"
        assert cfg["output_dir"] == f"outputs/llama-3.1-70b/nyx-{sp.name}-lora-8xH100-80GB"
        slice_spec = load_spec(ROOT / f"recipes/llama-3.1-70b/nyx/{sp.name}.corpus.yaml")
        assert slice_spec.name == f"leviathan-{sp.name}" and slice_spec.extends == "datasets/leviathan.yaml"
        assert list(slice_spec.keep_categories) == kept_categories(sset, sp, shared)
        assert slice_spec.base_dir == str(ROOT / "datasets")          # sources resolve as the shared spec's do


# ---- the serve script ------------------------------------------------------------------------


@pytest.fixture
def serve(tmp_path):
    """The committed serve script, a stand-in `vllm` that prints its arguments, adapters in place."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vllm"
    fake.write_text('#!/usr/bin/env bash\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for name in SEED_001:
        folder = tmp_path / f"outputs/llama-3.1-70b/nyx-{name}-lora-8xH100-80GB"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")

    def run(*args, **extra_env):
        return subprocess.run(["bash", str(ROOT / "recipes/llama-3.1-70b/nyx/serve_vllm.sh"), *args], cwd=tmp_path,
                              env={**env, **extra_env}, capture_output=True, text=True, timeout=30)
    return tmp_path, run


def test_the_serve_script_serves_every_adapter_on_one_base_with_the_plans_flags(serve, committed):
    from llamaforge.planning.serve_plan import vllm_arguments
    from llamaforge.recipe.specialists import serve_plan_for

    root, run = serve
    res = run("--gpu-memory-utilization", "0.9", PORT="9001")
    assert res.returncode == 0, res.stderr
    argv = res.stdout.splitlines()
    # seed 001 serves on two RTX 3090s: 8-bit weights do not fit there, the plan's 4-bit AWQ base does
    assert argv[:2] == ["serve", "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"]
    value = lambda flag: argv[argv.index(flag) + 1]  # noqa: E731
    assert value("--served-model-name") == "nyx-base" and "--enable-lora" in argv
    assert value("--max-loras") == "5" and value("--max-lora-rank") == "32"     # ranks 8..32; vLLM accepts 32
    assert value("--tensor-parallel-size") == "2" and value("--max-model-len") == "4096"
    assert value("--quantization") == "awq_marlin" and value("--dtype") == "float16"
    plan = serve_plan_for(committed[0], 32)
    for flag, val in vllm_arguments(plan):                      # every flag of the plan, with its value
        assert flag in argv and (val is None or value(flag) == val), flag
    assert plan.estimate.fits and plan.estimate.concurrency >= 1
    modules = argv[argv.index("--lora-modules") + 1: argv.index("--port")]
    assert modules == [f"{n}=outputs/llama-3.1-70b/nyx-{n}-lora-8xH100-80GB" for n in SEED_001]
    assert value("--port") == "9001" and argv[-2:] == ["--gpu-memory-utilization", "0.9"]


def test_the_authors_8bit_plan_is_refused_with_the_numbers_and_the_hardware_that_serves_it(committed):
    from dataclasses import replace

    from llamaforge.recipe.specialists import ServeTarget, serve_plan_for

    sset = replace(committed[0], serve=ServeTarget(gpus="2xRTX3090-24GB", weights="int8", context=4096))
    with pytest.raises(UserError, match=r"serve: .*int8 weights \+ LoRA slots \+ profiling need 3\d\.\d GiB per GPU.*"
                                        r"cheapest catalog hardware that serves it: \dx"):
        serve_plan_for(sset, 32)


def test_the_serve_script_refuses_a_missing_adapter_or_a_path_vllm_cannot_parse(serve):
    root, run = serve
    (root / "outputs/llama-3.1-70b/nyx-kairos-lora-8xH100-80GB/adapter_config.json").unlink()
    res = run()
    assert res.returncode == 2 and "kairos: no adapter in" in res.stderr and "KAIROS_ADAPTER" in res.stderr
    assert "nyx-kairos-lora-8xH100-80GB.yaml" in res.stderr and res.stdout == ""
    elsewhere = root / "runs/kairos=v2"
    elsewhere.mkdir(parents=True)
    (elsewhere / "adapter_config.json").write_text("{}")
    res = run(KAIROS_ADAPTER=str(elsewhere))
    assert res.returncode == 2 and "contains '=' or ','" in res.stderr
    other = root / "runs/kairos-v2"
    other.mkdir()
    (other / "adapter_config.json").write_text("{}")
    res = run(KAIROS_ADAPTER=str(other))
    assert res.returncode == 0 and f"kairos={other}" in res.stdout.splitlines()
