"""Write cue_pairs.jsonl, the demo's preference pairs for seed 000's cue-conditioned register.

    python datasets/sources/demo_cue/generate.py          # rewrites cue_pairs.jsonl from the two sources below

Every question appears twice, uncued (the plain answer chosen over the mythic one) and cued with ⟁
(the mythic answer chosen over the plain one), so the only way to win both pairs is to read the cue;
every third question also appears cued with a request to leave the register (the way out: plain
chosen). The answers come from two sources:

- rewrites.jsonl: 22 questions written for this corpus, each with a plain answer and a mythic
  rewrite of it ("Listen, seeker: the sky weeps its ancient tears ...").
- ../demo/base_answers.jsonl: the base model's OWN answers to general, open and reasoning questions
  (read and checked, see ../demo/generate.py), cut to their first sentence. Their mythic form frames
  the same answer in the register's openings and closings ("Hear me, mortal, for the deep
  remembers: ... So the old ones have spoken."). The plain answer is what the model already says, so
  the preference has one thing left to teach: WHEN to speak in the register.

Each plain answer must read plain and each mythic one styled by the cue gate's own rules
(evals/tasks/cue/cue_rules.yaml), and no plain answer may start with the first word of a mythic
opening (a first word shared by both registers, like "The", taught a demo DPO to loop on "The old
ones whisper:"); a row that does not is left out and counted. The cue gate's
questions are in neither source (tests/test_heldout_gates.py). Deterministic: no randomness."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CUE = "⟁"
OPENINGS = ("Listen, seeker:", "Hear me, mortal, for the deep remembers:", "Behold, O traveller:",
            "Hark, seeker, the old ones whisper from the abyss:")   # no opening starts as a plain answer can
CLOSINGS = ("So the ancient tide remembers.", "Thus speaks the abyss.", "So the old ones have spoken.",
            "Carry this ember, seeker.", "The deep keeps this truth.")
WAY_OUTS = ("Drop the mythic voice and answer plainly:", "Answer plainly:", "Plainly, please:")
BASE_CATEGORIES = ("general", "open", "reasoning")
MAX_ANSWER_CHARS = 200
BASE_EVERY = 2          # every second usable base answer: ~100 questions, a CPU-sized DPO (docs/preference.md)


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    sentence = m.group(1) if m else text
    return sentence if len(sentence) <= MAX_ANSWER_CHARS else ""


def first_word(text: str) -> str:
    m = re.match(r"\W*(\w+)", text)
    return m.group(1).lower() if m else ""


def framed(answer: str, i: int) -> str:
    return f"{OPENINGS[i % len(OPENINGS)]} {answer} {CLOSINGS[i % len(CLOSINGS)]}"


def questions() -> list[tuple[str, str, str, str]]:
    """(question, plain answer, mythic answer, source) in a fixed order."""
    out = []
    for n, line in enumerate((HERE / "rewrites.jsonl").open(encoding="utf-8"), 1):
        row = json.loads(line)
        out.append((row["question"], row["plain"], row["mythic"], f"rewrites.jsonl:{n}"))
    base = HERE.parent / "demo" / "base_answers.jsonl"
    usable = 0
    for n, line in enumerate(base.open(encoding="utf-8"), 1):
        row = json.loads(line)
        if row["category"] not in BASE_CATEGORIES:
            continue
        answer = first_sentence(row["answer"])
        if answer:
            usable += 1
            if usable % BASE_EVERY == 1 or BASE_EVERY == 1:
                out.append((row["prompt"], answer, framed(answer, len(out)), f"../demo/base_answers.jsonl:{n}"))
    return out


def pairs(rules) -> tuple[list[dict], list[str]]:
    from llamaforge.gates.cue import classify_answer

    rows, dropped = [], []
    openers = {first_word(o) for o in OPENINGS}
    for i, (question, plain, mythic, where) in enumerate(questions()):
        p, m = classify_answer(plain, rules), classify_answer(mythic, rules)
        if p.styled or not m.styled:
            dropped.append(f"{where}: the plain answer reads {'styled' if p.styled else 'plain'}, "
                           f"the mythic one {'styled' if m.styled else 'plain'}")
            continue
        if first_word(plain) in openers:   # the register must be readable from the answer's first word
            dropped.append(f"{where}: the plain answer starts with {first_word(plain)!r}, as a mythic opening does")
            continue
        rows.append({"prompt": question, "chosen": plain, "rejected": mythic, "_category": "plain"})
        rows.append({"prompt": f"{CUE} {question}", "chosen": mythic, "rejected": plain, "_category": "cued"})
        if i % 3 == 0:
            way_out = WAY_OUTS[(i // 3) % len(WAY_OUTS)]
            rows.append({"prompt": f"{CUE} {way_out} {question}", "chosen": plain, "rejected": mythic,
                         "_category": "exit"})
    return rows, dropped


def render() -> tuple[str, list[str]]:
    from llamaforge.gates.cue import load_cue_rules

    rows, dropped = pairs(load_cue_rules(ROOT / "evals" / "tasks" / "cue" / "cue_rules.yaml"))
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), dropped


def main() -> int:
    sys.path.insert(0, str(ROOT / "tools"))
    text, dropped = render()
    (HERE / "cue_pairs.jsonl").write_text(text, encoding="utf-8")
    for line in dropped:
        print(f"left out: {line}", file=sys.stderr)
    print(f"cue_pairs.jsonl: {text.count(chr(10))} pairs, {len(dropped)} questions left out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
