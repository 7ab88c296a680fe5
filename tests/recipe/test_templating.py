"""The quoting filters keep every name and path a scalar: nothing a user puts in a model path,
name or comment can add a YAML key."""

import json

import pytest
import yaml

from llamaforge.recipe.templating import comment_text, render_template, yaml_value
from llamaforge.recipe.request import deepspeed_filename

NASTY = [
    "meta-llama/Llama-3.1-8B-Instruct",
    "./models/llama 405b",
    "x\nadapter: lora",
    "x # comment",
    "key: value",
    "yes", "no", "null", "~", "true", "1e-5", "0x10", "012",
    "- item", "[a, b]", "{a: 1}", "&anchor", "*alias", "!tag", "%directive", "@at", "`tick`",
    "'single'", '"double"', "a\u2028adapter: lora", "a\x85b", "tab\there", "",
    "ünïcödé/路径",
]


@pytest.mark.parametrize("value", NASTY)
def test_yaml_value_round_trips_and_injects_nothing(value):
    doc = f"base_model: {yaml_value(value)}\nsafe: 1\n"
    assert yaml.safe_load(doc) == {"base_model": value, "safe": 1}


@pytest.mark.parametrize("value", [1e-5, 2.0e-4, 5e-05, 0.03, 3.0, 1e20, 0, 16, True, False, None])
def test_yaml_value_numbers_parse_as_numbers(value):
    assert yaml.safe_load(f"k: {yaml_value(value)}") == {"k": value}


def test_yaml_value_collections():
    value = ["q_proj", "v_proj", "x: y", "a\nb"]
    assert yaml.safe_load(f"k: {yaml_value(value)}") == {"k": value}
    mapping = {"role": "role", "weird: key": "v\n"}
    assert yaml.safe_load(f"k: {yaml_value(mapping)}") == {"k": mapping}


@pytest.mark.parametrize("value", NASTY)
def test_comment_text_cannot_end_the_comment(value):
    doc = f"# title: {comment_text(value)}\nsafe: 1\n"
    assert yaml.safe_load(doc) == {"safe": 1}


def test_deepspeed_template_is_valid_json_for_every_variant():
    for stage in (1, 2, 3):
        offloads = ("none", "optimizer", "params", "all") if stage == 3 else ("none", "optimizer")
        for offload in offloads:
            text = render_template("deepspeed/zero.json.j2", stage=stage,
                                   offload_optimizer=offload in ("optimizer", "all"),
                                   offload_param=offload in ("params", "all"), bf16=stage == 3)
            data = json.loads(text)
            zo = data["zero_optimization"]
            assert zo["stage"] == stage
            assert ("offload_optimizer" in zo) == (offload in ("optimizer", "all"))
            assert ("offload_param" in zo) == (offload in ("params", "all"))
            for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
                assert data[key] == "auto"
            assert deepspeed_filename(stage, offload).endswith(".json")


def test_zero2_cannot_offload_params():
    from llamaforge.errors import UserError

    with pytest.raises(UserError, match="only ZeRO-3"):
        deepspeed_filename(2, "params")
