"""`llamaforge check` with Axolotl 0.19's own validation. One worker subprocess serves the whole
module (importing Axolotl costs ~6 s); the stored schema snapshot is proved equal to the live one,
and the rule that `adapter: lora` + `load_in_4bit` loads an unquantized fp32 base is proved by
loading the tiny model with Axolotl's own ModelLoader."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("axolotl", reason="Axolotl (the train extra) is not installed")

from llamaforge.check.axolotl_schema import installed_version, load_snapshot, run_schema  # noqa: E402
from llamaforge.check.findings import check_configs  # noqa: E402

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).parent.parent / "fixtures" / "configs"
NAMES = [
    "issue2-405b-lora-8xH100", "liger-plugin", "clean-8b-qlora", "typos-8b-lora", "deepspeed-and-fsdp",
    "deepspeed-batch-mismatch", "packing-without-attention", "lora-kernels-fsdp1",
]
IGNORED_405B = {"bnb_4bit_compute_dtype", "bnb_4bit_use_double_quant", "bnb_4bit_quant_type", "push_to_hub"}


@pytest.fixture(scope="module")
def checked():
    runs = []

    def recording_runner(requests, **kwargs):
        runs.append(run_schema(requests, **kwargs))
        return runs[-1]

    reports = check_configs([CONFIGS / f"{n}.yaml" for n in NAMES], hardware="8xH100-80GB",
                            schema_runner=recording_runner)
    assert len(runs) == 1 and runs[0].failure is None, runs and runs[0].failure
    return dict(zip(NAMES, reports)), runs[0]


def by_severity(report, severity):
    return {f.key for f in report.findings if f.severity == severity}


def schema_errors(report):
    return [f for f in report.findings if "rejects the config" in f.message]


def test_issue_405b_config_gets_exactly_the_expected_findings(checked):
    report = checked[0]["issue2-405b-lora-8xH100"]
    assert schema_errors(report) == []  # Axolotl's own validation accepts it...
    # ...yet four keys are ignored, lora + load_in_4bit quantizes nothing, and base_model is a local path
    # that does not exist here, so nothing says which model it is: memory is not judged (test_check.py
    # prices it with --model llama-3.1-405b: it does not fit)
    assert by_severity(report, "error") == IGNORED_405B | {"load_in_4bit", "base_model"}
    assert {"model_type", "lora_target_modules"} <= by_severity(report, "warning")
    assert report.estimate is None
    assert any("memory not judged: unknown model" in f.message for f in report.findings if f.severity == "warning")
    deprecated = next(f for f in report.findings if f.key == "flash_attention")
    assert deprecated.severity == "warning" and "attn_implementation: flash_attention_2" in deprecated.message
    assert not report.ok


def test_clean_config_passes(checked):
    report = checked[0]["clean-8b-qlora"]
    assert report.ok, [f.message for f in report.errors]
    assert by_severity(report, "warning") == set()


def test_typos_named_with_did_you_mean_and_axolotl_error_names_the_key(checked):
    report = checked[0]["typos-8b-lora"]
    messages = {f.key: f.message for f in report.findings}
    assert "`lora_r`" in messages["lora_rank"] and "`learning_rate`" in messages["learning_rat"]
    assert "`field_messages`" in messages["datasets[0].feild_messages"]
    # learning_rate is required, so Axolotl itself rejects the config, naming the key
    assert [f.key for f in schema_errors(report)] == ["learning_rate"]


def test_capabilities_reach_axolotl(checked):
    # check_multigpu_lora_kernels only exists with capabilities; it needs n_gpu > 1 to fire.
    report = checked[0]["lora-kernels-fsdp1"]
    (err,) = schema_errors(report)
    assert err.key == "lora_mlp_kernel" and "FSDP1" in err.message


def test_combinations_axolotl_accepts_but_check_flags(checked):
    ds_fsdp = checked[0]["deepspeed-and-fsdp"]
    assert schema_errors(ds_fsdp) == []
    assert {"deepspeed", "fsdp_config.auto_wrap_polcy"} <= by_severity(ds_fsdp, "error")
    assert "fsdp_config.fsdp_offload_params" in by_severity(ds_fsdp, "warning")
    batch = checked[0]["deepspeed-batch-mismatch"]
    assert schema_errors(batch) == []
    assert any("train_batch_size=4" in f.message and "= 32" in f.message for f in batch.errors)
    packing = checked[0]["packing-without-attention"]
    assert packing.ok and by_severity(packing, "warning") == {"sample_packing"}


def test_plugin_keys_are_known_once_the_plugin_is_loaded(checked):
    report = checked[0]["liger-plugin"]
    assert schema_errors(report) == []
    assert by_severity(report, "error") == {"liger_rms_nrom"}
    assert "`liger_rms_norm`" in next(f.message for f in report.findings if f.key == "liger_rms_nrom")


def test_stored_snapshot_equals_the_live_schema(checked):
    live = checked[1].table
    assert live["axolotl_version"] == installed_version("axolotl")
    stored = load_snapshot(live["axolotl_version"])
    assert stored is not None, "no snapshot for the installed Axolotl: python -m llamaforge.check.axolotl_schema --write-snapshot"
    assert stored == live


def test_the_facts_behind_two_rules_on_the_tiny_model(tmp_path):
    """Run Axolotl's own loader on the tiny model (CPU) to keep two rules honest:
    `lora-with-load-in-4bit`: adapter lora + load_in_4bit builds no quantization and leaves the
    decoder linears in fp32; `lora-kernels-on-cpu`: the LoRA kernels Axolotl switches on by itself
    fail on the first forward without CUDA, and the same config with them off trains."""
    script = textwrap.dedent(f"""
        import collections, json, torch, yaml
        from llamaforge.models.tiny import create_tiny_model
        from axolotl.cli.config import load_cfg
        from axolotl.loaders import ModelLoader, load_tokenizer
        tiny = {str(tmp_path / 'tiny')!r}
        create_tiny_model(tiny, ["a small corpus of words"] * 20)
        off = dict(lora_mlp_kernel=False, lora_qkv_kernel=False, lora_o_kernel=False, lora_embedding_kernel=False)

        def load(name, **extra):
            cfg = dict(base_model=tiny, adapter="lora", lora_r=4, lora_alpha=8, lora_target_linear=True,
                       learning_rate=1e-4, bf16=True, datasets=[dict(path="x.jsonl", type="alpaca")],
                       sequence_len=64, micro_batch_size=1, gradient_accumulation_steps=1,
                       output_dir={str(tmp_path / 'out')!r}, **extra)
            path = {str(tmp_path)!r} + "/" + name + ".yaml"
            open(path, "w").write(yaml.safe_dump(cfg))
            cfg = load_cfg(path)
            return ModelLoader(cfg, load_tokenizer(cfg)).load()[0]

        def forward_error(model):
            ids = torch.randint(0, 500, (1, 16))
            try:
                model(input_ids=ids, labels=ids).loss.backward()
                return None
            except Exception as exc:
                return f"{{type(exc).__name__}}: {{exc}}"

        four = load("four", load_in_4bit=True, **off)
        dtypes = collections.defaultdict(set)
        for name, p in four.named_parameters():
            kind = "lora" if "lora_" in name else "linear" if name.endswith("proj.base_layer.weight") else "other"
            dtypes[kind].add(str(p.dtype))
        print(json.dumps({{
            "quantized": getattr(four.config, "quantization_config", None) is not None,
            "dtypes": {{k: sorted(v) for k, v in dtypes.items()}},
            "kernels_off": forward_error(load("off", **off)),
            "kernels_auto": forward_error(load("auto")),  # last: it patches LlamaAttention for the process
        }}))
    """)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", AXOLOTL_DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["quantized"] is False
    assert result["dtypes"]["linear"] == ["torch.float32"]
    assert result["kernels_auto"] is not None and "CUDA" in result["kernels_auto"]
    assert result["kernels_off"] is None
