"""lm-eval `!function` shim for general_answers.yaml; the logic is llamaforge.gates.task_functions."""

from pathlib import Path

from llamaforge.gates import task_functions

HERE = Path(__file__).resolve().parent


def load_docs(**metadata):
    return task_functions.load_general_docs(HERE, **metadata)


def process_results(doc, results):
    return task_functions.score_general(doc, results, HERE)
