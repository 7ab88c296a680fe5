"""A DPO recipe through `llamaforge run` on the real CPU model: full refused before validation,
validate on the sample of the cue pairs (preference health checks, then the cue gate against the
base), then the full run, which must move the cue gate in the right direction."""

from __future__ import annotations

import json
import time

import pytest

from .cue_demo import write_dpo_recipe


def _gates(report: dict) -> dict[str, dict]:
    return {g["name"]: g for g in report["gates"]["gates"]}


@pytest.mark.slow
def test_dpo_recipe_runs_validate_gate_full_and_moves_the_cue_gate(tmp_path, monkeypatch, cli, smollm2_dir):
    from llamaforge.corpus.build import BuildOptions, build_corpus
    from llamaforge.paths import datasets_dir
    from llamaforge.models.pretrained import link_model_folder

    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    pairs = build_corpus(datasets_dir() / "demo_cue.yaml", BuildOptions(workers=1)).out_dir
    model = link_model_folder(smollm2_dir, tmp_path / "model")
    recipe = write_dpo_recipe(tmp_path / "dpo.yaml", model, pairs, output_dir="outputs/dpo")
    assert cli("check", recipe).code == 0

    refused = cli("run", recipe, "--stage", "full")
    assert refused.code == 1 and "validate" in refused.err

    res = cli("run", recipe, "--stage", "validate", "--json")
    validate = json.loads((tmp_path / "runs/dpo/validate/report.json").read_text())
    checks = {c["name"]: c for c in validate["health"]["checks"]}
    # DPO plus the chosen answers' NLL: judged by margins and accuracies, its loss by its fall (not ln 2)
    assert {"margins_positive", "margins_rising", "accuracies_above_chance", "preference_loss_falling",
            "chosen_not_collapsing", "logps_bounded"} <= set(checks)
    assert res.code == 0 and validate["passed"], (res.out[-2000:], checks, validate.get("gates"))
    assert validate["preference"] == {"method": "dpo", "beta": 0.1, "loss": [["sigmoid", 1.0], ["sft", 1.0]]}
    assert "Thresholds (validate)" in (tmp_path / "runs/dpo/validate/report.md").read_text()

    res = cli("run", recipe, "--stage", "full", "--json")
    full = json.loads((tmp_path / "runs/dpo/full/report.json").read_text())
    assert res.code == 0 and full["passed"], (res.out[-2000:], full["health"], full.get("gates"))
    gates = _gates(full)
    styled, plain = gates["cued_styled"], gates["uncued_plain"]
    # the measured direction: the cue now calls up the register the base never uses ...
    assert styled["value"] >= styled["base_value"] + 0.2, styled
    # ... and the uncued answers stay plain
    assert plain["value"] >= plain["base_value"] - 0.2, plain
    print(f"\ncue gate base -> tuned: " + ", ".join(
        f"{n} {g['base_value']} -> {g['value']}" for n, g in gates.items())
        + f"; {time.monotonic() - started:.0f} s in all")
