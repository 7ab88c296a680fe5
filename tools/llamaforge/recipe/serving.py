"""The serving files of an export: the Ollama Modelfile, the vLLM serve script and the model card,
rendered from templates/serve/ with facts/serving.yaml. Pure: plain data in, text out."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache


from ..errors import UserError
from ..paths import read_facts
from ..planning.serve_plan import plan_summary, served_checkpoint, vllm_arguments
from .templating import render_template

EXPORT_FACTS = "export.yaml"
MODELFILE_TEMPLATE = "serve/Modelfile.j2"
VLLM_TEMPLATE = "serve/vllm_serve.sh.j2"
CARD_TEMPLATE = "serve/model_card.md.j2"


@dataclass(frozen=True)
class ServingFacts:
    temperature: float
    top_p: float
    vllm_dtype: str
    vllm_port: int
    max_lora_ranks: tuple[int, ...]
    chat_templates: dict
    merge_warn_above_params: int
    adapter_files: tuple[str, ...]


@lru_cache(maxsize=1)
def serving_facts() -> ServingFacts:
    data = read_facts(EXPORT_FACTS)
    return ServingFacts(
        temperature=float(data["sampling"]["temperature"]), top_p=float(data["sampling"]["top_p"]),
        vllm_dtype=str(data["vllm"]["dtype"]), vllm_port=int(data["vllm"]["port"]),
        max_lora_ranks=tuple(sorted(int(r) for r in data["vllm"]["max_lora_ranks"])),
        chat_templates=dict(data["chat_templates"]), merge_warn_above_params=int(data["merge"]["warn_above_params"]),
        adapter_files=tuple(data["adapter_files"]),
    )


@dataclass(frozen=True)
class ServeSpec:
    """What both servers need to know about an export."""

    name: str                    # the served model's name (Ollama model, vLLM model / LoRA module)
    run: str                     # the run folder it came from (for the generated-by lines)
    sequence_len: int            # num_ctx / --max-model-len: the context the model was trained on
    system_prompt: str | None    # the persona's system prompt from the corpus manifest
    chat_template: str | None    # the stage config's Axolotl chat_template name
    eos_token: str | None        # the tokenizer's eos token
    model_folder: str | None     # export subfolder with a whole model (merged/ or model/), or None
    base_ref: str | None         # adapter exports: the base model (absolute local path or Hub id)
    base_is_local: bool = False
    adapter_folder: str | None = None
    lora_rank: int | None = None


def served_name(run_name: str) -> str:
    """A model name Ollama and vLLM both accept: lower case letters, digits, `.`, `_`, `-`."""
    name = re.sub(r"[^a-z0-9._-]+", "-", run_name.lower()).strip("-._")
    return name or "model"


def ollama_value(text: str, what: str, *, quoted: bool = False) -> str:
    """`text` as an Ollama Modelfile argument that parses back to exactly `text`. Ollama's parser
    has no escapes: a value runs to the end of the line unless it opens a quote; `"..."` holds one
    line, `\"\"\"...\"\"\"` may span lines and hold `"`, and nothing can hold `\"\"\"` itself.
    `quoted`: write a one-line value in `"..."` (the style of Ollama's examples for stop sequences)."""
    if '"""' in text:
        raise UserError(f"{what} contains three double quotes in a row, which an Ollama Modelfile cannot hold; "
                        "change it (the persona's system_prompt is in the corpus spec) or export without --ollama")
    one_line = bool(text) and "\n" not in text and "\r" not in text
    if one_line and '"' not in text and (quoted or text != text.strip()):
        return f'"{text}"'
    if one_line and text == text.strip() and not text.startswith('"'):
        return text
    return f'"""{text}"""'


def vllm_max_lora_rank(rank: int, allowed: tuple[int, ...]) -> int:
    """The smallest value vLLM's --max-lora-rank accepts that holds an adapter of `rank`."""
    for value in allowed:
        if value >= rank:
            return value
    raise UserError(f"LoRA rank {rank} is above vLLM's largest --max-lora-rank ({allowed[-1]}): vLLM cannot serve "
                    "this adapter unmerged; export with --merge and serve the merged model")


def stop_sequences(chat_template: str | None, eos_token: str | None, facts: ServingFacts) -> list[str]:
    stops = list((facts.chat_templates.get(chat_template or "") or {}).get("stop") or [])
    if eos_token and eos_token not in stops:
        stops.append(eos_token)
    return stops


def modelfile_text(spec: ServeSpec, facts: ServingFacts, plan=None, *, generated_by: str | None = None) -> str:
    """The Modelfile; with an Ollama serving `plan` (serve_plan.ServePlan) its num_ctx, and its
    quantization and server settings in the header. `generated_by` names what wrote it (default:
    `llamaforge export` from the run)."""
    known = facts.chat_templates.get(spec.chat_template or "")
    if spec.model_folder:
        relative = spec.model_folder.startswith(("../", "/"))
        from_line, adapter_line, base_download = spec.model_folder if relative else f"./{spec.model_folder}", None, None
    elif spec.base_is_local:
        from_line, adapter_line, base_download = ollama_value(spec.base_ref, "the base model path"), f"./{spec.adapter_folder}", None
    else:
        from_line, adapter_line, base_download = "./base", f"./{spec.adapter_folder}", spec.base_ref
    return render_template(
        MODELFILE_TEMPLATE, spec=spec, from_line=from_line, adapter_line=adapter_line, base_download=base_download,
        template=ollama_value(known["template"], "the chat template") if known else None,
        system=ollama_value(spec.system_prompt, "the persona's system prompt") if spec.system_prompt else None,
        temperature=facts.temperature, top_p=facts.top_p,
        stops=[ollama_value(s, "a stop sequence", quoted=True)
               for s in stop_sequences(spec.chat_template, spec.eos_token, facts)],
        num_ctx=plan.setup.context if plan else spec.sequence_len, plan=ollama_plan_context(plan),
        generated_by=generated_by or f"`llamaforge export` from {spec.run}",
    )


def ollama_plan_context(plan) -> dict | None:
    """What the Modelfile's header says about an Ollama serving plan (None without one)."""
    if plan is None:
        return None

    fl = plan.estimate.flags
    env = [f"OLLAMA_NUM_PARALLEL={fl['num_parallel']}"]
    if fl["flash_attention"]:
        env += ["OLLAMA_FLASH_ATTENTION=1", f"OLLAMA_KV_CACHE_TYPE={fl['kv_cache_type']}"]
    return {"hardware": plan.setup.label, "quantize": None if fl["quantization"] == "f16" else fl["quantization"],
            "server_env": " ".join(env), "lines": plan_summary(plan)}


def vllm_command(spec: ServeSpec, facts: ServingFacts, plan=None) -> dict:
    """The parts of the `vllm serve` command (for the script and the export report). With a vLLM
    serving `plan` (serve_plan.ServePlan) its flags replace the defaults."""
    generation = json.dumps({"temperature": facts.temperature, "top_p": facts.top_p})
    lora = None if spec.model_folder else {
        "name": spec.name, "path": f"$HERE/{spec.adapter_folder}",
        "max_lora_rank": vllm_max_lora_rank(int(spec.lora_rank or 0), facts.max_lora_ranks)}
    model = f"$HERE/{spec.model_folder}" if spec.model_folder else spec.base_ref
    if plan is not None:
        args = vllm_arguments(plan)
        model = served_checkpoint(plan, model)     # a merged model is planned in in-flight formats only
    else:
        args = [("--dtype", facts.vllm_dtype), ("--max-model-len", str(spec.sequence_len))]
        if lora:
            args += [("--enable-lora", None), ("--max-lora-rank", str(lora["max_lora_rank"]))]
    return {"model": model, "served_model_name": spec.name if spec.model_folder else f"{spec.name}-base", "lora": lora,
            "max_model_len": plan.setup.context if plan else spec.sequence_len, "dtype": dict(args)["--dtype"],
            "generation": generation, "args": args,
            "plan": {"hardware": plan.setup.label, "lines": plan_summary(plan)} if plan else None}


def vllm_script_text(spec: ServeSpec, facts: ServingFacts, plan=None, *, generated_by: str | None = None,
                     before: list[str] | None = None) -> str:
    """The serve script; `before` lists the commands (comments) that make its model folder."""
    cmd = vllm_command(spec, facts, plan)
    request = {"model": spec.name, "messages": ([{"role": "system", "content": spec.system_prompt}]
                                                if spec.system_prompt else []) + [{"role": "user", "content": "Who are you?"}],
               "max_tokens": 256}
    model = cmd["model"]
    model_arg = f'"{model}"' if model.startswith("$HERE/") else shlex.quote(model)
    return render_template(VLLM_TEMPLATE, spec=spec, cmd=cmd, model_arg=model_arg, port=facts.vllm_port,
                           request=json.dumps(request, ensure_ascii=False), before=before or [],
                           generated_by=generated_by or f"`llamaforge export` from {spec.run}")


def model_card_text(**context) -> str:
    return render_template(CARD_TEMPLATE, **context)
