"""The README's main job, end to end, offline, on a CPU: `llamaforge demo` in a fresh directory,
on the real SmolLM2-135M-Instruct. The gates are held out (tests/test_heldout_gates.py): the
untrained base fails identity, the tuned model passes it, general answers are kept and the persona
does not bleed into them; the health checks use the training guide's own thresholds."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

NAME = "leviathan-smollm2"


def _gates(report: dict) -> dict:
    """Gate name -> gate, from a stage report (its `gates` section) or a gates results.json (a list)."""
    gates = report["gates"]
    return {g["name"]: g for g in (gates["gates"] if isinstance(gates, dict) else gates)}


def test_the_demo_passes_and_prints_its_tables(demo_run):
    root, proc = demo_run
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    assert "llamaforge demo: PASSED" in proc.stdout
    assert "gates: base vs tuned" in proc.stdout


def test_validation_and_full_run_pass_health_with_the_guides_thresholds_and_their_gates(demo_run):
    root, _ = demo_run
    runs = root / "runs" / NAME
    validate = json.loads((runs / "validate" / "report.json").read_text())
    full = json.loads((runs / "full" / "report.json").read_text())
    for report, stage in ((validate, "validate"), (full, "full")):
        assert report["passed"] and report["health"]["passed"] and report["gates"]["passed"], stage
        assert report["gates"]["profile"] == ("demo-validate" if stage == "validate" else "demo")
        checks = {c["name"]: c for c in report["health"]["checks"]}
        # the guide's numbers, not relaxed: final loss < 1.5 / < 1.0, eval perplexity < 3 / < 2, gap 0.5
        assert checks["final_train_loss"]["threshold"] == (1.5 if stage == "validate" else 1.0)
        assert checks["eval_perplexity"]["threshold"] == (3.0 if stage == "validate" else 2.0)
        assert checks["not_overfitting"]["threshold"] == 0.5
        png = (runs / stage / "loss_curve.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
        md = (runs / stage / "report.md").read_text()
        assert "![loss curve](loss_curve.png)" in md and "| gate | verdict | tuned | base | target | detail |" in md
    assert not full["forced"] and full["recipe"]["hash"] == validate["recipe"]["hash"]
    assert full["corpus"]["manifest_hash"] == validate["corpus"]["manifest_hash"]


def test_the_base_fails_identity_and_the_tuned_model_passes_it_without_losing_general_answers(demo_run):
    root, _ = demo_run
    full = _gates(json.loads((root / "runs" / NAME / "full" / "report.json").read_text()))
    assert full["identity"]["base_value"] <= 0.1 and full["identity"]["value"] >= 0.9
    assert full["persona_bleed"]["value"] <= 0.10 and full["persona_bleed"]["base_value"] == 0
    for name in ("inference_suite", "general_answers", "humaneval"):
        assert full[name]["verdict"] == "pass", full[name]["reason"]
        assert full[name]["base_value"] is not None
    assert full["general_answers"]["value"] >= 0.5


def test_the_merged_model_is_verified_exported_and_passes_the_gates(demo_run):
    root, _ = demo_run
    demo = root / "build" / "demo"
    merge = json.loads((demo / "merged" / "merge_report.json").read_text())
    assert merge["passed"] and merge["max_abs_logit_diff"] <= merge["tolerance"]
    assert merge["adapter_effect"] > 0
    merged = json.loads((root / "runs" / NAME / "merged-gates" / "results.json").read_text())
    assert merged["passed"] and merged["base_model"].endswith("build/demo/model")
    assert _gates(merged)["identity"]["value"] >= 0.9
    export = json.loads((demo / "export" / "export_report.json").read_text())
    assert export["merge"]["passed"] and export["ollama"] and export["vllm"]
    modelfile = [ln for ln in (demo / "export" / "Modelfile").read_text().splitlines() if ln and not ln.startswith("#")]
    assert modelfile[0].startswith("FROM ")      # after the header comment, the first instruction
    assert "vllm" in (demo / "export" / "serve_vllm.sh").read_text()
    # build/demo/model stays the base: the same bytes as the converted model
    base = json.loads((demo / "model" / "llamaforge.json").read_text())
    assert base["catalog_model"] == "smollm2-135m"


def test_the_demo_reports_its_timings_and_memory(demo_run):
    root, _ = demo_run
    report = json.loads((root / "build" / "demo" / "demo_report.json").read_text())
    names = [s["name"] for s in report["steps"]]
    assert names == ["1. corpus", "2. model", "3. recipe", "4. validate (sample) + gates", "5. full run + gates",
                     "6. merge + verify + export", "7. gates on the merged model"]
    assert all(s["ok"] and s["seconds"] >= 0 and s["peak_rss_gib"] > 0 for s in report["steps"])
    rows = {r["gate"]: r for r in report["gates_base_vs_tuned"]}
    assert rows["identity"]["base"] <= 0.1 and rows["identity"]["merged"] >= 0.9
    md = (root / "build" / "demo" / "demo_report.md").read_text()
    assert "| step | result | seconds | peak RSS so far (GiB) | detail |" in md and "## Gates: base vs tuned" in md
