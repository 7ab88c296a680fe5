"""lm-eval `!function` shim for cue.yaml; the logic is llamaforge.gates.cue."""

from pathlib import Path

from llamaforge.gates import cue

HERE = Path(__file__).resolve().parent


def load_docs(**metadata):
    return cue.load_cue_docs(HERE, **metadata)


def process_results(doc, results):
    return cue.score_cue(doc, results, HERE)
