"""`llamaforge check` without Axolotl: the pure finders against the stored 0.19.0 schema, the
rebuilding of a TrainSetup from a config, the CLI's exit codes and JSON shape. Axolotl's own
validation is exercised in test_check_schema.py (slow)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import yaml

from llamaforge.check import findings as check_mod
from llamaforge.check.axolotl_schema import SchemaError, gpu_capabilities, load_snapshot
from llamaforge.planning.catalog import get_model, parse_hardware
from llamaforge.check.findings import (
    check_config, derive_facts, find_bad_combinations, find_deprecated_keys, find_ignored_keys, load_rules,
    memory_findings, schema_defaults, schema_findings,
)
from llamaforge.errors import UserError
from llamaforge.check.reader import (
    DeepSpeedInfo, deepspeed_from_json, deepspeed_from_name, parse_header, read_config, read_deepspeed, resolve_model,
    setup_from_config,
)

CONFIGS = Path(__file__).parent.parent / "fixtures" / "configs"
ISSUE_405B = CONFIGS / "issue2-405b-lora-8xH100.yaml"
CLEAN_8B = CONFIGS / "clean-8b-qlora.yaml"
IGNORED_405B = {"bnb_4bit_compute_dtype", "bnb_4bit_use_double_quant", "bnb_4bit_quant_type", "push_to_hub"}
H100x8 = parse_hardware("8xH100-80GB")


@pytest.fixture(scope="module")
def table():
    return load_snapshot("0.19.0")


@pytest.fixture(scope="module")
def rules():
    return load_rules()


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def base_lora(**extra) -> dict:
    cfg = {
        "base_model": "meta-llama/Llama-3.1-8B-Instruct", "adapter": "lora", "lora_r": 16,
        "lora_target_linear": True, "datasets": [{"path": "d.jsonl", "type": "chat_template"}],
        "sequence_len": 2048, "micro_batch_size": 1, "gradient_accumulation_steps": 4,
        "learning_rate": 1e-4, "attn_implementation": "flash_attention_2", "output_dir": "out",
    }
    cfg.update(extra)
    return cfg


def keys_of(findings, severity=None) -> set[str]:
    return {f.key for f in findings if severity is None or f.severity == severity}


# ---- (b) keys Axolotl ignores ---------------------------------------------------------------


def test_issue_config_names_exactly_the_four_ignored_keys(table, rules):
    findings = find_ignored_keys(load(ISSUE_405B), table, rules)
    assert keys_of(findings) == IGNORED_405B
    assert all(f.severity == "error" for f in findings)
    bnb = next(f for f in findings if f.key == "bnb_4bit_quant_type")
    assert "bnb_config_kwargs" in bnb.message and "adapter: qlora" in bnb.message
    push = next(f for f in findings if f.key == "push_to_hub")
    assert "hub_model_id" in push.message


def test_aliases_and_field_names_are_known_keys(table, rules):
    # model_type/model_config/model_kwargs/model_revision are pydantic aliases of
    # type_of_model/overrides_of_model_config/...; the field names are accepted too (validate_by_name).
    cfg = base_lora(model_type="LlamaForCausalLM", model_config={"rope_theta": 1e6},
                    model_kwargs={}, model_revision="main", type_of_model="AutoModelForCausalLM",
                    fsdp_config={"version": 2, "fsdp_version": 2})
    assert find_ignored_keys(cfg, table, rules) == []


def test_did_you_mean(table, rules):
    findings = find_ignored_keys(base_lora(lora_rank=32, learning_rat=1e-4, sequence_length=512), table, rules)
    by_key = {f.key: f.message for f in findings}
    assert "did you mean `lora_r`?" in by_key["lora_rank"]
    assert "did you mean `learning_rate`?" in by_key["learning_rat"]
    assert "did you mean `sequence_len`?" in by_key["sequence_length"]


def test_suggestions_skip_deprecated_keys(table, rules):
    message = find_ignored_keys(base_lora(flash_attn=True), table, rules)[0].message
    assert "flash_attention`" not in message  # the deprecated legacy flag is not suggested


def test_keys_inside_datasets_entries_are_checked(table, rules):
    cfg = base_lora(datasets=[
        {"path": "a.jsonl", "type": "chat_template", "field_messages": "m"},
        {"path": "b.jsonl", "type": "chat_template", "feild_messages": "m"},
    ], test_datasets=[{"path": "c.jsonl", "type": "chat_template", "splt": "test"}])
    findings = find_ignored_keys(cfg, table, rules)
    assert keys_of(findings) == {"datasets[1].feild_messages", "test_datasets[0].splt"}
    assert "did you mean `field_messages`?" in findings[0].message


def test_dataset_entries_use_the_model_validate_config_picks(table, rules):
    # DPO entries are validated as DPODataset: field_chosen is real there, not for SFT.
    entry = {"path": "p.jsonl", "type": "chatml.intel", "field_chosen": "c", "field_rejected": "r"}
    assert find_ignored_keys(base_lora(rl="dpo", datasets=[entry]), table, rules) == []
    assert keys_of(find_ignored_keys(base_lora(datasets=[entry]), table, rules)) == {
        "datasets[0].field_chosen", "datasets[0].field_rejected"}


def test_nested_blocks_with_models_are_checked(table, rules):
    cfg = base_lora(
        trl={"beta": 0.1, "bogus_knob": 1},
        datasets=[{"path": "a", "type": {"field_instruction": "q", "feild_output": "a"}}],
        fsdp_version=2, fsdp_config={"offload_params": False, "auto_wrap_polcy": "TRANSFORMER_BASED_WRAP"},
        model_config={"anything": 1},  # a free-form dict: no model, not checked
    )
    findings = find_ignored_keys(cfg, table, rules)
    assert keys_of(findings) == {"trl.bogus_knob", "datasets[0].type.feild_output", "fsdp_config.auto_wrap_polcy"}
    assert "did you mean `auto_wrap_policy`?" in next(f.message for f in findings if f.key.startswith("fsdp"))


def test_plugin_configs_without_their_schema_only_warn(table, rules):
    findings = find_ignored_keys(base_lora(cut_cross_entropy_x=True), table, rules, plugins_unloaded=True)
    assert [f.severity for f in findings] == ["warning"]


# ---- (c) deprecated keys ----------------------------------------------------------------


def test_deprecated_keys_with_replacements(table, rules):
    cfg = base_lora(
        attn_implementation=None, flash_attention=True, dpo_beta=0.1, rope_scaling={"type": "linear"},
        gc_steps=10, datasets=[{"path": "a", "type": "chat_template", "message_field_role": "from"}],
        fsdp_version=2, fsdp_config={"fsdp_offload_params": True},
    )
    by_key = {f.key: f for f in find_deprecated_keys(cfg, table, rules)}
    assert set(by_key) == {"flash_attention", "dpo_beta", "rope_scaling", "gc_steps",
                           "datasets[0].message_field_role", "fsdp_config.fsdp_offload_params"}
    assert "attn_implementation: flash_attention_2" in by_key["flash_attention"].message
    assert "rl_beta" in by_key["dpo_beta"].message
    assert by_key["rope_scaling"].severity == "error"  # removed: Axolotl raises when it is set
    assert by_key["flash_attention"].severity == "warning"
    assert "write `offload_params`" in by_key["fsdp_config.fsdp_offload_params"].message
    assert "message_property_mappings" in by_key["datasets[0].message_field_role"].message


def test_renamed_fsdp_keys_are_not_reported_as_ignored(table, rules):
    cfg = base_lora(fsdp_version=2, fsdp_config={"fsdp_offload_params": True, "fsdp_version": 2})
    assert find_ignored_keys(cfg, table, rules) == []


def test_clean_config_has_no_key_findings(table, rules):
    cfg = load(CLEAN_8B)
    assert find_ignored_keys(cfg, table, rules) == []
    assert find_deprecated_keys(cfg, table, rules) == []


# ---- (d) known-bad combinations --------------------------------------------------------------


def combos(cfg, table, rules, hardware=H100x8, deepspeed=None):
    facts = derive_facts(cfg, table=table, deepspeed=deepspeed, hardware=hardware)
    return find_bad_combinations(cfg, facts, rules)


def test_lora_with_load_in_4bit_is_an_error(table, rules):
    found = combos(base_lora(load_in_4bit=True), table, rules)
    assert [(f.severity, f.key) for f in found] == [("error", "load_in_4bit")]
    assert "adapter: qlora" in found[0].message
    assert combos(base_lora(adapter="qlora", load_in_4bit=True), table, rules) == []
    assert combos(base_lora(load_in_8bit=True, load_in_4bit=True), table, rules) == []


def test_deepspeed_with_fsdp_config(table, rules):
    cfg = base_lora(deepspeed="zero2.json", fsdp_version=2, fsdp_config={"offload_params": False})
    assert keys_of(combos(cfg, table, rules), "error") == {"deepspeed"}
    assert combos(base_lora(deepspeed="zero2.json"), table, rules) == []


@pytest.mark.parametrize("extra,warns", [
    ({"attn_implementation": None}, True),
    ({"attn_implementation": "fp8"}, True),
    ({"attn_implementation": None, "flash_attention": True}, False),
    ({"attn_implementation": "sdpa"}, False),
    ({"attn_implementation": "flash_attention_2"}, False),
])
def test_sample_packing_needs_an_isolating_attention(table, rules, extra, warns):
    found = combos(base_lora(sample_packing=True, **extra), table, rules)
    assert (keys_of(found, "warning") == {"sample_packing"}) is warns


def test_fsdp1_is_deprecated(table, rules):
    assert keys_of(combos(base_lora(fsdp_config={"offload_params": False}), table, rules)) == {"fsdp_version"}
    assert combos(base_lora(fsdp_config={"fsdp_version": 2}), table, rules) == []


def test_deepspeed_batch_sizes(table, rules):
    ds = {"zero_optimization": {"stage": 2}, "train_batch_size": 4,
          "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": 2}
    info = DeepSpeedInfo(stage=2, config=ds, found_at="inline")
    cfg = base_lora(micro_batch_size=4, gradient_accumulation_steps=1, deepspeed="x.json")
    found = combos(cfg, table, rules, hardware=parse_hardware("2xH100-80GB"), deepspeed=info)
    texts = sorted(f.message for f in found)
    assert len(found) == 2 and all(f.severity == "error" for f in found)
    assert "gradient_accumulation_steps=2" in texts[0]
    assert "train_batch_size=4" in texts[1] and "4 x gradient_accumulation_steps 1 x 2 GPUs = 8" in texts[1]
    # no hardware: the per-GPU values are still compared, the total cannot be
    found = combos(cfg, table, rules, hardware=None, deepspeed=info)
    assert len(found) == 1
    auto = DeepSpeedInfo(stage=2, config={k: "auto" for k in ds if k != "zero_optimization"}, found_at="x")
    assert combos(cfg, table, rules, deepspeed=auto) == []


def test_rules_file_is_well_formed(rules):
    ids = [r["id"] for r in rules["rules"]]
    assert len(ids) == len(set(ids))
    for rule in rules["rules"]:
        assert rule["severity"] in ("error", "warning", "info")
        assert rule["key"] and rule["message"] and rule["source"]
        if "check" in rule:
            assert rule["check"] in check_mod.RULE_CHECKS
        else:
            check_mod._holds(rule["when"], {}, rules)  # every condition is one the evaluator knows


# ---- (a) and (e) as findings ------------------------------------------------------------------


def test_schema_errors_name_the_key():
    cfg = {"adapter": "qlora", "load_in_4bit": False, "learning_rate": 1}
    found = schema_findings([
        SchemaError("learning_rate", "Input should be a valid number"),
        SchemaError("", "Require cfg.load_in_4bit to be True for qlora"),
        SchemaError("", "something about nothing"),
    ], cfg, "0.19.0")
    assert [f.key for f in found] == ["learning_rate", "load_in_4bit", "schema"]
    assert all(f.severity == "error" and "Axolotl 0.19.0 rejects" in f.message for f in found)


def test_memory_findings():
    too_big = types.SimpleNamespace(peak_gpu_gib=1624.0, usable_gpu_gib=76.2, fits=False,
                                    breakdown={"weights": 1512.0, "activations": 30.0, "lora": 2.0, "overhead": 1.0})
    (f,) = memory_findings(too_big, H100x8)
    assert f.severity == "error" and f.key == "memory"
    assert "1,624.0 GiB" in f.message and "76.2 GiB" in f.message and "weights 1,512.0 GiB" in f.message
    assert "overhead" not in f.message  # only the largest three
    fits = types.SimpleNamespace(peak_gpu_gib=20.0, usable_gpu_gib=76.2, fits=True, breakdown={})
    assert [x.severity for x in memory_findings(fits, H100x8)] == ["info"]


def test_gpu_capabilities_from_the_catalog():
    caps = gpu_capabilities(bf16=True, compute_capability="9.0", world_size=16, nodes=2,
                            tf32_min_cc=8.0, fp8_min_cc=9.0)
    assert caps == {"bf16": True, "tf32": True, "fp8": True, "n_gpu": 16, "n_node": 2, "compute_capability": "sm_90"}
    a100 = gpu_capabilities(bf16=True, compute_capability="8.0", world_size=1, nodes=1, tf32_min_cc=8.0, fp8_min_cc=9.0)
    assert a100["fp8"] is False and a100["compute_capability"] == "sm_80"


# ---- reading configs and rebuilding the TrainSetup ---------------------------------------------


def test_parse_header_reads_the_leading_comment_block():
    text = "# Llama 405B LoRA\n# llamaforge-model: llama-3.1-405b\n#  llamaforge-hardware:  8xH100-80GB-2nodes \n\nbase_model: x\n# llamaforge-model: ignored\n"
    assert parse_header(text) == {"model": "llama-3.1-405b", "hardware": "8xH100-80GB-2nodes"}


@pytest.mark.parametrize("content,needle", [
    ("a: [1, 2\n", "malformed YAML at line"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("", "this is empty"),
])
def test_read_config_rejects_bad_yaml(tmp_path, content, needle):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(UserError, match=needle):
        read_config(path)


def test_read_config_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such config file"):
        read_config(tmp_path / "nope.yaml")


def test_deepspeed_parsing():
    assert deepspeed_from_json({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"},
                                                      "offload_param": {"device": "cpu"}}}) == (3, "all")
    assert deepspeed_from_json({"zero_optimization": {"stage": 3, "offload_param": {"device": "none"}}}) == (3, "none")
    assert deepspeed_from_json({}) == (0, "none")
    assert deepspeed_from_name("deepspeed_configs/zero2.json") == (2, "none")
    assert deepspeed_from_name("zero3_bf16_cpuoffload_all.json") == (3, "all")
    assert deepspeed_from_name("zero3_bf16_cpuoffload_params.json") == (3, "params")
    assert deepspeed_from_name("ds.json") == (None, "none")


def test_read_deepspeed_looks_in_each_folder(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    found = read_deepspeed("ds.json", [tmp_path / "a", tmp_path / "b"])
    assert found.stage == 1 and found.found_at.endswith("ds.json") and found.note is None
    missing = read_deepspeed("configs/zero3_bf16.json", [tmp_path])
    assert missing.stage == 3 and missing.config is None and "not found" in missing.note
    (tmp_path / "bad.json").write_text("{nope")
    assert "not valid JSON" in read_deepspeed("bad.json", [tmp_path]).error
    assert read_deepspeed({"zero_optimization": {"stage": 2}}, []).stage == 2


@pytest.mark.parametrize("name,expected", [
    ("meta-llama/Meta-Llama-3.1-70B-Instruct", "llama-3.1-70b"),     # a hub_ids entry: the same constants
    ("mistralai/Mixtral-8x7B-v0.1", "mixtral-8x7b"),
    ("Qwen/Qwen3-8B", "qwen3-8b"),
    # names that only look like a catalog model are never priced as one (the issue: Mixtral as llama-2-7b)
    ("./models/llama-405b", None),
    ("llama-70b", None),
    ("my-org/llama2_13b_merged", None),
    ("someone/Mixtral-8x7B-merged", None),
    ("Qwen/Qwen2-7B-Math", None),
])
def test_a_model_is_named_exactly_or_not_judged(name, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    choice = resolve_model({"base_model": name}, {}, None, [tmp_path])
    assert (choice.model.id if choice.model else None) == expected
    if expected is None:
        assert [(sev, msg.split(":")[0]) for sev, _, msg in choice.notes] == [("warning", "memory not judged")]


def _hf_config(folder: Path, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
           "vocab_size": 100, "model_type": "llama", **extra}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder / "config.json"


def test_the_local_hugging_face_cache_names_the_architecture(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--acme--moe-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    _hf_config(repo / "snapshots" / "abc123", model_type="mixtral", num_local_experts=4, num_experts_per_tok=2)
    choice = resolve_model({"base_model": "acme/moe-tiny"}, {}, None, [])
    assert choice.model.is_moe and (choice.model.num_experts, choice.model.experts_per_token) == (4, 2)
    assert "Hugging Face cache" in choice.notes[0][2]
    # an architecture the estimate has no terms for: not judged, with the reason
    _hf_config(tmp_path / "models--acme--hybrid" / "snapshots" / "x", model_type="jamba")
    hybrid = resolve_model({"base_model": "acme/hybrid"}, {}, None, [])
    assert hybrid.model is None and "Mamba" in hybrid.notes[0][2] and hybrid.notes[0][0] == "warning"


def test_resolve_model_order(tmp_path):
    hub = resolve_model({"base_model": "meta-llama/Llama-3.1-70B-Instruct"}, {}, None, [tmp_path])
    assert hub.model.id == "llama-3.1-70b" and hub.notes == ()
    header = resolve_model({"base_model": "meta-llama/Llama-3.1-70B"}, {"model": "llama-3.1-8b"}, None, [tmp_path])
    assert header.model.id == "llama-3.1-8b"
    assert resolve_model({"base_model": "x"}, {"model": "llama-3.1-8b"}, "qwen3-8b", []).model.id == "qwen3-8b"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "vocab_size": 100, "model_type": "llama"}))
    local = resolve_model({"base_model": "ckpt"}, {}, None, [tmp_path])
    assert local.model.hidden_size == 64
    unknown = resolve_model({"base_model": "./models/llama-405b"}, {}, None, [tmp_path])
    assert unknown.model is None and unknown.notes[0][0] == "warning"
    with pytest.raises(UserError):
        resolve_model({}, {}, "llama-9000", [])


def rebuild(cfg, hardware=H100x8, deepspeed=None):
    table = load_snapshot("0.19.0")
    return setup_from_config(cfg, model=get_model("llama-3.1-8b"), hardware=hardware, deepspeed=deepspeed,
                             defaults=schema_defaults(table), legacy_attention_flags=table["legacy_attention_flags"])


def test_setup_of_the_issue_config():
    cfg = load(ISSUE_405B)
    setup, _ = rebuild(cfg, deepspeed=DeepSpeedInfo(stage=2))
    assert (setup.method, setup.weight_format, setup.parallel, setup.offload) == ("lora", "fp32", "zero2", "none")
    assert (setup.lora_r, setup.alpha, setup.seq_len, setup.micro_batch, setup.grad_accum) == (64, 128, 4096, 1, 8)
    assert setup.grad_ckpt and setup.sample_packing and setup.optimizer == "adamw_bnb_8bit"
    assert setup.attn == "flash_attention_2" and len(setup.lora_targets) == 7


@pytest.mark.parametrize("extra,deepspeed,expected", [
    ({"adapter": "qlora", "load_in_4bit": True}, None, ("qlora", "nf4_dq", "ddp")),
    ({"adapter": "qlora", "load_in_4bit": True, "bnb_config_kwargs": {"bnb_4bit_use_double_quant": False}}, None, ("qlora", "nf4", "ddp")),
    ({"load_in_4bit": True}, DeepSpeedInfo(stage=3), ("lora", "bf16", "zero3")),
    ({"load_in_4bit": True, "fsdp_version": 2, "fsdp_config": {"cpu_ram_efficient_loading": True}}, None, ("lora", "bf16", "fsdp")),
    ({"load_in_4bit": True, "fsdp_version": 2, "fsdp_config": {"offload_params": True}}, None, ("lora", "fp32", "fsdp")),
    ({"load_in_8bit": True}, DeepSpeedInfo(stage=1), ("lora", "int8", "zero1")),
    ({"adapter": None, "bf16": "auto"}, DeepSpeedInfo(stage=3, offload="optimizer"), ("full", "bf16", "zero3")),
    ({"adapter": None, "bf16": False}, None, ("full", "fp32", "ddp")),
])
def test_setup_method_and_weights_as_axolotl_loads_them(extra, deepspeed, expected):
    setup, _ = rebuild(base_lora(**extra), deepspeed=deepspeed)
    assert (setup.method, setup.weight_format, setup.parallel) == expected


def test_setup_details():
    setup, notes = rebuild(base_lora(lora_r=None, optimizer="ao_adamw_8bit", batch_size=16,
                                     gradient_accumulation_steps=None, micro_batch_size=2,
                                     lora_target_linear=None, lora_target_modules=["q_proj", "v_proj", "lm_head"]),
                           hardware=parse_hardware("1xRTX4090-24GB"))
    assert setup.parallel == "single" and setup.grad_accum == 8 and setup.lora_r == 8
    assert setup.lora_targets == ("q_proj", "v_proj") and setup.optimizer == "adamw_torch_8bit"
    assert {n[1] for n in notes} == {"lora_r", "optimizer", "lora_target_modules"}
    fsdp, _ = rebuild(base_lora(fsdp_version=2, fsdp_config={"fsdp_offload_params": True}))
    assert (fsdp.parallel, fsdp.offload, fsdp.grad_ckpt) == ("fsdp", "all", False)
    fsdp_ac, _ = rebuild(base_lora(fsdp_version=2, gradient_checkpointing=False,
                                   fsdp_config={"activation_checkpointing": True}))
    assert fsdp_ac.grad_ckpt  # FSDP checkpoints the activations itself
    assert rebuild(base_lora(adapter="llama-adapter"))[0] is None


# ---- check_config end to end, without Axolotl's validation -------------------------------------


def test_issue_config_findings_without_schema():
    report = check_config(ISSUE_405B, hardware="8xH100-80GB", model="llama-3.1-405b", schema=False)
    # base_model ./models/llama-405b is a local path that does not exist here
    assert keys_of(report.errors) == IGNORED_405B | {"load_in_4bit", "memory", "base_model"}
    # model_type (an alias of type_of_model) and lora_target_modules next to lora_target_linear
    assert keys_of(report.findings, "warning") == {"flash_attention", "deepspeed", "model_type", "lora_target_modules"}
    assert not report.ok
    # without --model nothing says which model ./models/llama-405b is: memory is not judged, not guessed
    unjudged = check_config(ISSUE_405B, hardware="8xH100-80GB", schema=False)
    assert unjudged.estimate is None and "memory" not in keys_of(unjudged.errors)
    assert any(f.severity == "warning" and "memory not judged: unknown model" in f.message for f in unjudged.findings)


def test_clean_config_passes_without_schema():
    report = check_config(CLEAN_8B, hardware="1xRTX4090-24GB", schema=False)
    assert report.errors == [] and report.ok
    assert not [f for f in report.findings if f.severity == "warning"]


def test_no_hardware_means_memory_not_checked():
    report = check_config(CLEAN_8B, schema=False)
    memory = [f for f in report.findings if f.key == "memory"]
    assert [f.severity for f in memory] == ["info"] and "no hardware" in memory[0].message
    assert report.to_dict()["estimate"] is None


def test_recipe_header_supplies_hardware_and_model(tmp_path):
    text = CLEAN_8B.read_text().replace("base_model: meta-llama/Llama-3.1-8B-Instruct", "base_model: ./somewhere")
    path = tmp_path / "r.yaml"
    path.write_text("# llamaforge-model: llama-3.1-8b\n# llamaforge-hardware: 2xRTX3090-24GB\n" + text)
    report = check_config(path, schema=False)
    setup_line = next(f.message for f in report.findings if f.key == "setup")
    assert "llama-3.1-8b" in setup_line and "2xRTX3090-24GB" in setup_line


def test_missing_axolotl_is_an_error_finding_and_the_rest_still_runs(monkeypatch):
    import llamaforge.check.axolotl_schema as schema_mod

    monkeypatch.setattr(schema_mod, "axolotl_available", lambda: False)
    report = check_config(ISSUE_405B, hardware="8xH100-80GB")
    schema = [f for f in report.findings if f.key == "schema"]
    assert [f.severity for f in schema] == ["error"] and "not installed" in schema[0].message
    assert IGNORED_405B <= keys_of(report.findings, "error")


def test_memory_through_the_estimator_interface(monkeypatch):
    """The wiring to llamaforge.planning.estimate.estimate(setup) -> Estimate, with a stand-in estimator."""
    seen = []

    class StubEstimate:
        peak_gpu_gib, usable_gpu_gib, fits, host_ram_gib = 900.0, 76.0, False, 10.0
        breakdown = {"weights": 850.0, "activations": 40.0}
        assumptions = ()

        def to_dict(self):
            return {"peak_gpu_gib": self.peak_gpu_gib, "fits": self.fits}

    def estimate(setup, *, tokens=None, epochs=1.0):
        seen.append(setup)
        return StubEstimate()

    monkeypatch.setitem(sys.modules, "llamaforge.planning.estimate", types.SimpleNamespace(estimate=estimate))
    report = check_config(ISSUE_405B, hardware="8xH100-80GB", model="llama-3.1-405b", schema=False)
    assert seen[0].model.id == "llama-3.1-405b" and seen[0].parallel == "zero2"
    memory = next(f for f in report.findings if f.key == "memory")
    assert memory.severity == "error" and "900.0 GiB" in memory.message
    assert report.to_dict()["estimate"] == {"peak_gpu_gib": 900.0, "fits": False}


# ---- the CLI ---------------------------------------------------------------------------------


def test_cli_json_shape_single(cli):
    res = cli("check", str(CLEAN_8B), "--no-schema", "--json")
    assert res.code == 0
    data = res.json()
    assert set(data) == {"ok", "findings", "estimate"} and data["ok"] is True
    assert all(set(f) == {"severity", "key", "message"} for f in data["findings"])


def test_cli_json_shape_several_and_exit_1(cli):
    res = cli("check", str(CLEAN_8B), str(ISSUE_405B), "--no-schema", "--json", "--gpus", "8xH100-80GB")
    assert res.code == 1
    data = res.json()
    assert set(data) == {"ok", "configs"} and data["ok"] is False
    assert [c["ok"] for c in data["configs"]] == [True, False]
    assert set(data["configs"][1]) == {"path", "ok", "findings", "estimate"}


def test_cli_human_output(cli):
    res = cli("check", str(ISSUE_405B), "--no-schema", "--gpus", "8xH100-80GB")
    assert res.code == 1
    assert "bnb_4bit_quant_type" in res.out and "errors" in res.out


@pytest.mark.parametrize("args,needle", [
    (["tests/fixtures/configs/malformed.yaml"], "malformed YAML"),
    (["tests/fixtures/configs/not-a-mapping.yaml"], "must be a YAML mapping"),
    (["tests/fixtures/configs/nope.yaml"], "no such config file"),
    ([str(CLEAN_8B), "--gpus", "8xB200-192GB"], "unknown GPU"),
    ([str(CLEAN_8B), "--gpus", "eight H100s"], "malformed hardware"),
    ([str(CLEAN_8B), "--model", "llama-9000"], "unknown model"),
    ([str(CLEAN_8B), "--nodes", "2"], "--nodes needs --gpus"),
])
def test_cli_user_errors_exit_2_with_one_line(cli, args, needle):
    args = [str(Path(__file__).parents[2] / a) if a.startswith("tests/") else a for a in args]
    res = cli("check", *args, "--no-schema")
    assert res.code == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.err
    assert res.out == ""


# ---- memory with the real estimator ---------------------------------------------------------


def test_issue_config_does_not_fit_on_8xh100():
    report = check_config(ISSUE_405B, hardware="8xH100-80GB", model="llama-3.1-405b", schema=False)
    memory = next(f for f in report.findings if f.key == "memory")
    assert memory.severity == "error" and "does not fit" in memory.message
    assert report.to_dict()["estimate"]["fits"] is False


def test_clean_config_fits_one_rtx4090():
    report = check_config(CLEAN_8B, hardware="1xRTX4090-24GB", schema=False)
    assert report.ok, [f.message for f in report.errors]
    assert report.to_dict()["estimate"]["fits"] is True


def test_cpu_recipe_header_is_accepted(tmp_path):
    path = tmp_path / "cpu.yaml"
    path.write_text("# llamaforge-model: tiny\n# llamaforge-hardware: 2xcpu\n" + CLEAN_8B.read_text())
    report = check_config(path, schema=False)
    memory = next(f for f in report.findings if f.key == "memory")
    assert memory.severity == "info" and "CPU" in memory.message
    assert not [f for f in report.findings if f.key == "llamaforge-hardware"]


def test_lora_kernels_on_cpu(table, rules):
    cpu = parse_hardware("cpu", allow_cpu=True)
    off = {k: False for k in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")}
    assert keys_of(combos(base_lora(), table, rules, hardware=cpu), "error") == {"lora_mlp_kernel"}
    assert keys_of(combos(base_lora(lora_qkv_kernel=True), table, rules, hardware=cpu)) == {"lora_mlp_kernel"}
    assert combos(base_lora(**off), table, rules, hardware=cpu) == []
    assert combos(base_lora(rl="dpo"), table, rules, hardware=cpu) == []  # Axolotl leaves them off for RL
    assert combos(base_lora(load_in_8bit=True), table, rules, hardware=cpu) == []
    assert combos(base_lora(), table, rules) == []  # on GPUs they are what Axolotl wants


# ---- issue 11: fixes are re-estimated; more mistakes flagged -------------------------------------


def test_committed_405b_qlora_recipe_is_not_told_to_switch_to_fsdp2():
    recipe = Path(__file__).parents[2] / "recipes" / "llama-3.1-405b" / "qlora-8xH100-80GB.yaml"
    report = check_config(recipe, schema=False)
    assert report.ok and report.estimate.fits
    fsdp = next(f for f in report.findings if f.key == "fsdp_version")
    assert "fix:" not in fsdp.message and "not suggesting set `fsdp_version: 2`" in fsdp.message
    (fix,) = fsdp.fixes
    assert fix["suggested"] is False and fix["peak_gpu_gib"] > 200 > report.estimate.peak_gpu_gib
    assert report.to_dict()["findings"][[f.key for f in report.findings].index("fsdp_version")]["fixes"][0]["suggested"] is False


def test_a_fix_that_does_not_hurt_memory_is_suggested_with_its_estimate(tmp_path):
    cfg = base_lora(fsdp_config={"offload_params": False, "activation_checkpointing": True})
    path = tmp_path / "fsdp1.yaml"
    path.write_text(yaml.safe_dump(cfg))
    report = check_config(path, hardware="8xH100-80GB", schema=False)
    fsdp = next(f for f in report.findings if f.key == "fsdp_version")
    assert "fix: set `fsdp_version: 2` (re-estimated: ~" in fsdp.message
    assert fsdp.fixes[0]["suggested"] is True


class _Est:
    def __init__(self, peak, usable=80.0):
        self.peak_gpu_gib, self.usable_gpu_gib, self.fits = peak, usable, peak <= usable
        self.breakdown = {"weights": peak / 2}
        self.verdict = "fits" if self.fits else "does not fit"


@pytest.mark.parametrize("now,after,suggested", [
    (60.0, 70.0, True),      # still fits
    (60.0, 90.0, False),     # would stop fitting
    (90.0, 70.0, True),      # makes it fit
    (90.0, 85.0, True),      # does not fit either way, but less
    (90.0, 95.0, False),     # does not fit and needs more
])
def test_settle_fixes_keeps_only_fixes_that_do_not_make_memory_worse(now, after, suggested):
    finding = check_mod.Finding("warning", "k", "something", ({"text": "do X", "config": {"x": 1}},))
    (settled,) = check_mod.settle_fixes([finding], _Est(now), lambda change: (_Est(after), None))
    assert settled.fixes[0]["suggested"] is suggested
    assert ("fix: do X" in settled.message) is suggested
    assert ("not suggesting do X" in settled.message) is (not suggested)
    # memory not checked: the fix is printed as it is
    (plain,) = check_mod.settle_fixes([finding], None, lambda change: (None, None))
    assert plain.message == "something; fix: do X"


def test_both_fixes_of_lora_with_load_in_4bit_are_priced(tmp_path):
    cfg = base_lora(load_in_4bit=True, base_model="meta-llama/Llama-3.1-70B-Instruct", gradient_checkpointing=True)
    path = tmp_path / "70b.yaml"
    path.write_text(yaml.safe_dump(cfg))
    report = check_config(path, hardware="1xA100-80GB", schema=False)
    f = next(f for f in report.findings if f.key == "load_in_4bit")
    by_text = {fx["text"]: fx for fx in f.fixes}
    qlora, bf16 = by_text["use `adapter: qlora` for 4-bit QLoRA"], by_text["drop load_in_4bit for 16-bit LoRA"]
    # as written the base loads unquantized and is upcast to fp32 (~260 GiB): both fixes need less
    assert not report.estimate.fits
    assert qlora["suggested"] and qlora["peak_gpu_gib"] < 80 < bf16["peak_gpu_gib"] < report.estimate.peak_gpu_gib
    assert "drop load_in_4bit for 16-bit LoRA (re-estimated" in f.message and "does not fit)" in f.message


@pytest.mark.parametrize("extra,key", [
    ({"micro_batch_size": 0}, "micro_batch_size"),
    ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
    ({"micro_batch_size": -2}, "micro_batch_size"),
    ({"batch_size": 0, "gradient_accumulation_steps": None}, "batch_size"),
])
def test_batch_sizes_below_one_are_errors_not_micro_batch_one(tmp_path, extra, key):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base_lora(**extra)))
    report = check_config(path, hardware="1xH100-80GB", schema=False)
    assert key in keys_of(report.errors)
    assert report.estimate is None                       # nothing priced as if it were micro-batch 1
    assert not any("micro-batch 1" in f.message for f in report.findings)


def test_missing_local_base_model_is_an_error(tmp_path):
    for base in ("./models/llama", "/nowhere/at/all", "~/no-such-llama", "a/b/c"):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(base_lora(base_model=base)))
        assert "base_model" in keys_of(check_config(path, schema=False).errors), base
    (tmp_path / "models" / "llama").mkdir(parents=True)
    (tmp_path / "models" / "llama" / "config.json").write_text("{}")
    path.write_text(yaml.safe_dump(base_lora(base_model="./models/llama")))
    assert "base_model" not in keys_of(check_config(path, schema=False).errors)
    path.write_text(yaml.safe_dump(base_lora(base_model="meta-llama/Llama-3.1-8B-Instruct")))
    assert "base_model" not in keys_of(check_config(path, schema=False).findings)


@pytest.mark.parametrize("extra,flagged", [
    ({"evals_per_epoch": 1, "num_epochs": 1}, True),            # the one evaluation asked for never runs
    ({"evals_per_epoch": 1}, True),                              # num_epochs defaults to 1
    ({"evals_per_epoch": 1, "num_epochs": 0.5}, True),           # half an evaluation: eval_steps 2, "skipping"
    ({"evals_per_epoch": 3, "num_epochs": 0.5}, False),          # 1.5 evaluations: eval_steps 0.67 of the run
    ({"evals_per_epoch": 1, "num_epochs": 3}, False),            # eval_steps = 1/3 of the run
    ({"evals_per_epoch": 4, "num_epochs": 1}, False),
    ({"evals_per_epoch": 1, "num_epochs": 1, "eval_strategy": "epoch"}, False),
    ({"evals_per_epoch": 1, "num_epochs": 1, "eval_steps": 10}, False),
    ({"evals_per_epoch": 1, "num_epochs": 1, "val_set_size": 0, "test_datasets": None}, False),   # no eval set
])
def test_one_evaluation_per_run_is_an_error_because_axolotl_runs_none(table, rules, extra, flagged):
    cfg = base_lora(val_set_size=0.05, **{k: v for k, v in extra.items() if k != "val_set_size"})
    if "val_set_size" in extra:
        cfg["val_set_size"] = extra["val_set_size"]
    found = [f for f in combos(cfg, table, rules) if f.key == "evals_per_epoch"]
    assert bool(found) is flagged, found
    if flagged:
        assert found[0].severity == "error" and "evaluates nothing" in found[0].message
        assert [fx["config"] for fx in found[0].fixes] == [{"evals_per_epoch": 2}, {"eval_strategy": "epoch"}]


def test_model_type_is_flagged_and_a_non_class_value_is_an_error(table, rules):
    found = combos(base_lora(model_type="LlamaForCausalLM"), table, rules)
    assert [(f.severity, f.key) for f in found] == [("warning", "model_type")]
    assert "type_of_model" in found[0].message
    found = combos(base_lora(model_type="llama"), table, rules)
    assert [(f.severity, f.key) for f in found] == [("error", "model_type")]
    assert "names no transformers class" in found[0].message


def test_lora_target_modules_next_to_target_linear(table, rules):
    found = combos(base_lora(lora_target_modules=["q_proj", "v_proj"]), table, rules)
    assert keys_of(found) == {"lora_target_modules"} and "instead of restricting" in found[0].message
    found = combos(base_lora(lora_target_modules=["q_proj", "lm_head"]), table, rules)
    assert "lm_head are adapted on top of every linear layer" in found[0].message
    assert combos(base_lora(lora_target_linear=None, lora_target_modules=["q_proj"]), table, rules) == []


def test_tight_memory_is_a_warning():
    est = _Est(78.0, 79.4)
    est.verdict = "tight"
    est.verdict_text = lambda: "tight: 1.4 GiB (1.8%) to spare"
    (f,) = memory_findings(est, H100x8)
    assert f.severity == "warning" and "tight" in f.message


def test_deepspeed_optimizer_block_and_buffers_are_read_from_the_json(tmp_path):
    from llamaforge.planning.estimate import estimate
    from llamaforge.check.reader import deepspeed_settings

    ds = {"zero_optimization": {"stage": 2, "reduce_bucket_size": 2e8},
          "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}
    settings = deepspeed_settings(ds)
    assert settings.optimizer_block and settings.reduce_bucket_size == 200_000_000
    assert deepspeed_settings({"zero_optimization": {"stage": 3}}).prefetch_bucket_size == 50_000_000
    info = DeepSpeedInfo(stage=2, config=ds, found_at="inline")
    cfg = base_lora(adapter=None, optimizer="adamw_torch", deepspeed="x.json")
    setup, _ = setup_from_config(cfg, model=get_model("llama-3.1-8b"), hardware=parse_hardware("8xH100-80GB"),
                                 deepspeed=info, defaults={}, legacy_attention_flags=[])
    fused = estimate(setup)
    foreach = estimate(setup.with_(deepspeed=setup.deepspeed.__class__()))
    # DeepSpeed's FusedAdam has no foreach temporary; torch's foreach AdamW has one of a state's size
    assert "optimizer_temporaries" not in fused.breakdown
    assert foreach.phases_gib["step"] > fused.phases_gib["step"] + 1


def test_a_preference_stage_on_an_earlier_adapter_is_an_error(table, rules):
    # Axolotl 0.19 reads only that adapter's config for DPO/IPO/KTO: its weights would be dropped
    assert keys_of(combos(base_lora(rl="dpo", lora_model_dir="runs/sft/full/out"), table, rules), "error") == {"lora_model_dir"}
    assert combos(base_lora(lora_model_dir="runs/sft/full/out"), table, rules) == []   # SFT continues it
    assert combos(base_lora(rl="dpo", lora_model_dir="x", merge_lora=True), table, rules) == []


@pytest.mark.parametrize("extra,flagged", [
    ({"dpo_loss_type": ["sigmoid", "sft"], "dpo_loss_weights": [1.0]}, True),     # TRL's zip(strict=True) stops
    ({"dpo_loss_weights": [1.0, 0.5]}, True),                                        # one loss (sigmoid), two weights
    ({"dpo_loss_type": ["sigmoid", "sft"], "dpo_loss_weights": [1.0, 1.0]}, False),  # RPO: DPO + NLL
    ({"dpo_loss_type": ["sigmoid", "sft"]}, False),                                  # weights default to 1 each
    ({"dpo_loss_weights": [2.0]}, False),
])
def test_dpo_loss_weights_must_match_the_losses(table, rules, extra, flagged):
    found = [f for f in combos(base_lora(rl="dpo", **extra), table, rules) if f.key == "dpo_loss_weights"]
    assert bool(found) is flagged, found
    if flagged:
        assert found[0].severity == "error" and "one weight per DPO loss" in found[0].message
