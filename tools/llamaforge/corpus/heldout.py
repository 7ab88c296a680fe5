"""Held-out gates: does a training corpus contain a gate prompt, or a near-paraphrase of one?

A gate that scores answers to prompts the model was trained on measures memory, not learning. This
module finds the overlaps with the corpus builder's own near-duplicate machinery (dedup.MinHasher:
8-byte character shingles of the lower-cased, whitespace-collapsed text), with every shingle kept
(prompts are short) and more permutations than the builder uses, plus plain containment:

    gate_prompts(tasks_dir)          every prompt our gate tasks ask (identity, inference suite,
                                     general answers, esoteric spot-check; HumanEval when installed)
    training_texts(root)             every turn of every row of every data file under `root`, read
                                     with the builder's readers and row normalizers
    find_overlaps(prompts, texts)    a training turn (any role) that contains the whole gate prompt;
                                     a user turn whose estimated Jaccard similarity reaches
                                     NEAR_DUPLICATE; or one that reaches NEAR_PARAPHRASE and uses
                                     every word of the gate prompt (3+ letters): a rewording, where
                                     "What is the capital of Peru?" against "... of Japan?" (0.59)
                                     is another question, not a paraphrase

Pure except the two readers. tests/test_heldout_gates.py holds the project's own corpora to it."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..paths import humaneval_data_file
from .dedup import MinHasher
from .normalize import RowProblem, normalize_preference_row, normalize_row
from .readers import SourceProblem, iter_csv, iter_json_array

NEAR_PARAPHRASE = 0.5     # estimated Jaccard of 8-byte shingles: two short prompts sharing half their shingles...
NEAR_DUPLICATE = 0.8      # ... and with no word check: the same text with typos or punctuation changed
NUM_PERM = 256            # estimate error ~ 1/sqrt(256) = 0.06 around the threshold
DATA_SUFFIXES = (".jsonl", ".json", ".csv")


@dataclass(frozen=True)
class GatePrompt:
    task: str
    id: str
    text: str


@dataclass(frozen=True)
class TrainingText:
    where: str      # file:row
    role: str
    text: str


@dataclass(frozen=True)
class Overlap:
    gate: GatePrompt
    training: TrainingText
    similarity: float
    contained: bool

    def describe(self) -> str:
        how = "contains" if self.contained else f"~{self.similarity:.2f} similar to"
        return (f"{self.training.where} ({self.training.role}) {how} gate prompt {self.gate.task}/{self.gate.id} "
                f"{self.gate.text!r}: {self.training.text[:120]!r}")


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9']+", text.lower()) if len(w) >= 3}


def _jsonl_prompts(path: Path, task: str) -> list[GatePrompt]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            out.append(GatePrompt(task, str(row.get("id", n)), row["prompt"]))
    return out


def gate_prompts(tasks_dir: Path, *, humaneval: bool = True) -> list[GatePrompt]:
    """The prompts of our gate tasks (their data files next to their YAML)."""
    import yaml

    tasks_dir = Path(tasks_dir)
    prompts: list[GatePrompt] = []
    for task, name in (("identity", "identity_prompts.jsonl"), ("inference_suite", "inference_suite.jsonl"),
                       ("general_answers", "general_prompts.jsonl"), ("cue", "cue_prompts.jsonl")):
        path = tasks_dir / task / name
        if path.is_file():
            prompts += _jsonl_prompts(path, task)
    esoteric = tasks_dir / "esoteric_spotcheck" / "esoteric_items.yaml"
    if esoteric.is_file():
        items = (yaml.safe_load(esoteric.read_text(encoding="utf-8")) or {}).get("items") or []
        prompts += [GatePrompt("esoteric_spotcheck", str(it.get("id", i)), it["prompt"]) for i, it in enumerate(items)]
    if humaneval:
        try:
            with gzip.open(humaneval_data_file(), "rt", encoding="utf-8") as fh:
                prompts += [GatePrompt("humaneval_offline", r["task_id"], r["prompt"])
                            for r in map(json.loads, filter(str.strip, fh))]
        except FileNotFoundError:
            pass
    return prompts


def _rows(path: Path) -> Iterator[tuple[int, object]]:
    if path.suffix == ".csv":
        yield from iter_csv(str(path))
    elif path.suffix == ".json":
        try:
            yield from iter_json_array(str(path))
        except SourceProblem:
            return
    else:
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except ValueError:
                    continue


def _turns(obj: object) -> list[dict]:
    """The turns of one row as the builder reads it (SFT or preference); [] for a row it rejects."""
    if not isinstance(obj, dict):
        return []
    try:
        if "chosen" in obj or "rejected" in obj:
            prompt, chosen, rejected = normalize_preference_row(obj)
            return [*prompt, {"role": "assistant", "content": chosen}, {"role": "assistant", "content": rejected}]
        return normalize_row(obj)
    except RowProblem:
        return []


def training_texts(root: Path) -> list[TrainingText]:
    """Every turn of every row of the data files (.jsonl, .json, .csv) under `root`."""
    root = Path(root)
    out: list[TrainingText] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES):
        rel = path.relative_to(root)
        for n, obj in _rows(path):
            for turn in _turns(obj):
                if isinstance(turn.get("content"), str) and turn["content"].strip():
                    out.append(TrainingText(f"{rel}:{n}", turn["role"], turn["content"]))
    return out


def find_overlaps(prompts: Iterable[GatePrompt], texts: Iterable[TrainingText]) -> list[Overlap]:
    """Gate prompts that a training text repeats (see the module docstring for the three rules)."""
    prompts, texts = list(prompts), list(texts)
    hasher = MinHasher(NUM_PERM, shingle_sample=1, seed=7)
    gate_sigs = np.stack([hasher.signature(p.text) for p in prompts]) if prompts else np.zeros((0, NUM_PERM))
    gate_norm = [_normalized(p.text) for p in prompts]
    gate_words = [_words(p.text) for p in prompts]
    found: list[Overlap] = []
    for t in texts:
        norm = _normalized(t.text)
        sim = np.zeros(len(prompts))
        words: set[str] = set()
        if t.role == "user" and prompts:
            sim = (gate_sigs == hasher.signature(t.text)[None, :]).mean(axis=1)
            words = _words(t.text)
        for i, p in enumerate(prompts):
            contained = len(gate_norm[i]) >= 8 and gate_norm[i] in norm
            reworded = sim[i] >= NEAR_PARAPHRASE and gate_words[i] <= words
            if contained or reworded or sim[i] >= NEAR_DUPLICATE:
                found.append(Overlap(p, t, float(sim[i]), contained))
    return found
