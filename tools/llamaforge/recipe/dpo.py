"""DPO recipes of the matrix's `preference:` entries: each a new LoRA/QLoRA adapter on the merged SFT model
of the recipe it follows, planned and priced by planning.dpo (which says what a DPO step is), rendered from
templates/axolotl/dpo.yaml.j2 through the SFT renderer.

Pure: plain data in, plain data out (rendering returns text; nothing touches the disk)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import UserError
from ..planning.dpo import MEMORY_BASIS, estimate_dpo, plan_dpo
from ..planning.plan import Plan
from .request import Layout, RecipeRequest, RenderedRecipe, model_display_name
from .sft import render_recipe

DPO_TEMPLATE = "axolotl/dpo.yaml.j2"


def plan_dpo_request(req: RecipeRequest, *, tokens: int | None = None, epochs: float = 1.0) -> Plan:
    """planning.dpo.plan_dpo for the model, hardware, method, sequence length, batch and rank of `req`."""
    return plan_dpo(req.spec, req.hardware, method=req.method, seq_len=req.seq_len, global_batch=req.global_batch,
                    lora_r=req.lora_r, tokens=tokens, epochs=epochs)


# ---- the matrix's DPO recipes ----------------------------------------------------------------

DPO_ENTRY_KEYS = frozenset({"after", "corpus", "beta", "gpus", "nodes", "method", "seq_len", "global_batch",
                            "lora_r", "lora_alpha", "hyperparameters"})


@dataclass(frozen=True)
class DpoRequest:
    """One DPO recipe: the request it is planned from, the SFT recipe it follows and its beta."""

    request: RecipeRequest
    after: str              # <model>/<name> of the SFT recipe whose merged model it starts from
    after_method: str       # that recipe's method: full -> its output is the model, else output/merged
    beta: float

    @property
    def name(self) -> str:
        return f"dpo-{self.request.method}-{self.request.hardware.label}"

    @property
    def after_output_dir(self) -> str:
        return f"outputs/{self.after}"

    @property
    def base_model(self) -> str:
        """Where the merged SFT model is when the SFT recipe is launched as committed."""
        return self.after_output_dir if self.after_method == "full" else f"{self.after_output_dir}/merged"


def dpo_requests(entries, sft_requests: dict[str, RecipeRequest], layers: tuple, where: str) -> list[DpoRequest]:
    """The matrix's `preference:` entries. `sft_requests`: the SFT recipes (method set) by <model>/<name>."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise UserError(f"{where}: `preference` must be a list of DPO recipes")
    out = []
    for i, entry in enumerate(entries):
        at = f"{where} preference[{i}]"
        if not isinstance(entry, dict) or "after" not in entry or "corpus" not in entry:
            raise UserError(f"{at}: each DPO recipe needs `after` (an SFT recipe, e.g. llama-3.1-8b/lora-1xH100-80GB) "
                            "and `corpus` (a preference corpus name)")
        unknown = sorted(set(entry) - DPO_ENTRY_KEYS)
        if unknown:
            raise UserError(f"{at}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(DPO_ENTRY_KEYS))}")
        after = str(entry["after"]).removesuffix(".yaml")
        if after not in sft_requests:
            raise UserError(f"{at}: after: {after} is not a recipe of the matrix; use one of {', '.join(sft_requests)}")
        sft = sft_requests[after]
        hp = entry.get("hyperparameters") or {}
        if not isinstance(hp, dict):
            raise UserError(f"{at}: `hyperparameters` must be a mapping")
        beta = entry.get("beta", 0.1)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise UserError(f"{at}: beta must be a positive number (0.1 is TRL's default)")
        req = replace(
            sft, gpus=str(entry.get("gpus", sft.gpus)), nodes=int(entry.get("nodes", sft.nodes)),
            method=entry.get("method", sft.method if sft.method != "full" else "lora"),
            seq_len=int(entry.get("seq_len", sft.seq_len)), global_batch=entry.get("global_batch", sft.global_batch),
            lora_r=int(entry.get("lora_r", sft.lora_r)), lora_alpha=entry.get("lora_alpha", sft.lora_alpha),
            corpus=str(entry["corpus"]), hyper_layers=layers + (("entry", dict(hp)),),
        )
        req.hyperparameters(req.method or "lora")  # unknown keys fail here, naming the entry
        out.append(DpoRequest(request=req, after=after, after_method=sft.method, beta=float(beta)))
    return out


def render_dpo_recipe(dpo: DpoRequest, layout: Layout = Layout(), *, plan_obj: Plan | None = None,
                      base_model: str | None = None, train_files: list[str] | None = None,
                      eval_file: str | None = None, output_dir: str | None = None, name: str | None = None,
                      regenerate: str | None = None, extra_header: dict[str, str] | None = None) -> RenderedRecipe:
    """The DPO recipe (templates/axolotl/dpo.yaml.j2) with the assets it needs. The keyword
    arguments are render_recipe's (the demo-size test passes a CPU plan and local paths)."""
    req = dpo.request
    p = plan_obj if plan_obj is not None else plan_dpo_request(req)
    base = base_model or dpo.base_model
    after_recipe = f"recipes/{dpo.after}.yaml"
    merge = (f"train {after_recipe}, then `axolotl merge-lora {after_recipe}` writes {base}"
             if dpo.after_method != "full" else f"train {after_recipe}; its output_dir {base} is the model")
    context = {
        "title": f"{model_display_name(req.spec)}: DPO ({p.setup.method}) after SFT on {p.setup.hardware}",
        "dpo": {
            "beta": dpo.beta, "after_recipe": after_recipe, "after_model": req.spec.id,
            "prepare": merge + " (or set base_model to `llamaforge export RUN --merge`'s merged/ folder)",
            "memory_basis": MEMORY_BASIS,
        },
    }
    return render_recipe(
        req, layout, plan_obj=p, base_model=base, train_files=train_files, eval_file=eval_file,
        output_dir=output_dir, name=name or dpo.name, regenerate=regenerate, extra_header=extra_header,
        template=DPO_TEMPLATE, template_context=context, estimator=estimate_dpo, stage="dpo",
    )


__all__ = ["DpoRequest", "dpo_requests", "plan_dpo_request", "render_dpo_recipe"]
