"""What our lm-eval task YAMLs (evals/tasks/*/) call through their `!function` shims: dataset
loaders for `custom_dataset:` and `process_results:` scorers. The shims pass their own folder, so
the tasks work from any working directory, with `llamaforge gates` and with the plain `lm_eval`
CLI (`--include_path evals/tasks`).

The persona reaches the identity and inference-suite tasks as lm-eval task metadata: lm-eval calls
`custom_dataset(**metadata)`, and metadata comes from `TaskManager(metadata={"persona": ...})`
(what `run_gates` does) or `lm_eval --metadata '{"persona": "Nyx"}'`; default Leviathan. The
loader writes it into every doc, so scoring reads it from the doc and the samples log shows it.

datasets is imported inside the loaders (heavy)."""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from ..errors import UserError
from ..paths import humaneval_data_file
from .answer_checks import AnswerRules, check_answer, check_keywords, parse_answer_rules, parse_terms
from .code_execution import SandboxLimits, parse_sandbox_limits, run_untrusted_program
from .data_files import read_prompt_rows, read_yaml
from .identity import (
    DEFAULT_PERSONA,
    check_self_identification,
    load_identity_rules,
    mentions_name,
    validate_persona,
)

ANSWER_RULES_FILE = "answer_rules.yaml"  # shared by inference_suite and esoteric_spotcheck, in evals/tasks/


def _test_split(rows: list[dict]):
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def _first_answer(results: list) -> str:
    answer = results[0] if results else ""
    while isinstance(answer, (list, tuple)):
        answer = answer[0] if answer else ""
    return answer if isinstance(answer, str) else ""


@lru_cache(maxsize=8)
def answer_rules(tasks_dir: Path) -> AnswerRules:
    path = Path(tasks_dir) / ANSWER_RULES_FILE
    return parse_answer_rules(read_yaml(path), str(path))


# --- identity -------------------------------------------------------------------------------


def load_identity_docs(task_dir: Path, persona: str = DEFAULT_PERSONA, **_metadata):
    persona = validate_persona(persona)
    rows = read_prompt_rows(Path(task_dir) / "identity_prompts.jsonl")
    return _test_split([{"id": str(r.get("id", i)), "prompt": r["prompt"], "persona": persona} for i, r in enumerate(rows)])


def score_identity(doc: dict, results: list, task_dir: Path) -> dict[str, float]:
    rules = load_identity_rules(Path(task_dir) / "identity_rules.yaml")
    check = check_self_identification(_first_answer(results), doc["persona"], rules)
    return {"acc": 1.0 if check.passed else 0.0}


# --- inference suite ------------------------------------------------------------------------


def _with_persona(term, persona: str):
    if isinstance(term, str):
        return term.replace("{persona}", persona)
    return [t.replace("{persona}", persona) for t in term]


def load_inference_docs(task_dir: Path, persona: str = DEFAULT_PERSONA, **_metadata):
    return _test_split(answer_docs(Path(task_dir) / "inference_suite.jsonl", persona))


def answer_docs(path: Path, persona: str) -> list[dict]:
    """Prompts with must_contain / must_not_contain terms ({persona} replaced), as lm-eval docs."""
    persona = validate_persona(persona)
    docs = []
    for i, row in enumerate(read_prompt_rows(path)):
        where = f"{path}: row {i + 1}"
        must = parse_terms(row.get("must_contain"), f"{where} must_contain")
        must_not = parse_terms(row.get("must_not_contain"), f"{where} must_not_contain")
        if not must:
            # Without a required term, any fluent-looking noise would pass: a check that matches everything.
            raise UserError(f"{where}: must_contain is empty; every prompt needs at least one required term")
        docs.append({
            "id": str(row.get("id", i)),
            "category": str(row.get("category", "")),
            "prompt": row["prompt"].replace("{persona}", persona),
            # JSON strings: Arrow wants one type per column, and a term may be a list of alternatives
            "must_contain": json.dumps([_with_persona(t, persona) for t in must]),
            "must_not_contain": json.dumps([_with_persona(t, persona) for t in must_not]),
            "persona": persona,
        })
    return docs


def score_inference(doc: dict, results: list, task_dir: Path) -> dict[str, float]:
    rules = answer_rules(Path(task_dir).parent)
    check = check_answer(_first_answer(results), json.loads(doc["must_contain"]), json.loads(doc["must_not_contain"]), rules)
    return {"acc": 1.0 if check.passed else 0.0}


# --- general answers and persona bleed ----------------------------------------------------


def load_general_docs(task_dir: Path, persona: str = DEFAULT_PERSONA, **_metadata):
    return _test_split(answer_docs(Path(task_dir) / "general_prompts.jsonl", persona))


def score_general(doc: dict, results: list, task_dir: Path) -> dict[str, float]:
    """acc: the answer is right (its required terms, none forbidden, the common checks);
    persona_bleed: the answer names the persona although the prompt is not about identity."""
    answer = _first_answer(results)
    rules = answer_rules(Path(task_dir).parent)
    check = check_answer(answer, json.loads(doc["must_contain"]), json.loads(doc["must_not_contain"]), rules)
    return {"acc": 1.0 if check.passed else 0.0, "persona_bleed": 1.0 if mentions_name(answer, doc["persona"]) else 0.0}


# --- esoteric spot-check --------------------------------------------------------------------


def load_esoteric_docs(task_dir: Path, **_metadata):
    path = Path(task_dir) / "esoteric_items.yaml"
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("items"), list) or not data["items"]:
        raise UserError(f"{path}: expected `items:` (a list of prompt, keywords, min_keywords)")
    default_min = int(data.get("min_keywords", 2))
    dismissive = parse_terms(data.get("dismissive"), f"{path} dismissive")
    docs = []
    for i, item in enumerate(data["items"]):
        where = f"{path}: items[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise UserError(f"{where} needs a prompt")
        keywords = parse_terms(item.get("keywords"), f"{where} keywords")
        need = int(item.get("min_keywords", default_min))
        if not keywords or need < 1 or need > len(keywords):
            raise UserError(f"{where}: min_keywords must be between 1 and the number of keywords ({len(keywords)})")
        docs.append({
            "id": str(item.get("id", i)), "topic": str(item.get("topic", "")), "prompt": item["prompt"],
            "keywords": json.dumps(keywords), "min_keywords": need, "dismissive": json.dumps(dismissive),
        })
    return _test_split(docs)


def score_esoteric(doc: dict, results: list, task_dir: Path) -> dict[str, float]:
    rules = answer_rules(Path(task_dir).parent)
    check = check_keywords(_first_answer(results), json.loads(doc["keywords"]), int(doc["min_keywords"]),
                           json.loads(doc["dismissive"]), rules)
    return {"acc": 1.0 if check.passed else 0.0}


# --- HumanEval, offline ---------------------------------------------------------------------


def load_humaneval_problems(**_metadata):
    with gzip.open(humaneval_data_file(), "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    keys = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    return _test_split([{k: r[k] for k in keys} for r in rows])


def build_humaneval_programs(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval custom filter: the function as written = the prompt + each completion."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


@lru_cache(maxsize=8)
def sandbox_limits(task_dir: Path) -> SandboxLimits:
    path = Path(task_dir) / "sandbox.yaml"
    return parse_sandbox_limits(read_yaml(path), str(path)) if path.is_file() else SandboxLimits()


def humaneval_program(function_source: str, doc: dict) -> str:
    return f"{function_source}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


def score_humaneval(doc: dict, results: list, task_dir: Path) -> dict[str, float]:
    """pass@1 of one completion (one sample per problem, greedy): 1 when the program with the
    problem's tests exits 0 in the sandbox. Refuses (raises) without HF_ALLOW_CODE_EVAL=1."""
    outcome = run_untrusted_program(humaneval_program(_first_answer(results), doc), sandbox_limits(Path(task_dir)))
    return {"pass@1": 1.0 if outcome.passed else 0.0}
