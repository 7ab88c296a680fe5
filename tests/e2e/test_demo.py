"""The README's main job, end to end, offline, on a CPU: `llamaforge demo` in a fresh directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_llamaforge_demo_end_to_end(tmp_path):
    env = dict(os.environ, AXOLOTL_DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-m", "llamaforge", "demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    runs = tmp_path / "runs" / "leviathan-tiny"
    validate = json.loads((runs / "validate" / "report.json").read_text())
    full = json.loads((runs / "full" / "report.json").read_text())
    assert validate["passed"] and validate["health"]["passed"]
    assert full["passed"] and full["health"]["passed"] and not full["forced"]
    assert full["recipe"]["hash"] == validate["recipe"]["hash"]
    assert full["corpus"]["manifest_hash"] == validate["corpus"]["manifest_hash"]
    for stage in ("validate", "full"):
        png = (runs / stage / "loss_curve.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
        assert "axolotl.cli.train" in (runs / stage / "train.log").read_text()
    gates = {g["name"]: g for g in full["gates"]["gates"]}
    # the untrained base fails identity, the trained adapter passes it
    assert gates["identity"]["base_value"] <= 0.2 and gates["identity"]["value"] >= 0.9
    assert gates["identity"]["verdict"] == "pass"
    merge = json.loads((tmp_path / "build/demo/merged/merge_report.json").read_text())
    assert merge["passed"] and merge["max_abs_logit_diff"] <= merge["tolerance"]
    merged_gates = json.loads((runs / "merged-gates" / "results.json").read_text())
    assert merged_gates["passed"]
    assert "llamaforge demo: PASSED" in proc.stdout
