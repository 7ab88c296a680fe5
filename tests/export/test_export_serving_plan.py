"""`export --serve-gpus`: the Modelfile and the vLLM script take their flags from the serving plan
for that hardware, the report records the plans, and an export whose server would not start there
is refused before anything is written."""

from __future__ import annotations

import json
import subprocess

from llamaforge.planning.catalog import get_gpu, get_model
from llamaforge.planning.serve_plan import ServeRequest, plan_serving, vllm_arguments

from .run_folder import make_run
from .test_export_serving import read_modelfile

HUB_8B = "meta-llama/Llama-3.1-8B-Instruct"


def test_an_adapter_on_a_12gb_card_gets_the_plans_flags_in_both_files(cli, launch, tmp_path):
    run = make_run(launch, base_model=HUB_8B, stage_overrides={"chat_template": "llama3"})
    res = cli("export", run, "--vllm", "--ollama", "--serve-gpus", "1xRTX4070S-12GB", "--serve-context", "4096")
    assert res.code == 0, res.err
    out = run / "export"

    # the same plan the command line gives for this request
    req = ServeRequest(model=get_model("llama-3.1-8b"), device=get_gpu("RTX4070S-12GB"), count=1, engine="vllm",
                       context=4096, max_loras=1, max_lora_rank=32)
    plan = plan_serving(req)
    assert plan.setup.weights == "fp8"            # bf16 8B (15 GiB) cannot fit a 12 GB card; fp8 can
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text('#!/usr/bin/env bash\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    (bin_dir / "vllm").chmod(0o755)
    done = subprocess.run(["bash", str(out / "serve_vllm.sh")], capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    argv = done.stdout.splitlines()
    assert argv[:2] == ["serve", HUB_8B]
    for flag, value in vllm_arguments(plan):
        assert flag in argv and (value is None or argv[argv.index(flag) + 1] == value), flag
    assert argv[argv.index("--max-model-len") + 1] == "4096" and argv[argv.index("--quantization") + 1] == "fp8"
    assert f'leviathan-tiny={out}/adapter' in argv

    modelfile = (out / "Modelfile").read_text()
    got = dict(read_modelfile(modelfile))
    assert got["PARAMETER num_ctx"] == "4096"
    ollama = plan_serving(ServeRequest(model=get_model("llama-3.1-8b"), device=get_gpu("RTX4070S-12GB"), engine="ollama",
                                       context=4096))
    quant = ollama.estimate.flags["quantization"]
    assert quant == "q8_0" and f"ollama create leviathan-tiny -q {quant} -f Modelfile" in modelfile
    report = json.loads((out / "export_report.json").read_text())
    assert report["ollama"]["create"] == f"ollama create leviathan-tiny -q {quant} -f Modelfile"
    assert report["serving_plans"]["vllm"]["setup"]["weights"] == "fp8"
    assert report["serving_plans"]["ollama"]["estimate"]["fits"] is True


def test_an_export_whose_server_would_not_start_is_refused_before_writing(cli, launch):
    run = make_run(launch, base_model="meta-llama/Llama-3.1-70B-Instruct", stage_overrides={"chat_template": "llama3"})
    res = cli("export", run, "--vllm", "--serve-gpus", "1xRTX4070S-12GB")
    assert res.code == 2
    assert "export refused: the vllm serving plan says the server would not start" in res.err
    assert "cheapest catalog hardware that serves it" in res.err
    assert not (run / "export").exists()


def test_vllm_on_a_mac_and_a_plan_without_serving_files_are_refused(cli, run):
    res = cli("export", run, "--vllm", "--serve-gpus", "1xM3Ultra-512GB")
    assert res.code == 2 and "vLLM needs CUDA GPUs" in res.err
    res = cli("export", run, "--serve-gpus", "1xRTX4090-24GB")
    assert res.code == 2 and "add --vllm and/or --ollama" in res.err
    assert not (run / "export").exists()
