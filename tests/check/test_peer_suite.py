"""`llamaforge check` on a peer suite: the 250 example configs of Axolotl's own repository
(tests/fixtures/axolotl_examples, with Axolotl 0.19's verdict on each recorded in verdicts.yaml by
record_verdicts.py, which runs Axolotl's validate_config and finds the keys its schema drops
without LlamaForge's code).

Asserted, as docs/check.md promises:
- no false error: an error only where Axolotl rejects the config, where a key Axolotl drops sets
  something Axolotl will not do, or where memory does not fit for the right model;
- no miss: every key Axolotl drops is reported (an error where a setting is lost), and every
  config Axolotl rejects gets an error (the slow test, which runs Axolotl's validation);
- every multi-GPU example, checked on its `gpus`, gets a memory verdict for the architecture it
  trains or an explicit "memory not judged" warning, never a price for another model;
- the long-context examples are priced with their context/tensor parallelism.

The fast test checks the keys against the stored schema (--no-schema); the slow one runs Axolotl,
once per hardware group (a few processes for 250 files: the documented way to check a folder)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from llamaforge.check.findings import check_configs, load_rules
from llamaforge.check.reader import NOT_JUDGED

SUITE = Path(__file__).parent.parent / "fixtures" / "axolotl_examples"
VERDICTS = yaml.safe_load((SUITE / "verdicts.yaml").read_text(encoding="utf-8"))
EXAMPLES: dict[str, dict] = VERDICTS["examples"]
MULTI_GPU = {name: e for name, e in EXAMPLES.items() if "gpus" in e}

# The architecture each multi-GPU example's base_model is, written down by hand from the Hub ids
# (None: no catalog model has its architecture, so memory must be "not judged").
ARCHITECTURE = {
    "meta-llama/Llama-3.1-8B": "llama-3.1-8b", "NousResearch/Meta-Llama-3.1-8B": "llama-3.1-8b",
    "NousResearch/Llama-2-7b-hf": "llama-2-7b", "NousResearch/Llama-3.2-1B": "llama-3.2-1b",
    "meta-llama/Llama-3.2-3B": "llama-3.2-3b", "casperhansen/llama-3-70b-fp16": "llama-3.1-70b",
    "hugging-quants/Meta-Llama-3.1-405B-BNB-NF4-BF16": "llama-3.1-405b",
    "Qwen/Qwen2-7B": "qwen2.5-7b", "Qwen/Qwen2.5-0.5B": "qwen2.5-0.5b", "Qwen/Qwen2.5-72B": "qwen2.5-72b",
    "Qwen/Qwen3-8B": "qwen3-8b", "Skywork/Skywork-Reward-V2-Qwen3-8B": "qwen3-8b",
    "Qwen/Qwen3-30B-A3B-Instruct-2507": "qwen3-30b-a3b",
    "mistralai/Mixtral-8x7B-v0.1": "mixtral-8x7b", "mistral-community/Mixtral-8x22B-v0.1": "mixtral-8x22b",
    "microsoft/Phi-3-mini-4k-instruct": "phi-3-mini",
    "google/gemma-3-12b-it": "gemma-3-12b", "google/gemma-3-27b-it": "gemma-3-27b",
    "openai/gpt-oss-20b": "gpt-oss-20b", "axolotl-ai-co/gpt-oss-120b-dequantized": "gpt-oss-120b",
    # architectures the estimate has no terms for, or no sourced constants
    "LnL-AI/dbrx-base-converted-v2": None, "Mapika/GLM-5.2-NVFP4": None, "MiniMaxAI/MiniMax-M2": None,
    "Qwen/Qwen3.5-122B-A10B": None, "Qwen/Qwen3.5-27B": None, "Qwen/Qwen3.5-35B-A3B": None,
    "ai21labs/AI21-Jamba-1.5-Large": None, "ai21labs/Jamba-v0.1": None,
    "axolotl-ai-co/Falcon-E-1.2-3B-Exp-prequantized": None, "tiiuae/Falcon-E-3B-Base-prequantized": None,
    "axolotl-ai-co/Mistral-Small-4-119B-2603-BF16": None, "axolotl-quants/DeepSeek-V2.5-bnb-nf4-bf16": None,
    "deepseek-ai/DeepSeek-V2-Lite": None, "nvidia/DeepSeek-V4-Flash-NVFP4": None,
    "axolotl-quants/Llama-4-Maverick-17B-128E-Linearized-bnb-nf4-bf16": None,
    "axolotl-quants/Llama-4-Scout-17B-16E-Linearized-bnb-nf4-bf16": None,
    "mistralai/Magistral-Small-2506": None, "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16": None,
    "zai-org/GLM-4.7-Flash": None,
}


def config_of(name: str) -> dict:
    return yaml.safe_load((SUITE / "examples" / name).read_text(encoding="utf-8"))


def run_suite(schema: bool) -> dict:
    """Check every example in one call (one Axolotl process: the way to check a folder), the
    single-GPU ones without hardware, the multi-GPU ones on their `gpus`, from the examples' root
    (where their deepspeed_configs/ paths point)."""
    import os

    names = list(EXAMPLES)
    before = Path.cwd()
    os.chdir(SUITE)
    try:
        done = check_configs([Path("examples") / n for n in names], hardware=[EXAMPLES[n].get("gpus") for n in names],
                             schema=schema)
        return dict(zip(names, done))
    finally:
        os.chdir(before)


@lru_cache(maxsize=2)
def suite(schema: bool) -> dict:
    return run_suite(schema)


def _normal(path: str) -> str:
    """fsdp_config.fsdp_limit_all_gathers -> fsdp_config.limit_all_gathers (Axolotl strips the prefix)."""
    head, _, key = path.rpartition(".")
    return f"{head}.{key[5:]}" if head == "fsdp_config" and key.startswith("fsdp_") else path


PLUGIN_CAVEAT = "unless one of the config's plugins defines it"


def ignored_findings(report, *, caveats: bool = False) -> dict:
    """The keys check says Axolotl drops. Without Axolotl (--no-schema) a plugin's keys cannot be
    told apart from unknown ones: those warn with the plugin caveat, left out unless `caveats`."""
    return {_normal(f.key): f for f in report.findings
            if "silently ignores it" in f.message and (caveats or PLUGIN_CAVEAT not in f.message)}


# ---- the suite itself ------------------------------------------------------------------------------


def test_the_suite_is_axolotls_examples_with_its_verdicts():
    files = sorted(p.relative_to(SUITE / "examples").as_posix() for p in (SUITE / "examples").rglob("*.y*ml"))
    assert files == sorted(EXAMPLES) and len(files) == 250
    assert VERDICTS["axolotl_version"] == load_rules()["axolotl_version"]
    assert sum(e["axolotl"] == "rejected" for e in EXAMPLES.values()) >= 15
    assert sum(bool(e.get("ignored")) for e in EXAMPLES.values()) >= 60
    assert len(MULTI_GPU) == 68
    assert {config_of(n).get("base_model") for n in MULTI_GPU} == set(ARCHITECTURE)


# ---- keys ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_key_axolotl_drops_is_reported_and_no_other(name):
    report, entry = suite(False)[name], EXAMPLES[name]
    sure, found = ignored_findings(report), ignored_findings(report, caveats=True)
    dropped = {_normal(k): v for k, v in (entry.get("ignored") or {}).items()}
    unverified = tuple(entry.get("unverified", ()))   # keys of a rejected config the oracle could not look under
    extra = {k for k in set(sure) - set(dropped) if not k.split(".")[0].split("[")[0] in unverified}
    assert not extra, extra                                               # no key Axolotl keeps is called ignored
    assert set(dropped) <= set(found), set(dropped) - set(found)        # every key it drops is reported
    for path, value in dropped.items():
        finding = found[path]
        if PLUGIN_CAVEAT in finding.message:
            assert finding.severity == "warning"                         # the slow test settles these with Axolotl
        elif value in (None, "", [], {}):
            assert finding.severity == "warning" and "empty" in finding.message, finding
        elif finding.severity == "warning":
            # only where the value is what Axolotl does anyway, and the warning says so
            assert "nothing is lost" in finding.message and "what Axolotl does anyway" in finding.message, finding
        else:
            assert finding.severity == "error", finding


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_no_false_error(name):
    report, entry = suite(False)[name], EXAMPLES[name]
    dropped = {_normal(k) for k in (entry.get("ignored") or {})}
    for f in report.errors:
        if "silently ignores it" in f.message:
            assert _normal(f.key) in dropped or f.key.split(".")[0] in entry.get("unverified", ()), f
        elif f.key == "memory":
            assert "does not fit" in f.message and report.setup is not None, f
            assert ARCHITECTURE.get(config_of(name).get("base_model")) == report.setup.model.id, f
        elif f.key == "evals_per_epoch":
            # Axolotl keeps eval_steps = 1 / (evals_per_epoch x num_epochs) only below 1: an eval set
            # that nothing schedules an evaluation of (axolotl/utils/config/__init__.py normalize_config)
            assert _never_evaluates(config_of(name)), f
        elif "is deprecated" in f.message:
            # a removed key: Axolotl rejects the config for it
            assert entry["axolotl"] == "rejected" and any(f.key in e for e in entry["errors"]), f
        else:
            pytest.fail(f"unexpected error on {name}: {f.key}: {f.message}")


def _never_evaluates(cfg: dict) -> bool:
    """The oracle of the evals rule, written from Axolotl's code independently of check's."""
    has_eval_set = bool(cfg.get("val_set_size")) or bool(cfg.get("test_datasets"))
    scheduled = cfg.get("eval_steps") or cfg.get("eval_strategy")
    product = float(cfg.get("evals_per_epoch") or 0) * float(cfg.get("num_epochs") or 1)
    return has_eval_set and not scheduled and 0 < product <= 1


def test_every_example_that_never_evaluates_its_eval_set_is_an_error():
    reports = suite(False)
    flagged = {n for n in EXAMPLES if any(f.key == "evals_per_epoch" for f in reports[n].errors)}
    assert flagged == {n for n in EXAMPLES if _never_evaluates(config_of(n))}
    assert len(flagged) >= 30          # 37 of Axolotl 0.19's examples hold out rows nothing evaluates


def test_the_issues_examples():
    reports = suite(False)
    # empty unknown keys lose nothing: warnings
    btlm = {f.key: f for f in reports["archived/cerebras/btlm-ft.yml"].findings}
    assert btlm["gptq_groupsize"].severity == btlm["gptq_model_v1"].severity == "warning"
    assert btlm["adam_eps"].severity == "error" and "adam_epsilon" in btlm["adam_eps"].message
    # FSDP2 keys whose value is FSDP's default behaviour: warnings that say so
    sharding = reports["qwen3/qlora-fsdp.yaml"].findings
    assert [f.severity for f in sharding if f.key.endswith("sharding_strategy")] == ["warning"]
    # the typo that loses context parallelism is an error with the right suggestion
    typo = next(f for f in reports["falcon-h1/falcon-h1-1b-qlora-cp.yaml"].findings if f.key == "context_parapllel_size")
    assert typo.severity == "error" and "context_parallel_size" in typo.message
    # a removed key is reported once
    pythia = [f for f in reports["archived/pythia-12b/config.yml"].findings if f.key == "max_packed_sequence_len"]
    assert len(pythia) == 1 and pythia[0].severity == "error"


# ---- memory on the multi-GPU examples -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MULTI_GPU))
def test_multi_gpu_examples_are_priced_as_their_own_architecture_or_not_judged(name):
    report = suite(False)[name]
    want = ARCHITECTURE[config_of(name).get("base_model")]
    memory = [f for f in report.findings if f.key == "memory" or NOT_JUDGED in f.message]
    if want is None:
        assert report.estimate is None, f"{name} priced as {report.setup.model.id}"
        assert any(f.severity == "warning" and NOT_JUDGED in f.message for f in memory), memory
    else:
        assert report.estimate is not None, [f.message for f in memory]
        assert report.setup.model.id == want
        assert report.setup.hardware.label == MULTI_GPU[name]["gpus"]
        assert any(f.key == "memory" and f.message.startswith(("fits:", "tight:", "does not fit:")) for f in memory), memory


def test_long_context_examples_are_judged_with_their_parallelism():
    reports = suite(False)
    for name in ("alst/llama3-8b-deepspeed-alst.yaml", "alst/llama3-8b-fsdp2-alst.yaml"):
        s, est = reports[name].setup, reports[name].estimate
        assert (s.context_parallel, s.tiled_mlp, s.activation_offload, s.loss) == (8, True, "legacy", "cce")
        assert s.tokens_per_gpu == 62_500
        assert est.fits and est.peak_gpu_gib < 40, est.peak_gpu_gib     # was ~902.6 GiB without them
        assert est.breakdown.get("logits", 0) == 0 and est.breakdown["context_parallel"] > 0
    tp_cp = reports["distributed-parallel/qwen3-8b-fsdp-tp-cp.yaml"]
    assert (tp_cp.setup.context_parallel, tp_cp.setup.tensor_parallel) == (2, 2)
    assert tp_cp.estimate.fits and tp_cp.estimate.peak_gpu_gib < 60     # was ~83.7 GiB, "does not fit"
    hsdp = reports["distributed-parallel/llama-3_1-8b-hsdp-tp.yaml"].setup
    assert (hsdp.tensor_parallel, hsdp.dp_replicate, hsdp.hardware.world_size) == (2, 2, 16)


def test_mixtral_is_priced_as_a_mixture_of_experts_not_a_7b():
    report = suite(False)["mistral/mixtral/mixtral.yml"]
    assert report.setup.model.id == "mixtral-8x7b" and report.setup.model.is_moe
    # QLoRA on transformers 5: the 3D expert weights stay bf16 (Axolotl's docs/expert_quantization.qmd)
    assert report.estimate.breakdown["weights"] > 80
    assert any("bf16" in a and "experts" in a for a in report.estimate.assumptions)


def test_cli_checks_the_multi_gpu_examples_in_one_call_with_valid_json(cli, monkeypatch):
    monkeypatch.chdir(SUITE)
    names = [n for n, e in MULTI_GPU.items() if e["gpus"] == "8xH100-80GB"]
    res = cli("check", *[f"examples/{n}" for n in names], "--gpus", "8xH100-80GB", "--no-schema", "--json")
    assert res.code in (0, 1), res.err
    data = json.loads(res.out)
    assert [c["path"].endswith(n) for c, n in zip(data["configs"], names)] == [True] * len(names)


# ---- with Axolotl's own validation ---------------------------------------------------------------------


@pytest.mark.slow
def test_with_axolotls_validation_no_miss_and_no_false_rejection():
    pytest.importorskip("axolotl")
    reports = suite(True)
    for name, entry in EXAMPLES.items():
        report = reports[name]
        rejections = [f for f in report.errors if "rejects the config" in f.message]
        if entry["axolotl"] == "rejected":
            assert rejections, f"{name}: Axolotl rejects it ({entry['errors'][0]}), check says nothing"
        else:
            assert not rejections, (name, [f.message for f in rejections])
        needs = [f for f in report.findings if f.key == "schema" and "training machine needs it" in f.message]
        assert len(needs) == len(entry.get("needs", [])), name
        removed = [f for f in report.findings if "is deprecated" in f.message and f.severity == "error"]
        assert not removed, (name, "a removed key is reported twice")
        # with the plugins' schemas loaded, exactly the keys Axolotl drops are reported
        assert not any(PLUGIN_CAVEAT in f.message for f in report.findings), name
        found = set(ignored_findings(report))
        dropped = {_normal(k) for k in entry.get("ignored") or {}}
        assert dropped <= found and not {k for k in found - dropped if k.split(".")[0] not in entry.get("unverified", ())}, \
            (name, found ^ dropped)


# ---- docs/check.md: what check says on a few of the examples, and the suite's numbers -----------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "check.md"
DOC_EXAMPLES = (
    "archived/cerebras/btlm-ft.yml",
    "falcon-h1/falcon-h1-1b-qlora-cp.yaml",
    "qwen3/qlora-fsdp.yaml",
    "mistral/mixtral/mixtral.yml",
    "alst/llama3-8b-deepspeed-alst.yaml",
    "jamba/qlora_deepspeed.yaml",
)


def doc_examples_block() -> str:
    reports = suite(False)
    out = []
    for name in DOC_EXAMPLES:
        gpus = EXAMPLES[name].get("gpus")
        out += ["```text", f"$ llamaforge check examples/{name}" + (f" --gpus {gpus}" if gpus else "") + " --no-schema"]
        for f in reports[name].findings:
            out.append(f"{f.severity:<8} {f.key:<26} {f.message}")
        out += ["```", ""]
    return "\n".join(out).rstrip()


def doc_numbers_block() -> str:
    reports = suite(False)
    dropped = [(n, k, v) for n, e in EXAMPLES.items() for k, v in (e.get("ignored") or {}).items()]
    graded = {"error": 0, "warning": 0}
    for name, key, _ in dropped:
        finding = ignored_findings(reports[name], caveats=True).get(_normal(key))
        graded[finding.severity] += 1
    judged: dict[str, int] = {}
    for name in MULTI_GPU:
        model = reports[name].setup.model.id if reports[name].estimate is not None else None
        judged[model or "not judged"] = judged.get(model or "not judged", 0) + 1
    verdicts = {"fits": 0, "tight": 0, "does not fit": 0}
    for name in MULTI_GPU:
        if reports[name].estimate is not None:
            verdicts[reports[name].estimate.verdict] += 1
    architectures = ", ".join(f"{m} {c}" for m, c in sorted(judged.items()) if m != "not judged")
    return "\n".join([
        "| | |", "|---|---|",
        f"| example configs (Axolotl's `examples/`, cloud launcher files left out) | {len(EXAMPLES)} |",
        f"| rejected by Axolotl {VERDICTS['axolotl_version']}'s validate_config | "
        f"{sum(e['axolotl'] == 'rejected' for e in EXAMPLES.values())} |",
        f"| keys Axolotl's schema drops | {len(dropped)} in {sum(bool(e.get('ignored')) for e in EXAMPLES.values())} configs: "
        f"{graded['error']} errors (a setting is lost), {graded['warning']} warnings (empty, or what Axolotl does anyway; "
        "or a plugin's key when checked without Axolotl) |",
        f"| multi-GPU examples, checked with their `--gpus` | {len(MULTI_GPU)}: {len(MULTI_GPU) - judged.get('not judged', 0)} "
        f"priced as their own architecture ({verdicts['fits']} fit, {verdicts['tight']} tight, "
        f"{verdicts['does not fit']} do not fit), {judged.get('not judged', 0)} \"memory not judged\" |",
        f"| architectures priced | {architectures} |",
        f"| an eval set that is never evaluated (evals_per_epoch x num_epochs = 1: Axolotl schedules no evaluation) | "
        f"{sum(any(f.key == 'evals_per_epoch' for f in reports[n].errors) for n in EXAMPLES)} configs: errors |",
        "| false errors, misses | none: asserted for every file by tests/check/test_peer_suite.py |",
    ])


def test_docs_check_md_shows_what_check_says():
    from doc_blocks import assert_block_in_sync

    regen = "LLAMAFORGE_REGEN_DOCS=1 pytest tests/check/test_peer_suite.py"
    assert_block_in_sync(DOC, "<!-- peer-suite-numbers:begin -->", "<!-- peer-suite-numbers:end -->", doc_numbers_block(), regen)
    assert_block_in_sync(DOC, "<!-- peer-suite-examples:begin -->", "<!-- peer-suite-examples:end -->", doc_examples_block(), regen)
