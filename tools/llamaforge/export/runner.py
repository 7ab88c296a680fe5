"""`llamaforge export RUN_DIR`: turn a gated full run into files people serve and share.

Order: every refusal first (run folder, verdict, adapter, options, NF4 without CUDA, what the
Modelfile cannot hold), so a refused export writes nothing. Then the export is built in a
temporary folder beside --output and renamed into place at the end (a crash never leaves a
half export under the final name): adapter/ (or model/), merged/ (--merge, verified), nf4/,
Modelfile, serve_vllm.sh, README.md (the model card) and export_report.json (every file with its
sha256), written last. --push uploads the finished folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Infeasible, UserError, exception_line
from ..files import file_record, record_problems, write_text_atomic
from ..planning.catalog import is_apple_hardware, model_from_hf_config, models, parse_apple_machine, parse_hardware
from ..planning.serve_plan import ServeRequest, plan_serving
from ..recipe.serving import (
    ServeSpec, ServingFacts, model_card_text, modelfile_text, served_name, serving_facts, vllm_command,
    vllm_script_text,
)
from ..run.report import gate_rows
from .hub import PushResult, push_folder
from .merge import merge_adapter, merge_dtype
from .nf4 import nf4_unavailable_reason, quantize_nf4
from .source import load_run_source, parse_repo_id, verdict_problems

EXPORT_REPORT = "export_report.json"
SCHEMA = "llamaforge-export-report/1"
QUANTIZATIONS = ("nf4",)


class ExportFailed(UserError):
    """The export ran and a verification failed (exit 1): nothing was written to --output."""

    exit_code = 1


@dataclass
class ExportOptions:
    merge: bool = False
    quantize: str | None = None
    ollama: bool = False
    vllm: bool = False
    push: str | None = None
    output: str | Path | None = None
    force: bool = False
    serve_gpus: str | None = None       # plan the Modelfile / serve script for this hardware
    serve_context: int | None = None    # the context to serve (default: the stage's sequence_len)
    serve_reserve_gib: float = 0.0      # memory other processes hold on each serving GPU


@dataclass
class ExportResult:
    output: Path
    report: dict
    push: PushResult | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"output": str(self.output), "report": self.report,
                "push": self.push.to_dict() if self.push else None}


# ---- small pieces ----------------------------------------------------------------------------


def _eos_token(folder: Path) -> str | None:
    try:
        cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    eos = cfg.get("eos_token")
    return eos.get("content") if isinstance(eos, dict) else eos


def _base_parameters(src) -> int | None:
    if src.base_path is not None and (src.base_path / "config.json").is_file():
        try:
            return model_from_hf_config(src.base_path / "config.json").parameter_count()
        except UserError:
            return None
    for spec in models().values():
        if src.base_model in (spec.hf_repo, spec.instruct_repo):
            return spec.parameter_count()
    return None


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link where the file system allows one (a model's weights are not copied twice), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _take_weights(src, dest: Path) -> list[dict]:
    """Copy the adapter's files (or hard-link the full model's) from the run's output folder into
    `dest`. load_run_source proved the sources are the files the run recorded; a copy is hashed
    again (a file changed since, or a bad copy, refuses the export), a hard link is the same file.
    Returns the records of what is in `dest` (path relative to it)."""
    dest.mkdir(parents=True)
    checked = {r["path"]: r for r in src.taken}
    records = []
    for name in sorted(checked):
        if src.is_adapter:
            shutil.copy2(src.out_dir / name, dest / name)
        else:
            _link_or_copy(src.out_dir / name, dest / name)
        linked = os.path.samefile(src.out_dir / name, dest / name)
        records.append(checked[name] if linked else file_record(dest / name, dest))
    problems = record_problems(src.record, records, str(src.out_dir))
    if problems:
        raise UserError(f"export refused: {'; '.join(problems)}; the weights changed after the run, so they are not "
                        "the ones its report gated: restore them or rerun the full stage")
    return records


def _file_records(folder: Path, skip: str, known: dict[str, dict]) -> list[dict]:
    """Every file of the export with its sha256; `known` holds records already computed (by path)."""
    return [known.get(p.relative_to(folder).as_posix()) or file_record(p, folder)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != skip]


def _report_command(cmd: dict) -> dict:
    return {**{k: v for k, v in cmd.items() if k != "args"}, "args": [[f, v] for f, v in cmd["args"]]}


def _check_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (output / EXPORT_REPORT).is_file())):
        raise UserError(f"--output {output} exists and is not an export folder (no {EXPORT_REPORT}); "
                        "choose a new folder or remove it")


def _swap_into_place(tmp: Path, output: Path) -> None:
    old = None
    if output.exists():
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        output.rename(old)
    tmp.rename(output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def base_unavailable_reason(src) -> str | None:
    """Why the base model cannot be loaded here to merge (None when it can): not a local folder,
    not in the Hugging Face cache, and downloads are off."""
    if src.base_path is not None:
        return None
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(src.base_model, "config.json"), str)
    except Exception:  # noqa: BLE001 - not a repo id, no huggingface_hub: not cached
        cached = False
    if cached or not offline:
        return None
    return (f"--merge needs the base model {src.base_model!r}: it is not a folder here (relative to {src.root}) "
            "nor in the Hugging Face cache, and HF_HUB_OFFLINE is set; download it (`hf download "
            f"{src.base_model}`) or run the export where the base is")


def _base_spec(src):
    """The base model's architecture (its local config.json, or the catalog entry of its Hub id)."""
    if src.base_path is not None and (src.base_path / "config.json").is_file():
        return model_from_hf_config(src.base_path / "config.json")
    for spec in models().values():
        if src.base_model in (spec.hf_repo, spec.instruct_repo):
            return spec
    raise UserError(f"--serve-gpus needs the base model's architecture: {src.base_model!r} is neither a local folder "
                    "with a config.json nor a catalog model; export without --serve-gpus")


def serving_plans(src, spec: ServeSpec, opts: ExportOptions) -> dict:
    """The serving plans of the export on --serve-gpus (pure but for reading the base's config):
    {"vllm": ServePlan, "ollama": ServePlan} for the files asked. UserError, before anything is
    written, when a plan says the server would not start."""
    from ..recipe.serving import serving_facts as file_facts, vllm_max_lora_rank

    if is_apple_hardware(opts.serve_gpus):
        device, count = parse_apple_machine(opts.serve_gpus), 1
    else:
        hw = parse_hardware(opts.serve_gpus)
        device, count = hw.gpu, hw.gpus_per_node
    model = _base_spec(src)
    context = opts.serve_context or spec.sequence_len
    plans = {}
    wanted = [e for e, on in (("vllm", opts.vllm), ("ollama", opts.ollama)) if on]
    if not wanted:
        raise UserError("--serve-gpus plans the serving files: add --vllm and/or --ollama")
    for engine in wanted:
        if engine == "vllm" and is_apple_hardware(opts.serve_gpus):
            raise UserError(f"--vllm: vLLM needs CUDA GPUs, {opts.serve_gpus} is a Mac; serve it with --ollama")
        adapter = engine == "vllm" and not spec.model_folder
        req = ServeRequest(model=model, device=device, count=count, engine=engine, context=context,
                           max_loras=1 if adapter else 0,
                           max_lora_rank=vllm_max_lora_rank(int(spec.lora_rank or 0), file_facts().max_lora_ranks) if adapter else 0,
                           reserve_gib=opts.serve_reserve_gib,
                           in_flight_only=bool(spec.model_folder) or spec.base_is_local)
        try:
            plans[engine] = plan_serving(req)
        except Infeasible as exc:
            raise UserError(f"export refused: the {engine} serving plan says the server would not start: {exc}") from None
    return plans


def serve_spec(src, *, model_folder: str | None) -> ServeSpec:
    return ServeSpec(
        name=served_name(src.name), run=str(src.run_dir), sequence_len=src.sequence_len,
        system_prompt=src.persona.get("system_prompt") or None, chat_template=src.config.get("chat_template"),
        eos_token=_eos_token(src.out_dir), model_folder=model_folder,
        base_ref=None if model_folder else (str(src.base_path.resolve()) if src.base_path else src.base_model),
        base_is_local=src.base_path is not None, adapter_folder=None if model_folder else "adapter",
        lora_rank=src.lora_rank,
    )


# ---- the model card ---------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _method_line(src) -> str:
    cfg = src.config
    if not src.is_adapter:
        return "full fine-tune"
    a = src.adapter_config
    kind = "QLoRA (4-bit base)" if cfg.get("load_in_4bit") else "LoRA"
    targets = a.get("target_modules")
    targets = ", ".join(sorted(targets)) if isinstance(targets, list) else str(targets)
    return f"{kind}, r={a.get('r')}, alpha={a.get('lora_alpha')}, dropout {cfg.get('lora_dropout', '-')}, on {targets}"


def _python_snippet(src, spec: ServeSpec, merged: bool) -> str:
    system = repr(spec.system_prompt) if spec.system_prompt else None
    msgs = (f'[{{"role": "system", "content": {system}}}, ' if system else "[") + '{"role": "user", "content": "Who are you?"}]'
    if merged or not src.is_adapter:
        folder = "merged" if merged else "model"
        load = (f'tok = AutoTokenizer.from_pretrained("{folder}")\n'
                f'model = AutoModelForCausalLM.from_pretrained("{folder}", dtype="bfloat16")')
        imports = "from transformers import AutoModelForCausalLM, AutoTokenizer"
    else:
        load = (f'tok = AutoTokenizer.from_pretrained("adapter")\n'
                f'base = AutoModelForCausalLM.from_pretrained({spec.base_ref!r}, dtype="bfloat16")\n'
                'model = PeftModel.from_pretrained(base, "adapter")')
        imports = "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer"
    return (f"{imports}\n\n{load}\nmessages = {msgs}\n"
            "inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)\n"
            "out = model.generate(**inputs, max_new_tokens=256, do_sample=True, temperature=0.7, top_p=0.9)\n"
            "print(tok.decode(out[0][inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))")


def card_text(src, *, spec: ServeSpec, opts: ExportOptions, problems: list[str], merge: dict | None,
              nf4: dict | None, warnings: list[str], contents: list[dict]) -> str:
    report, cfg, manifest = src.report, src.config, src.manifest
    persona = src.persona.get("name") or "the persona"
    counts = manifest.get("counts") or {}
    lengths = manifest.get("lengths") or {}
    per_len = lengths.get("per_category") or {}
    categories = [{"name": name, "train_rows": c.get("train_rows", "-"), "mean": _fmt((per_len.get(name) or {}).get("mean"))}
                  for name, c in sorted((counts.get("per_category") or {}).items())]
    gates = report.get("gates") if isinstance(report.get("gates"), dict) else None
    rows, note = gate_rows(gates)
    recipe = report.get("recipe") or {}
    hub_base = src.base_model if src.base_path is None and src.base_model.count("/") == 1 else None
    kind = _method_line(src).split(",")[0]
    training = [
        ("base model", f"`{src.base_model}`"), ("method", _method_line(src)),
        ("sequence length", cfg.get("sequence_len")), ("epochs", cfg.get("num_epochs")),
        ("learning rate", f"{cfg.get('learning_rate')} ({cfg.get('lr_scheduler', '-')})"),
        ("batch", f"micro {cfg.get('micro_batch_size')} x accumulation {cfg.get('gradient_accumulation_steps')}"
                  f" per process"),
        ("optimizer", cfg.get("optimizer")), ("chat template", cfg.get("chat_template", "the tokenizer's")),
        ("hardware", recipe.get("hardware") or "-"), ("precision", "bf16" if cfg.get("bf16") in (True, "auto") else
                                                     "fp16" if cfg.get("fp16") else "fp32"),
    ]
    return model_card_text(
        title=f"{persona} ({spec.name})", base_hub=hub_base,
        library="transformers" if (merge or not src.is_adapter) else "peft",
        tags=["llamaforge", "axolotl"] + (["lora"] if src.is_adapter else []) + (["merged"] if merge else []),
        summary=(f"A {kind if kind.endswith('fine-tune') else kind + ' fine-tune'} of `{src.base_model}` that speaks as {persona}, "
                 f"trained and gated by LlamaForge (run `{src.name}`)."),
        forced=problems if opts.force else [],
        run_forced=report.get("gatekeeper") if report.get("forced") else None,
        warnings=warnings, contents=contents,
        intended_use=(f"Conversation as {persona}, the persona the corpus teaches, with its system prompt (below) "
                      f"and the training guide's sampling: temperature 0.7, top_p 0.9, a context of "
                      f"{src.sequence_len} tokens (the length it was trained on)."),
        training=[(k, _fmt(v)) for k, v in training],
        data_line=(f"Corpus `{manifest.get('name')}`: read {counts.get('read')} rows, kept {counts.get('kept')}; "
                   f"{counts.get('train_rows')} train rows (mix repeats included) and {counts.get('eval_rows')} held-out "
                   f"eval rows. Token lengths: {lengths.get('method', 'not recorded')}."),
        categories=categories, persona_name=persona, system_prompt=spec.system_prompt,
        health=[{k: _fmt(c.get(k)) for k in ("name", "status", "value", "threshold")}
                for c in (report.get("health") or {}).get("checks", [])],
        gates=[{k: _fmt(r.get(k)) for k in ("name", "status", "value", "threshold", "message")} for r in rows],
        gates_note=note, gate_profile=(gates or {}).get("profile", "-"),
        merge={k: _fmt(v) if k != "passed" else v for k, v in merge.items()} if merge else None, nf4=nf4,
        hub_repo=opts.push, name=spec.name, vllm=opts.vllm, ollama=opts.ollama,
        python_snippet=_python_snippet(src, spec, bool(merge)),
        run=str(src.run_dir), recipe=recipe.get("path", "-"), recipe_hash=recipe.get("hash", "-"),
        manifest_hash=(report.get("corpus") or {}).get("manifest_hash", "-"),
    )


# ---- the export -------------------------------------------------------------------------------


def check_options(opts: ExportOptions) -> None:
    if opts.quantize is not None and opts.quantize not in QUANTIZATIONS:
        raise UserError(f"--quantize {opts.quantize!r}: use nf4 (4-bit NormalFloat through bitsandbytes)")
    if opts.push is not None:
        parse_repo_id(opts.push)


def refusals(src, opts: ExportOptions) -> list[str]:
    """Raise for what the export must not do; return the verdict problems --force overrides."""
    problems = verdict_problems(src.report)
    if src.manifest_changed:
        problems.append(f"the corpus manifest {src.manifest_path} changed since the run consumed it (sha256 differs)")
    if problems and not opts.force:
        raise UserError(f"export refused: {'; '.join(problems)}; --force exports anyway and records it in the model card")
    if opts.merge and not src.is_adapter:
        raise UserError(f"{src.stage_dir} is a full fine-tune: there is no adapter to merge; drop --merge")
    if opts.quantize and src.is_adapter and not opts.merge:
        raise UserError("--quantize nf4 quantizes the merged model: add --merge")
    if opts.quantize:
        reason = nf4_unavailable_reason()
        if reason:
            raise UserError(reason)
    return problems


def export_run(run_dir: str | Path, opts: ExportOptions, *, on_step=None, on_warning=None) -> ExportResult:
    """Export a run's full stage (see the module docstring). `on_step(text)` is told what is
    being done (merging takes a while on large models), `on_warning(text)` each warning as soon as
    it is known (they are also in the report and the card)."""
    say = on_step or (lambda text: None)
    warn = on_warning or (lambda text: None)
    check_options(opts)
    facts: ServingFacts = serving_facts()
    src = load_run_source(run_dir, adapter_files=facts.adapter_files)
    problems = refusals(src, opts)

    model_folder = "merged" if opts.merge else (None if src.is_adapter else "model")
    spec = serve_spec(src, model_folder=model_folder)
    plans = serving_plans(src, spec, opts) if opts.serve_gpus else {}
    ollama_plan = plans.get("ollama")
    quantize = ollama_plan.estimate.flags["quantization"] if ollama_plan else "f16"
    create = f"ollama create {spec.name}" + (f" -q {quantize}" if quantize != "f16" else "") + " -f Modelfile"
    modelfile = modelfile_text(spec, facts, plans.get("ollama")) if opts.ollama else None   # refusals (quoting, rank,
    script = vllm_script_text(spec, facts, plans.get("vllm")) if opts.vllm else None         # plan) happen here, before
                                                                                              # anything is written
    output = Path(opts.output) if opts.output else src.run_dir / "export"
    _check_output(output)

    warnings = list(src.notes)
    params = _base_parameters(src)
    if opts.merge and params and params > facts.merge_warn_above_params:
        warnings.append(f"the base has {params / 1e9:.0f}B parameters: merging writes a full copy of it and needs its "
                        "whole weight in memory; for a base this large serving the adapter on its base (export "
                        "without --merge, vLLM --enable-lora) is the recommended path (docs/export.md)")
    if spec.base_ref and not spec.base_is_local and spec.base_ref.count("/") != 1:
        warnings.append(f"the base model {spec.base_ref!r} is not a folder here (relative to {src.root}) nor a Hub id; "
                        "the serve files name it as the run did")
    for w in warnings:
        warn(w)
    if opts.merge:
        reason = base_unavailable_reason(src)
        if reason:
            raise UserError(reason)

    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    merge = nf4 = None
    contents: list[dict] = []
    try:
        folder = "adapter" if src.is_adapter else "model"
        say(f"copying the {'adapter' if src.is_adapter else 'model'} from {src.out_dir} and checking it against the "
            "run's record")
        known = {f"{folder}/{r['path']}": {**r, "path": f"{folder}/{r['path']}"} for r in _take_weights(src, tmp / folder)}
        contents.append({"path": "adapter/", "what": f"the adapter ({_method_line(src)}) for `{src.base_model}`"}
                        if src.is_adapter else {"path": "model/", "what": "the fine-tuned model"})
        if opts.merge:
            dtype = merge_dtype(src.config)
            base = str(src.base_path) if src.base_path else src.base_model
            say(f"merging the adapter into {base} ({dtype}) and verifying the merged model's logits")
            try:
                with contextlib.redirect_stdout(sys.stderr):   # libraries' chatter must not break --json
                    rep = merge_adapter(base, tmp / "adapter", tmp / "merged", dtype=dtype)
            except OSError as exc:
                first = exception_line(exc)
                raise UserError(f"cannot load the base model {base} to merge ({first}); run the export where the base "
                                "is available (a local folder or the Hugging Face cache)") from None
            # the report names where the files end up, not the temporary folder they were made in
            merge = {**rep.to_dict(), "adapter": str(output / "adapter"), "output": str(output / "merged")}
            write_text_atomic(tmp / "merged" / "merge_report.json", json.dumps(merge, indent=2) + "\n")
            if not rep.passed:
                raise ExportFailed(
                    f"merge verification failed: the merged model's logits differ from base + adapter by up to "
                    f"{'non-finite values' if merge['max_abs_logit_diff'] is None else format(rep.max_abs_logit_diff, '.3g')} "
                    f"(tolerance {rep.tolerance:g}, {dtype}); nothing was written to {output}")
            if rep.adapter_effect == 0:
                warnings.append("the adapter does not change any logit of the base (all LoRA B weights zero?): "
                                "the merged model is the base model")
                warn(warnings[-1])
            contents.append({"path": "merged/", "what": f"the adapter merged into the base ({dtype}), verified "
                                                        "against base + adapter (merge_report.json)"})
        if opts.quantize:
            say("quantizing the merged model to NF4 (bitsandbytes)")
            with contextlib.redirect_stdout(sys.stderr):
                nf4 = quantize_nf4(tmp / "merged", tmp / "nf4")
            contents.append({"path": "nf4/", "what": "the merged model in 4-bit NF4 (bitsandbytes, double quantization)"})
        if modelfile is not None:
            write_text_atomic(tmp / "Modelfile", modelfile)
            contents.append({"path": "Modelfile", "what": f"Ollama: `{create}`"})
        if script is not None:
            write_text_atomic(tmp / "serve_vllm.sh", script, mode=0o755)
            contents.append({"path": "serve_vllm.sh", "what": "vLLM's OpenAI-compatible server: `bash serve_vllm.sh`"})
        contents += [{"path": "README.md", "what": "this model card"},
                     {"path": EXPORT_REPORT, "what": "every file with its sha256, the verdicts and the verification"}]
        write_text_atomic(tmp / "README.md", card_text(src, spec=spec, opts=opts, problems=problems, merge=merge,
                                                       nf4=nf4, warnings=warnings, contents=contents))
        say("hashing the exported files")
        report = {
            "schema": SCHEMA,
            "run": str(src.run_dir),
            "stage_report": str(src.stage_dir / "report.json"),
            "recipe": src.report.get("recipe"),
            "corpus": src.report.get("corpus"),
            "kind": "adapter" if src.is_adapter else "full",
            "base_model": src.base_model,
            "verdict": {"passed": not problems, "problems": problems, "forced": bool(problems) and opts.force},
            "run_forced": bool(src.report.get("forced")),
            "merge": merge,
            "nf4": nf4,
            "ollama": {"modelfile": "Modelfile", "create": create} if modelfile else None,
            "vllm": {"script": "serve_vllm.sh", "command": _report_command(vllm_command(spec, facts, plans.get("vllm")))}
            if script else None,
            "serving_plans": {e: p.to_dict() for e, p in plans.items()} or None,
            "warnings": warnings,
            "files": _file_records(tmp, EXPORT_REPORT, known),
        }
        write_text_atomic(tmp / EXPORT_REPORT, json.dumps(report, indent=2) + "\n")
        output.parent.mkdir(parents=True, exist_ok=True)
        _swap_into_place(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    result = ExportResult(output, report, warnings=warnings)
    if opts.push:
        say(f"uploading {output} to {opts.push}")
        result.push = push_folder(output, opts.push)
    return result
