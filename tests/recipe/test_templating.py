"""The quoting filters keep every name and path a scalar: nothing a user puts in a model path,
name or comment can add a YAML key."""

import json

import pytest
import yaml

import re

from llamaforge.recipe.templating import comment_text, dump_yaml, render_template, yaml_value
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


class _Yaml12Floats(yaml.SafeLoader):
    """A reader that takes `1e3` for a number, as YAML 1.2 does and as mlx_lm.lora makes PyYAML's
    SafeLoader do for the whole process once imported."""


_Yaml12Floats.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?$|^[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)$"),
    list("-+0123456789."))


@pytest.mark.parametrize("text", ["1e3", "1E-5", ".5e2", "1_000", "0o17", "0x1F", "+1.5"])
def test_number_like_strings_stay_strings_for_a_yaml_1_2_reader(text):
    assert yaml.load(f"k: {yaml_value(text)}", Loader=_Yaml12Floats) == {"k": text}
    assert yaml.load(dump_yaml({"k": [text]}), Loader=_Yaml12Floats) == {"k": [text]}
    assert yaml.safe_load(dump_yaml({"k": text})) == {"k": text}
    assert yaml.safe_load(dump_yaml({"lr": 1e-5}))["lr"] == 1e-5     # numbers stay numbers


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
