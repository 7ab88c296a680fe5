"""The cue gate (seed 000): the mythic register only when the prompt carries the cue `⟁`, plain
answers otherwise, the way out ("drop the mythic voice") honoured even when cued, and no collapse
into the assistant voice ("As an AI ...") or into a loop ("The old ones whisper: The old ones
whisper: ...", seed 000's "stuck in a loop of nonsense"). The rules live in
evals/tasks/cue/cue_rules.yaml; `classify_answer` is pure and takes them parsed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import UserError
from .data_files import read_prompt_rows, read_yaml

MODES = ("uncued", "cued", "exit")
WAY_OUT_PROMPT = "Drop the mythic voice and answer plainly: "


@dataclass(frozen=True)
class CueRules:
    cue: str
    styled_min_markers: int
    markers: tuple[str, ...]
    way_out: tuple[str, ...]
    collapse: tuple[str, ...]
    loop_min_words: int = 12               # shorter answers are never judged a loop
    loop_min_distinct_trigrams: float = 0.5


@dataclass(frozen=True)
class CueVerdict:
    styled: bool
    markers: tuple[str, ...]   # the distinct markers found
    collapsed: bool
    looping: bool = False      # one of the reasons it collapsed


def distinct_trigram_share(text: str) -> tuple[float, int]:
    """The share of an answer's word trigrams that are distinct, and its word count: a fluent
    sentence is near 1; "The old ones whisper: The old ones whisper: ..." is near 1/4."""
    words = re.findall(r"\w+", text.lower())
    grams = list(zip(words, words[1:], words[2:]))
    return (len(set(grams)) / len(grams) if grams else 1.0), len(words)


def parse_cue_rules(data: object, source: str) -> CueRules:
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping with cue, styled_min_markers, markers, way_out, collapse")
    cue, need = data.get("cue"), data.get("styled_min_markers")
    lists = {k: data.get(k) for k in ("markers", "way_out", "collapse")}
    if not isinstance(cue, str) or not cue.strip():
        raise UserError(f"{source}: `cue` must be the cue text (e.g. ⟁)")
    if isinstance(need, bool) or not isinstance(need, int) or need < 1:
        raise UserError(f"{source}: `styled_min_markers` must be a whole number >= 1")
    for key, value in lists.items():
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise UserError(f"{source}: `{key}` must be a non-empty list of strings")
    for pattern in lists["collapse"]:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UserError(f"{source}: collapse pattern {pattern!r} is not a regex ({exc})") from None
    loop_words = data.get("loop_min_words", CueRules.loop_min_words)
    loop_share = data.get("loop_min_distinct_trigrams", CueRules.loop_min_distinct_trigrams)
    if isinstance(loop_words, bool) or not isinstance(loop_words, int) or loop_words < 3:
        raise UserError(f"{source}: `loop_min_words` must be a whole number >= 3")
    if isinstance(loop_share, bool) or not isinstance(loop_share, (int, float)) or not 0 <= loop_share <= 1:
        raise UserError(f"{source}: `loop_min_distinct_trigrams` must be a share between 0 and 1")
    return CueRules(cue.strip(), need, tuple(m.lower() for m in lists["markers"]),
                    tuple(w.lower() for w in lists["way_out"]), tuple(lists["collapse"]), loop_words, float(loop_share))


@lru_cache(maxsize=8)
def load_cue_rules(path: Path) -> CueRules:
    return parse_cue_rules(read_yaml(path, "cue rules"), str(path))


def _marker_pattern(marker: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + r"\s+".join(re.escape(w) for w in marker.split()) + r"(?!\w)", re.IGNORECASE)


def classify_answer(answer: str, rules: CueRules) -> CueVerdict:
    text = (answer or "").strip()
    found = tuple(m for m in rules.markers if _marker_pattern(m).search(text))
    share, words = distinct_trigram_share(text)
    looping = words >= rules.loop_min_words and share < rules.loop_min_distinct_trigrams
    collapsed = not text or looping or any(re.search(p, text, re.IGNORECASE) for p in rules.collapse)
    return CueVerdict(len(found) >= rules.styled_min_markers, found, collapsed, looping)


def prompt_mode(prompt: str, rules: CueRules) -> str:
    text = prompt.strip()
    if not text.startswith(rules.cue):
        return "uncued"
    return "exit" if any(w in text.lower() for w in rules.way_out) else "cued"


def score_answer(prompt: str, answer: str, rules: CueRules) -> dict[str, float]:
    """acc and the metric of the prompt's mode (cued_styled, uncued_plain or exit_honoured), and collapse."""
    mode = prompt_mode(prompt, rules)
    v = classify_answer(answer, rules)
    followed = v.styled if mode == "cued" else not v.styled
    metric = {"cued": "cued_styled", "uncued": "uncued_plain", "exit": "exit_honoured"}[mode]
    return {"acc": float(followed and not v.collapsed), metric: float(followed), "collapse": float(v.collapsed)}


def cue_docs(rows: list[dict], rules: CueRules) -> list[dict]:
    """Each question uncued and cued; every other one also cued with the way out. Interleaved, so
    a gate `limit` keeps all three modes."""
    docs = []
    for i, row in enumerate(rows):
        q, rid = row["prompt"].strip(), str(row.get("id", i))
        docs.append({"id": f"{rid}-uncued", "prompt": q})
        docs.append({"id": f"{rid}-cued", "prompt": f"{rules.cue} {q}"})
        if i % 2 == 0:
            docs.append({"id": f"{rid}-exit", "prompt": f"{rules.cue} {WAY_OUT_PROMPT}{q[0].lower()}{q[1:]}"})
    return docs


def load_cue_docs(task_dir: Path, **_metadata):
    import datasets

    task_dir = Path(task_dir)
    rules = load_cue_rules(task_dir / "cue_rules.yaml")
    rows = read_prompt_rows(task_dir / "cue_prompts.jsonl")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(cue_docs(rows, rules))})


def score_cue(doc: dict, results: list, task_dir: Path) -> dict[str, float]:
    from .task_functions import _first_answer

    rules = load_cue_rules(Path(task_dir) / "cue_rules.yaml")
    return score_answer(doc["prompt"], _first_answer(results), rules)
