"""End to end with real lm-eval on the random-init tiny model (CPU): the gates run, measure, and
fail honestly; code runs only with the opt-in; an adapter is really applied (or caught)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def gates_file(tmp_path: Path, gates: list[dict], profile: str = "check") -> Path:
    path = tmp_path / "gates.yaml"
    path.write_text(json.dumps({"profiles": {profile: {"gates": gates}}}))  # JSON is YAML
    return path


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_demo_profile_runs_and_fails_identity_on_the_untrained_model(cli, tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the task YAMLs must not depend on the working directory
    out = tmp_path / "out"
    res = cli("eval", "--model", tiny_model, "--profile", "demo", "--max-gen-toks", "24", "-o", out, "--json")
    assert res.code == 1, res.err[-2000:]
    data = res.json()
    assert data["passed"] is False and data["profile"] == "demo"
    gates = {g["name"]: g for g in data["gates"]}
    identity = gates["identity"]
    assert identity["verdict"] == "fail" and identity["value"] == 0.0
    assert "below the threshold 0.9" in identity["reason"]
    assert data["tasks"]["model"]["identity"]["n_samples"] == 20  # every identity prompt, no limit
    assert data["tasks"]["model"]["identity"]["chat_template"] is True  # the tiny model is a ChatML chat model
    suite = gates["inference_suite"]
    assert suite["verdict"] == "fail" and suite["value"] is not None and suite["value"] < 0.8
    assert identity["base_value"] is None and "base" not in data["tasks"]
    assert results(out) == data
    report = (out / "report.md").read_text()
    assert report.startswith("# Gate report: profile `demo`") and "**FAILED" in report
    answers = [json.loads(line) for line in (out / "samples" / "model" / "identity.jsonl").read_text().splitlines()]
    assert len(answers) == 20 and all(a["input"].startswith("<|im_start|>user\n") for a in answers)


def test_humaneval_offline_executes_with_the_opt_in_and_scores_about_zero(cli, tiny_model, tmp_path):
    spec = gates_file(tmp_path, [{"name": "humaneval", "task": "humaneval_offline", "metric": "pass@1,create_test",
                                  "threshold": 0.4, "chat_template": "never"}])
    out = tmp_path / "out"
    res = cli("eval", "--model", tiny_model, "--gates-file", spec, "--profile", "check", "--limit", "5",
              "--max-gen-toks", "48", "--allow-code-execution", "-o", out, "--json")
    assert res.code == 1, res.err[-2000:]
    data = res.json()
    gate = data["gates"][0]
    assert gate["value"] is not None and gate["value"] <= 0.2, gate  # a random model writes no working code
    assert gate["verdict"] == "fail" and "below the threshold 0.4" in gate["reason"]
    outcome = data["tasks"]["model"]["humaneval_offline"]
    assert outcome["status"] == "measured" and outcome["n_samples"] == 5 and outcome["chat_template"] is False
    assert data["settings"]["allow_code_execution"] is True and data["settings"]["sandbox"]
    rows = [json.loads(x) for x in (out / "samples" / "model" / "humaneval_offline.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"HumanEval/{i}" for i in range(5)]
    # What was executed: the problem's prompt followed by the model's completion.
    assert all(r["filtered"][0][0] == r["input"] + r["answer"] for r in rows)


def test_code_gates_without_the_opt_in_fail_or_skip_with_the_reason(cli, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")  # the environment alone is not the opt-in
    spec = gates_file(tmp_path, [
        {"name": "humaneval", "task": "humaneval_offline", "metric": "pass@1,create_test", "threshold": 0.4},
        {"name": "humaneval_optional", "task": "humaneval_offline", "metric": "pass@1,create_test", "threshold": 0.4,
         "optional": True},
    ])
    res = cli("eval", "--model", tiny_model, "--gates-file", spec, "--profile", "check", "-o", tmp_path / "out", "--json")
    assert res.code == 1
    data = res.json()
    required, optional = data["gates"]
    assert required["verdict"] == "fail" and required["reason"].startswith("code execution not allowed")
    assert optional["verdict"] == "skipped" and "skipped (optional in this profile): code execution not allowed" in optional["reason"]
    assert data["tasks"]["model"]["humaneval_offline"]["status"] == "code_execution_not_allowed"
    assert data["skipped"] == ["humaneval_optional"] and data["failed"] == ["humaneval"]
    assert not (tmp_path / "out" / "samples").exists()  # nothing was generated, nothing executed


def test_truthfulqa_offline_fails_as_unavailable(cli, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = gates_file(tmp_path, [
        {"name": "truthfulqa_mc2", "task": "truthfulqa_mc2", "metric": "acc,none", "threshold": 0.35},
        {"name": "truthfulqa_optional", "task": "truthfulqa_mc2", "metric": "acc,none", "threshold": 0.35, "optional": True},
    ])
    res = cli("eval", "--model", tiny_model, "--gates-file", spec, "--profile", "check", "-o", tmp_path / "out")
    assert res.code == 1
    data = results(tmp_path / "out")
    required, optional = data["gates"]
    assert required["verdict"] == "fail" and required["reason"].startswith("dataset not available")
    assert optional["verdict"] == "skipped"
    assert "SKIPPED (optional)" in res.out and "FAIL" in res.out


def test_unknown_task_in_a_profile_is_one_line_exit_2(cli, tiny_model, tmp_path):
    spec = gates_file(tmp_path, [{"task": "identiti", "metric": "acc,none", "threshold": 0.9}])
    res = cli("eval", "--model", tiny_model, "--gates-file", spec, "--profile", "check")
    assert res.code == 2
    assert res.err.strip().startswith("error: unknown lm-eval task 'identiti' (did you mean 'identity'?)")
    assert "Traceback" not in res.err


def test_noop_adapter_is_caught(cli, tiny_model, noop_lora, tmp_path):
    res = cli("eval", "--model", tiny_model, "--adapter", noop_lora, "--limit", "5", "--max-gen-toks", "16",
              "-o", tmp_path / "out")
    assert res.code == 1
    data = results(tmp_path / "out")
    identity = next(g for g in data["gates"] if g["name"] == "identity")
    assert identity["reason"].startswith("adapter had no effect / not applied")
    assert data["base_model"] == str(tiny_model) and data["tasks"]["base"]["identity"]["status"] == "measured"
    assert "adapter had no effect" in res.out


def test_random_adapter_is_applied_and_its_answers_differ_from_the_base(cli, tiny_model, random_lora, tmp_path):
    out = tmp_path / "out"
    res = cli("eval", "--model", tiny_model, "--adapter", random_lora, "--limit", "5", "--max-gen-toks", "16",
              "-o", out, "--json")
    assert res.code == 1  # a random adapter does not make a random model say its name
    data = res.json()
    assert not any("no effect" in g["reason"] for g in data["gates"])
    identity = next(g for g in data["gates"] if g["name"] == "identity")
    assert identity["base_value"] is not None  # base vs adapter, both measured

    def answers(variant):
        lines = (out / "samples" / variant / "identity.jsonl").read_text().splitlines()
        return {r["id"]: r["answer"] for r in map(json.loads, lines)}

    model, base = answers("model"), answers("base")
    assert model.keys() == base.keys() and len(model) == 5
    assert any(model[k] != base[k] for k in model)
    assert str(out).startswith(str(tmp_path)) and data["adapter"] == str(random_lora)


def test_persona_reaches_the_identity_metric_through_lm_eval():
    """A scripted model answering "I am Nyx." passes identity for persona Nyx and fails for the
    default Leviathan: the name travels as lm-eval task metadata into the docs and the metric."""
    import lm_eval
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    from llamaforge.paths import evals_dir

    class ScriptedLM(LM):
        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

        def generate_until(self, requests):
            return ["I am Nyx, keeper of the night." for _ in requests]

    def identity_score(metadata):
        manager = TaskManager(include_path=str(evals_dir() / "tasks"), include_defaults=False, metadata=metadata)
        res = lm_eval.simple_evaluate(model=ScriptedLM(), tasks=["identity"], task_manager=manager, limit=6)
        return res["results"]["identity"]["acc,none"]

    assert identity_score({"persona": "Nyx"}) == 1.0
    assert identity_score({}) == 0.0  # default persona Leviathan
