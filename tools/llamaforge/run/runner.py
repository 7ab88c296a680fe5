"""`llamaforge run RECIPE --stage validate|full`: derive the stage recipe, launch Axolotl as a child
process with a live view, keep the full log, judge the run's health, run the stage's gate profile
(`validate`: the recipe's `llamaforge-validate-gates`, default `validate`; `full`: its
`llamaforge-gates`, default `release`), and write the stage report. `full` refuses unless a
validation of the same recipe and corpus passed its health checks AND its gates."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import inspect_checkpoint
from ..errors import UserError, require_one_line
from ..files import check_folder_to_write, top_level_records, write_text_atomic
from ..gates import run_gates
from ..lock import HeldLock, acquire_lock
from ..planning.catalog import get_model
from ..recipe.registry import rewrite_references
from ..recipe.templating import comment_text, dump_yaml
from .adapter_chain import chain_record, check_start_adapter, merged_base_record
from .health import Thresholds, evaluate_health
from .metrics import LogWatcher, health_facts, run_curve
from .preference_health import (
    DEFAULT_BETA,
    PreferenceThresholds,
    evaluate_preference_health,
    is_preference_config,
    preference_loss_terms,
)
from .report import read_stage_report, write_stage_report
from .stage import (
    Recipe,
    StagePlan,
    corpus_files,
    derive_stage_config,
    find_manifest,
    last_checkpoint,
    launch_command,
    load_recipe,
    prepared_dataset_key,
)

RUN_RECORD = "run.json"
BASE_ANSWERS = "base-answers"   # the base model's gate answers, shared by the stages of a run (gates.BaseAnswerCache)
RUN_LOCK = ".lock"     # held by the process running a stage of the run (and by its training child)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)   # like Ctrl-C (SIGINT): stop the child, write the report


class RunRefused(UserError):
    """The run was refused before any compute was spent (exit 1: a gate said no)."""

    exit_code = 1


class StageInterrupted(Exception):
    """SIGTERM or SIGHUP arrived: raised in the main thread, as Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class StageResult:
    plan: StagePlan
    report: dict
    passed: bool
    report_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def interrupted_by(self) -> int | None:
        """The signal number that interrupted the stage (the CLI exits 128 + it), or None."""
        name = (self.report.get("interrupted") or {}).get("signal")
        return int(signal.Signals[name]) if name else None


def lock_run_folder(run_dir: Path) -> HeldLock:
    """The run folder's exclusive lock (see llamaforge.lock): a second `llamaforge run` (or an
    export) on the same folder is refused, naming the holder, for as long as a stage runs."""
    return acquire_lock(Path(run_dir) / RUN_LOCK, f"run folder {run_dir}",
                        "wait for it to finish, or pass another --name for a separate run")


@contextmanager
def signals_interrupt():
    """Within the block, SIGTERM and SIGHUP raise StageInterrupted (Ctrl-C already raises
    KeyboardInterrupt), so a stopped run can stop its child and still write its report."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise StageInterrupted(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ---- planning ----------------------------------------------------------------------------------


def _check_run_folder(run_dir: Path, recipe: Recipe) -> None:
    record = run_dir / RUN_RECORD
    if not record.is_file():
        return
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{record} is corrupt; remove the run folder {run_dir} or pass --name") from None
    if Path(data.get("recipe", "")).resolve() != recipe.path.resolve():
        raise UserError(
            f"run folder {run_dir} belongs to another recipe ({data.get('recipe')}); "
            f"pass --name to start a separate run"
        )


def _previous_validation(run_dir: Path, recipe: Recipe, manifest_hash: str) -> tuple[bool, str]:
    path = run_dir / "validate" / "report.json"
    if not path.is_file():
        return False, f"no validation report at {path}: run `llamaforge run {recipe.path} --stage validate` first"
    report = read_stage_report(path)
    if report.get("recipe", {}).get("hash") != recipe.hash:
        return False, "the recipe changed since it was validated (recipe hash differs); validate it again"
    if report.get("corpus", {}).get("manifest_hash") != manifest_hash:
        return False, "the corpus changed since the validation (manifest hash differs); validate again"
    gates = report.get("gates") if isinstance(report.get("gates"), dict) else {}
    if not report.get("passed") or not gates.get("passed"):
        failed = [c["name"] for c in report.get("health", {}).get("checks", []) if c.get("status") != "pass"]
        why = f"health checks failed: {', '.join(failed)}" if failed else None
        if not why:
            failed_gates = gates.get("failed") or []
            why = (f"gates of profile `{gates.get('profile', '?')}` failed: {', '.join(failed_gates)}" if failed_gates
                   else f"gates not passed: {gates.get('skipped') or gates.get('error') or 'not recorded'}")
        return False, f"the validation run did not pass ({why}); see {path.with_name('report.md')}"
    return True, "a passing validation of this recipe and corpus (health and gates) exists"


def plan_stage(
    recipe_path: str | Path,
    stage: str,
    *,
    corpus: str | Path | None = None,
    name: str | None = None,
    runs_root: str | Path = "runs",
    resume: bool = False,
    force: bool = False,
) -> tuple[StagePlan, dict]:
    """Everything short of launching: validation of the request, the refusal of `full`, the
    derived config and the command. Returns the plan and the gatekeeping facts for the report."""
    from ..corpus.manifest import load_manifest, manifest_hash

    recipe = load_recipe(recipe_path)
    hardware = recipe.hardware()
    manifest_path = find_manifest(recipe, corpus)
    if not manifest_path.is_file():
        raise UserError(
            f"recipe {recipe.path}: its corpus is not built ({manifest_path} is missing); build it with "
            f"`llamaforge corpus build SPEC` or pass --corpus"
        )
    manifest = load_manifest(manifest_path, verify="size")
    mhash = manifest_hash(manifest_path)
    files = corpus_files(manifest)

    name = name or recipe.name
    require_one_line(name, "run name (--name)")
    if "/" in name or os.sep in name or name in (".", ".."):
        raise UserError(f"run name (--name) {name!r} is a path; give a plain name: the run folder is {runs_root}/NAME")
    check_folder_to_write(runs_root, "--runs-dir")
    run_dir = Path(runs_root) / name
    _check_run_folder(run_dir, recipe)
    stage_dir = run_dir / stage
    output_dir = stage_dir / "out"
    gate = {"forced": False, "reason": None}
    if stage == "full":
        ok, why = _previous_validation(run_dir, recipe, mhash)
        if not ok and not force:
            raise RunRefused(f"full run refused: {why} (--force overrides and is recorded in the report)")
        gate = {"forced": not ok, "reason": why}

    resume_from = None
    if resume:
        ckpt = last_checkpoint(output_dir)
        if ckpt is None:
            raise UserError(f"nothing to resume: no checkpoint-N folder in {output_dir}")
        resume_from = str(ckpt)

    check_start_adapter(recipe.config, f"recipe {recipe.path}")
    world = hardware.world_size if hardware else 1
    key = prepared_dataset_key(mhash, recipe.config.get("base_model"))
    config, changes = derive_stage_config(recipe, stage, files, output_dir, world_size=world, resume_from=resume_from,
                                          prepared_key=key)
    plan = StagePlan(
        stage=stage, name=name, run_dir=run_dir, stage_dir=stage_dir, output_dir=output_dir,
        recipe=recipe, manifest_path=manifest_path, manifest_hash=mhash, config=config,
        changes=changes, resume_from=resume_from,
    )
    plan.command, plan.launcher, plan.env = launch_command(recipe, plan.stage_recipe_path, hardware)
    gate["persona"] = recipe.persona or files.persona
    return plan, gate


def stage_recipe_text(plan: StagePlan) -> str:
    lines = [
        f"# Stage recipe ({plan.stage}) derived by `llamaforge run` from {plan.recipe.path}",
        f"# recipe sha256 {plan.recipe.hash}; corpus manifest sha256 {plan.manifest_hash}",
        "# Changes from the recipe:",
        *[f"#   - {c}" for c in plan.changes],
        "",
    ]
    header = "\n".join(comment_text(line) for line in lines)
    return header + "\n" + dump_yaml(plan.config)


def _prepare_stage_dir(plan: StagePlan) -> Path | None:
    """A fresh attempt moves the previous one aside (never deletes checkpoints); --resume keeps it."""
    moved = None
    if plan.stage_dir.exists() and plan.resume_from is None:
        k = 1
        while (plan.run_dir / f"{plan.stage}.attempt-{k}").exists():
            k += 1
        moved = plan.run_dir / f"{plan.stage}.attempt-{k}"
        plan.stage_dir.rename(moved)
    plan.stage_dir.mkdir(parents=True, exist_ok=True)
    (plan.stage_dir / "report.json").unlink(missing_ok=True)
    return moved


# ---- launching and watching ----------------------------------------------------------------------


class LiveView:
    """The live view of a running stage: a rich table refreshed from the log watcher on a
    terminal; on a pipe (CI), one plain line per logged step at most every few seconds."""

    def __init__(self, plan: StagePlan, console, enabled: bool = True):
        self.plan = plan
        self.console = console
        self.enabled = enabled
        self.live = None
        self.last_plain = 0.0
        self.start = time.monotonic()

    def __enter__(self):
        if self.enabled and self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._table(None), console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)

    def _row(self, watcher) -> dict:
        curve = watcher.curve if watcher else None
        last = curve.train[-1] if curve and curve.train else None
        last_eval = curve.eval[-1] if curve and curve.eval else None
        prog = watcher.progress if watcher else None
        return {
            "step": f"{prog['step']}/{prog['total']}" if prog else (str(last.step) if last else "—"),
            "epoch": f"{last.epoch:.2f}" if last and last.epoch is not None else "—",
            "loss": f"{last.loss:.4f}" if last else "—",
            "eval loss": f"{last_eval.loss:.4f}" if last_eval else "—",
            "tokens/s": f"{last.tokens_per_s:,.0f}" if last and last.tokens_per_s else "—",
            "memory": f"{curve.peak_memory_gib:.1f} GiB" if curve and curve.peak_memory_gib else "—",
            "elapsed": _fmt_s(time.monotonic() - self.start),
            "ETA": _fmt_s(prog["eta_s"]) if prog and prog.get("eta_s") is not None else "—",
        }

    def _table(self, watcher):
        from rich.table import Table

        table = Table(title=f"{self.plan.name} — stage {self.plan.stage}  (log: {self.plan.log_path})")
        row = self._row(watcher)
        for key in row:
            table.add_column(key)
        table.add_row(*row.values())
        return table

    def update(self, watcher, events) -> None:
        if self.live is not None:
            self.live.update(self._table(watcher))
        elif self.enabled and any(e.get("kind") in ("train", "eval") for e in events):
            now = time.monotonic()
            if now - self.last_plain >= 5 or any(e.get("kind") == "eval" for e in events):
                self.last_plain = now
                row = self._row(watcher)
                self.console.print("  ".join(f"{k} {v}" for k, v in row.items()), soft_wrap=True)


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _stop_process_group(proc: subprocess.Popen, signum: int, grace: float) -> None:
    """Send `signum` to the child's whole process group, wait up to `grace` seconds for every
    process of the group to exit, then SIGKILL what is left. A second interrupt while waiting
    kills at once."""
    def group_alive() -> bool:
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    try:
        proc.wait(timeout=grace)
        while group_alive() and time.monotonic() < deadline:   # the leader is gone; its children may not be
            time.sleep(0.05)
    except (subprocess.TimeoutExpired, KeyboardInterrupt, StageInterrupted):
        pass
    if group_alive():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def launch_and_watch(plan: StagePlan, console, *, live: bool = True, lock: HeldLock | None = None,
                     ) -> tuple[int | None, object, float, str | None]:
    """Run the child in its own process group, tee its output to the stage log, feed the watcher.
    Returns (exit code, watcher, seconds, the name of the signal that interrupted it or None).
    Ctrl-C, SIGTERM and SIGHUP (under signals_interrupt) are forwarded to the child's process
    group, which gets facts/health.yaml stop_grace_seconds to exit. The child inherits the run
    folder's `lock`, so the folder stays locked while any of its processes lives."""
    env = dict(os.environ)
    env.update(plan.env)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    watcher = LogWatcher()
    started = time.monotonic()
    interrupted = None
    with open(plan.log_path, "w", encoding="utf-8") as log, LiveView(plan, console, enabled=live) as view:
        log.write(f"$ {plan.command_line()}\n")
        log.flush()
        try:
            proc = subprocess.Popen(
                plan.command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, bufsize=0, pass_fds=(lock.fileno(),) if lock is not None else (),
            )
        except OSError as exc:
            raise UserError(f"cannot start {plan.command[0]} ({exc.strerror}); is Axolotl installed in this environment?") from None
        try:
            while True:
                chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(65536)
                if not chunk:
                    break
                text = chunk.decode("utf-8", errors="replace")
                log.write(text)
                log.flush()
                view.update(watcher, watcher.feed(text))
            view.update(watcher, watcher.finish())
            code = proc.wait()
        except (KeyboardInterrupt, StageInterrupted) as exc:
            signum = exc.signum if isinstance(exc, StageInterrupted) else signal.SIGINT
            interrupted = signal.Signals(signum).name
            grace = float(health_facts().get("stop_grace_seconds", 30))
            log.write(f"\n[llamaforge] interrupted by {interrupted}: sent it to the training process group, "
                      f"waiting up to {grace:g} s for it to exit\n")
            log.flush()
            _stop_process_group(proc, signum, grace)
            rest = proc.stdout.read()
            if rest:
                text = rest.decode("utf-8", errors="replace")
                log.write(text)
                watcher.feed(text)
            watcher.finish()
            log.write(f"\n[llamaforge] the training process group has exited (code {proc.returncode})\n")
            code = None
    return code, watcher, time.monotonic() - started, interrupted


def oom_advice(plan: StagePlan) -> str | None:
    """A configuration that would fit, from the planner, for a run that ran out of memory."""
    from ..planning.plan import plan as plan_training

    hw = plan.recipe.hardware()
    model_id = plan.recipe.header.get("model")
    if hw is None or hw.gpu.id == "cpu" or not model_id:
        return None
    try:
        p = plan_training(get_model(model_id), hw, method=plan.recipe.header.get("method"),
                          seq_len=int(plan.config.get("sequence_len", 2048)))
    except UserError as exc:
        return f"the planner finds nothing that fits this hardware: {exc}"
    s = p.setup
    return (f"the planner's fitting configuration: {s.parallel}, offload {s.offload}, micro-batch {s.micro_batch} "
            f"x accumulation {s.grad_accum}, gradient checkpointing {'on' if s.grad_ckpt else 'off'} "
            f"(~{p.estimate.peak_gpu_gib:.1f} GiB of {p.estimate.usable_gpu_gib:.1f}); "
            f"`llamaforge render --model {model_id} --gpus {hw.label}` writes it")


# ---- the stage ------------------------------------------------------------------------------------


def run_stage(
    recipe_path: str | Path,
    stage: str,
    *,
    corpus: str | Path | None = None,
    name: str | None = None,
    runs_root: str | Path = "runs",
    dry_run: bool = False,
    resume: bool = False,
    force: bool = False,
    gates: bool = True,
    allow_code_execution: bool = False,
    console=None,
    live: bool = True,
) -> StageResult | StagePlan:
    """Plan the stage (refusals first), then, holding the run folder's lock, launch and judge it.
    Ctrl-C, SIGTERM or SIGHUP stop the training process group and the report says the stage was
    interrupted (StageResult.interrupted_by)."""
    from rich.console import Console

    console = console or Console()
    options = dict(corpus=corpus, name=name, runs_root=runs_root, resume=resume, force=force)
    plan, gate = plan_stage(recipe_path, stage, **options)
    kind = PreferenceThresholds if is_preference_config(plan.recipe.config) else Thresholds
    thresholds = kind.load(plan.recipe.health_overrides(), stage=stage)
    if dry_run:
        return plan
    with lock_run_folder(plan.run_dir) as lock, signals_interrupt():
        # decided again under the lock: a run that held the folder may have just written its report
        plan, gate = plan_stage(recipe_path, stage, **options)
        return _run_locked(plan, gate, thresholds, stage, gates=gates, allow_code_execution=allow_code_execution,
                           console=console, live=live, lock=lock)


def _run_locked(plan: StagePlan, gate: dict, thresholds, stage: str, *, gates: bool, allow_code_execution: bool,
                console, live: bool, lock: HeldLock) -> StageResult | StagePlan:
    moved = _prepare_stage_dir(plan)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(plan.run_dir / RUN_RECORD, json.dumps({"name": plan.name, "recipe": str(plan.recipe.path)}, indent=2) + "\n")
    write_text_atomic(plan.stage_recipe_path, stage_recipe_text(plan))
    if moved is not None:
        console.print(f"previous {stage} attempt moved to {moved}")

    report: dict = {
        "stage": stage,
        "name": plan.name,
        "recipe": {"path": str(plan.recipe.path), "hash": plan.recipe.hash, "model": plan.recipe.header.get("model"),
                   "hardware": plan.recipe.header.get("hardware")},
        "corpus": {"manifest": str(plan.manifest_path), "manifest_hash": plan.manifest_hash},
        "stage_recipe": str(plan.stage_recipe_path),
        "launch_dir": str(Path.cwd().resolve()),
        "changes": plan.changes,
        "command": plan.command_line(),
        "launcher": plan.launcher,
        "log": str(plan.log_path),
        "forced": gate["forced"],
        "gatekeeper": gate["reason"],
        "resumed_from": plan.resume_from,
        "gate_profile": plan.recipe.gate_profile_for(stage),
        "allow_code_execution": allow_code_execution,
    }
    if is_preference_config(plan.config):
        report["preference"] = {"method": str(plan.config["rl"]), "beta": plan.config.get("rl_beta", DEFAULT_BETA),
                                "loss": [list(term) for term in preference_loss_terms(plan.config)]}
    if plan.config.get("lora_model_dir"):
        report["starts_from"] = chain_record(Path(plan.config["lora_model_dir"]))
    elif (merged := merged_base_record(str(plan.config.get("base_model") or ""))) is not None:
        report["starts_from"] = merged
    if plan.launcher == "slurm":
        sbatch = copy_stage_recipe_for_slurm(plan)
        if sbatch is None:
            console.print(f"multi-node stage: {plan.recipe.path} names no SLURM script (`#   sbatch PATH`) and none is "
                          f"beside it; launch {plan.stage_recipe_path} on every node with the recipe's accelerate "
                          "command. LlamaForge does not watch remote nodes: no report is written for this stage.",
                          soft_wrap=True)
            return plan
        console.print(
            f"multi-node stage: submit `sbatch {shlex.quote(str(sbatch))}` (the recipe's SLURM script pointed at "
            f"{plan.stage_recipe_path}). LlamaForge does not watch remote nodes: no report is written for this stage.",
            soft_wrap=True)
        return plan

    console.print(f"[bold]{stage}[/] {plan.name}: {plan.command_line()}", soft_wrap=True)
    code, watcher, seconds, interrupted = launch_and_watch(plan, console, live=live, lock=lock)
    report["exit_code"] = code
    report["seconds"] = round(seconds, 1)
    if interrupted:
        report["interrupted"] = {"signal": interrupted, "during": "training"}
    # what the run left in its output folder, with hashes: `llamaforge export` takes exactly these files
    report["output"] = {"dir": plan.output_dir.name, "files": top_level_records(plan.output_dir)}

    curve = run_curve(watcher.curve, plan.output_dir)   # trainer_state.json when sound, else the log; never raises
    checkpoint = inspect_checkpoint(plan.output_dir)
    facts = dict(oom=watcher.oom, exit_code=code, checkpoint=checkpoint, error=watcher.last_error,
                 interrupted=interrupted)
    if is_preference_config(plan.config):
        health = evaluate_preference_health(curve, thresholds, beta=float(plan.config.get("rl_beta", DEFAULT_BETA)),
                                            loss_terms=preference_loss_terms(plan.config), **facts)
    else:
        health = evaluate_health(curve, thresholds, **facts)
    report["health"] = health.to_dict()
    if watcher.oom:
        report["oom_advice"] = oom_advice(plan)
    passed = health.passed

    profile = plan.recipe.gate_profile_for(stage)
    if not gates:
        report["gates"] = {"passed": False, "profile": profile, "skipped": "--no-gates: the gates were not run"}
        passed = passed and stage == "full"   # an ungated validation unlocks nothing
    elif interrupted:
        report["gates"] = {"passed": False, "profile": profile,
                           "skipped": f"the run was interrupted ({interrupted}); gates were not run"}
    elif passed:
        started = time.monotonic()
        try:
            report["gates"] = _run_gates(plan, gate.get("persona"), profile, allow_code_execution=allow_code_execution)
        except (KeyboardInterrupt, StageInterrupted) as exc:
            name = exc.args[0] if isinstance(exc, StageInterrupted) else "SIGINT"
            report["interrupted"] = {"signal": name, "during": "gates"}
            report["gates"] = {"passed": False, "profile": profile, "skipped": f"interrupted by {name} during the gates"}
        report["gates_seconds"] = round(time.monotonic() - started, 1)
        passed = passed and bool(report["gates"].get("passed"))
    else:
        report["gates"] = {"passed": False, "profile": profile,
                           "skipped": "the run's health checks failed; gates were not run"}
    report["passed"] = passed
    paths = write_stage_report(plan.stage_dir, report, curve, thresholds)
    return StageResult(plan, report, passed, paths)


def _run_gates(plan: StagePlan, persona: str | None, profile: str, *, allow_code_execution: bool) -> dict:
    base = plan.config.get("base_model")
    adapter = plan.output_dir if plan.config.get("adapter") else None
    model = base if adapter else plan.output_dir
    try:
        result = run_gates(
            str(model), adapter=str(adapter) if adapter else None, profile=profile,
            persona=persona or "Leviathan", output_dir=plan.stage_dir / "gates",
            allow_code_execution=allow_code_execution, base_cache=plan.run_dir / BASE_ANSWERS,
        )
    except UserError as exc:
        return {"passed": False, "error": str(exc)}
    return result.to_dict()


def recipe_sbatch(recipe: Recipe) -> Path | None:
    """The SLURM script a multi-node recipe names in its launch lines (`#   sbatch PATH`, relative to
    the launch folder), else the one beside it with its name."""
    for line in recipe.text.splitlines():
        if not line.startswith("#"):
            break
        body = line.lstrip("#").strip()
        if body.startswith("sbatch "):
            words = shlex.split(body)
            if len(words) == 2 and Path(words[1]).is_file():
                return Path(words[1])
    beside = recipe.path.with_suffix(".sbatch")
    return beside if beside.is_file() else None


def copy_stage_recipe_for_slurm(plan: StagePlan) -> Path | None:
    sbatch = recipe_sbatch(plan.recipe)
    if sbatch is None:
        return None

    target = plan.stage_dir / "launch.sbatch"
    text = sbatch.read_text(encoding="utf-8")
    m = re.search(r"^export RECIPE=(.*)$", text, flags=re.M)   # the recipe the script launches, as it names it
    named = shlex.split(m.group(1)) if m else []
    if len(named) != 1:
        raise UserError(f"{sbatch}: no `export RECIPE=...` line naming one recipe; re-render or re-copy the recipe")
    text = rewrite_references(text, {named[0]: str(plan.stage_recipe_path)}, kind="shell")
    write_text_atomic(target, text)
    shutil.copymode(sbatch, target)
    return target
