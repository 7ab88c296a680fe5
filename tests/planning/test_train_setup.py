import pytest

from llamaforge.planning.catalog import get_model, parse_hardware
from llamaforge.errors import UserError
from llamaforge.planning.train_setup import ALL_LINEAR, ATTN_LINEAR, TrainSetup, parse_lora_targets


def setup(**kw):
    return TrainSetup(model=get_model("llama-3.1-8b"), hardware=parse_hardware("8xH100-80GB"), **kw)


def test_lora_param_count_llama3_8b_r16_all_linear():
    # Known figure: Llama-3-8B, r=16 on all 7 linear layers = 41,943,040 trainable (PEFT's
    # print_trainable_parameters on meta-llama/Meta-Llama-3-8B).
    assert setup(method="lora", lora_r=16).lora_param_count() == 41_943_040


def test_lora_param_count_attn_only():
    s = setup(method="lora", lora_r=8, lora_targets=ATTN_LINEAR)
    # q: 8*(4096+4096), k,v: 8*(4096+1024), o: 8*(4096+4096) per layer
    assert s.lora_param_count() == 32 * 8 * (8192 + 5120 + 5120 + 8192)


def test_global_batch_is_micro_times_accum_times_world():
    s = setup(micro_batch=2, grad_accum=4)
    assert s.global_batch == 2 * 4 * 8
    assert s.tokens_per_step == 64 * 2048


def test_defaults_by_method():
    assert setup(method="qlora").weight_format == "nf4_dq"
    assert setup(method="full").weight_format == "bf16"
    assert setup(method="full").trainable_params() == 8_030_261_248
    assert setup(method="lora", lora_r=8).alpha == 16


@pytest.mark.parametrize("text,expected", [
    ("all", ALL_LINEAR), ("attn", ATTN_LINEAR), ("v_proj,q_proj", ("q_proj", "v_proj")),
])
def test_parse_targets(text, expected):
    assert parse_lora_targets(text) == expected


def test_bad_values_are_user_errors():
    with pytest.raises(UserError, match="unknown LoRA target"):
        parse_lora_targets("q_proj,w_proj")
    with pytest.raises(UserError, match="unknown method"):
        setup(method="dora")
    with pytest.raises(UserError, match="unknown parallelism"):
        setup(parallel="zero4")
