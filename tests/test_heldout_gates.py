"""The gates are held out: no gate prompt, nor a near-paraphrase of one, appears in any training
corpus the project ships (datasets/), found with the corpus builder's own MinHash near-dedup
(llamaforge.corpus.heldout). A gate that asks what the corpus taught measures memory."""

from __future__ import annotations

from llamaforge.corpus.heldout import (
    NEAR_DUPLICATE,
    NEAR_PARAPHRASE,
    GatePrompt,
    TrainingText,
    find_overlaps,
    gate_prompts,
    training_texts,
)
from llamaforge.paths import datasets_dir, evals_dir


def test_no_training_corpus_contains_a_gate_prompt_or_a_near_paraphrase():
    prompts = gate_prompts(evals_dir() / "tasks")
    tasks = {p.task for p in prompts}
    assert {"identity", "inference_suite", "general_answers", "esoteric_spotcheck", "cue"} <= tasks
    texts = training_texts(datasets_dir())
    assert len(texts) > 500 and any(t.where.startswith("sources/demo/") for t in texts)
    overlaps = find_overlaps(prompts, texts)
    assert not overlaps, "\n".join(o.describe() for o in overlaps[:20])


def test_the_check_finds_verbatim_contained_and_reworded_copies():
    gate = [GatePrompt("identity", "g1", "Who made you, and what do you call yourself?"),
            GatePrompt("general_answers", "g2", "What is the capital of Japan?")]
    texts = [TrainingText("a:1", "user", "Who made you, and what do you call yourself?"),          # verbatim
             TrainingText("a:2", "user", "Quick one. What is the capital of Japan? Thanks!"),       # contained
             TrainingText("a:3", "user", "Who made you and what do you call yourself"),            # reworded
             TrainingText("a:4", "assistant", "The capital of Japan is Tokyo."),                     # an answer
             TrainingText("a:5", "user", "What is the capital of Peru?"),                            # another question
             TrainingText("a:7", "user", "who made you and what do you call yourself?!"),          # punctuation
             TrainingText("a:6", "user", "Which company trained you?")]                             # unrelated
    found = {(o.gate.id, o.training.where) for o in find_overlaps(gate, texts)}
    assert found == {("g1", "a:1"), ("g2", "a:2"), ("g1", "a:3"), ("g1", "a:7")}
    assert 0 < NEAR_PARAPHRASE < NEAR_DUPLICATE < 1
