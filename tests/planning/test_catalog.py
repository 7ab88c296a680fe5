import json

import pytest

from llamaforge.planning.catalog import get_gpu, get_model, gpus, models, parse_hardware
from llamaforge.errors import UserError

# Published parameter counts (Hugging Face safetensors metadata of each repository).
PUBLISHED = {
    "llama-3.1-8b": 8_030_261_248,
    "llama-2-13b": 13_015_864_320,
    "llama-3.1-70b": 70_553_706_496,
    "llama-3.1-405b": 405_853_388_800,
    "llama-2-7b": 6_738_415_616,
    "llama-2-70b": 68_976_648_192,
    "qwen3-8b": 8_190_735_360,
    "smollm2-135m": 134_515_008,   # SmolLM2-135M-Instruct; also the converted GGUF (tests/models/test_pretrained.py)
}


@pytest.mark.parametrize("model_id,expected", PUBLISHED.items())
def test_parameter_count_equals_published(model_id, expected):
    assert get_model(model_id).parameter_count() == expected


def test_every_catalog_entry_matches_its_own_published_count():
    # exact where the source gives the exact count, within the rounding of a model card's "20.91B" otherwise
    for spec in models().values():
        assert abs(spec.parameter_count() - spec.published_params) <= spec.published_rounding / 2, spec.id
        assert spec.published_rounding < spec.published_params / 100, spec.id


def test_mixture_of_experts_counts_all_experts_and_computes_the_routed_ones():
    # model cards count the active parameters with or without the embedding: within 10%
    moe = [m for m in models().values() if m.is_moe]
    assert {m.id for m in moe} >= {"mixtral-8x7b", "mixtral-8x22b", "qwen3-30b-a3b", "gpt-oss-20b", "gpt-oss-120b"}
    for m in moe:
        assert m.published_active_params, m.id
        assert abs(m.active_parameter_count() - m.published_active_params) <= 0.1 * m.published_active_params, m.id
        assert m.active_parameter_count() < m.parameter_count() / 2, m.id
    dense = get_model("llama-3.1-8b")
    assert dense.active_parameter_count() == dense.parameter_count() - dense.embedding_params


def test_hub_ids_name_one_catalog_model_each():
    from llamaforge.planning.catalog import catalog_model_for_repo

    seen = {}
    for spec in models().values():
        for repo in (spec.hf_repo, spec.instruct_repo, *spec.hub_ids):
            if repo:
                assert seen.setdefault(repo.lower(), spec.id) == spec.id, repo
    assert catalog_model_for_repo("NousResearch/Meta-Llama-3.1-8B") == (get_model("llama-3.1-8b"), "same architecture")
    assert catalog_model_for_repo("mistralai/Mixtral-8x7B-v0.1")[0].id == "mixtral-8x7b"
    assert catalog_model_for_repo("someone/Mixtral-8x7B-finetune") is None


def test_tiny_is_about_100k_parameters():
    assert 50_000 <= get_model("tiny").parameter_count() <= 200_000


def test_required_gpus_present():
    for gid in ["H100-80GB", "H200-141GB", "A100-80GB", "A100-40GB", "L40S-48GB", "A6000-48GB",
                "A10G-24GB", "RTX4090-24GB", "RTX3090-24GB", "RTX4070S-12GB"]:
        g = gpus()[gid]
        assert g.memory_gib > 0 and g.bf16_tflops > 0 and g.usd_per_hour > 0


@pytest.mark.parametrize("text,count,gpu,nodes", [
    ("8xH100-80GB", 8, "H100-80GB", 1),
    ("1xRTX4070S-12GB", 1, "RTX4070S-12GB", 1),
    ("H200-141GB", 1, "H200-141GB", 1),
    ("2x rtx3090-24gb", 2, "RTX3090-24GB", 1),
    ("8xH100-80GB-2nodes", 8, "H100-80GB", 2),
])
def test_parse_hardware(text, count, gpu, nodes):
    hw = parse_hardware(text)
    assert (hw.gpus_per_node, hw.gpu.id, hw.nodes) == (count, gpu, nodes)


def test_nodes_option_and_labels():
    hw = parse_hardware("8xH100-80GB", nodes=2)
    assert hw.world_size == 16
    assert hw.label == "8xH100-80GB-2nodes"
    assert parse_hardware("4xA100-80GB").label == "4xA100-80GB"


@pytest.mark.parametrize("text,fragment", [
    ("8xH100", "malformed hardware"),
    ("eightxH100-80GB", "unknown GPU"),
    ("8xH101-80GB", "unknown GPU"),
    ("0xH100-80GB", "1..16"),
    ("", "malformed hardware"),
])
def test_bad_hardware_is_a_user_error(text, fragment):
    with pytest.raises(UserError, match=fragment):
        parse_hardware(text)


def test_unknown_model_suggests_and_lists():
    with pytest.raises(UserError) as exc:
        get_model("llama-3.1-7b")
    msg = str(exc.value)
    assert "did you mean" in msg and "llama-3.1-8b" in msg and "\n" not in msg


def test_unknown_gpu_suggests():
    with pytest.raises(UserError, match="did you mean H100-80GB"):
        get_gpu("H100-80G")


def test_model_from_local_config(tmp_path):
    cfg = {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 128256, "tie_word_embeddings": False, "max_position_embeddings": 131072,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    spec = get_model(str(tmp_path))
    assert spec.parameter_count() == 8_030_261_248
    assert spec.source.endswith("config.json")


def test_model_from_bad_config(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(UserError, match="missing integer"):
        get_model(str(tmp_path / "config.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not a readable JSON"):
        get_model(str(tmp_path / "bad.json"))


def test_cli_catalog_json(cli):
    res = cli("models", "--json")
    assert res.code == 0
    ids = {m["id"]: m["parameters"] for m in res.json()["models"]}
    assert ids["llama-3.1-405b"] == 405_853_388_800
    res = cli("gpus", "--json")
    assert res.code == 0 and len(res.json()["gpus"]) == 10


def test_cpu_hardware_only_where_allowed():
    hw = parse_hardware("2xcpu", allow_cpu=True)
    assert (hw.gpu.id, hw.world_size, hw.label) == ("cpu", 2, "2xcpu")
    assert parse_hardware("cpu", allow_cpu=True).world_size == 1
    with pytest.raises(UserError, match="malformed hardware"):
        parse_hardware("cpu")
