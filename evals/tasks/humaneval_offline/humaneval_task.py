"""lm-eval `!function` shim for humaneval_offline.yaml; the logic is llamaforge.gates.task_functions
(data loading) and llamaforge.gates.code_execution (the sandbox)."""

from pathlib import Path

from llamaforge.gates import task_functions

HERE = Path(__file__).resolve().parent


def load_problems(**metadata):
    return task_functions.load_humaneval_problems(**metadata)


def build_programs(resps, docs):
    return task_functions.build_humaneval_programs(resps, docs)


def process_results(doc, results):
    return task_functions.score_humaneval(doc, results, HERE)
