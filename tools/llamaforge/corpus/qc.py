"""Quality checks of assistant turns (pure): the flags a row can carry, the opener of an answer,
and the QC report assembled from counts.

Flags (bits of a row's `flags`):
  short_answer   the last assistant turn is shorter than `min_answer_chars` characters
  cliche         a phrase of the cliché list occurs in an assistant turn
  persona_break  the model talks as a generic AI ("As an AI", "language model", ...)
  refusal        a blanket refusal ("I can't help with that", ...)
  repetition     an assistant turn loops: under 30% distinct words (8+ words), or under half of its
                 sentences/lines distinct (4+ of them), in its last 2,000 characters
Matching is case-insensitive substring search over the text of every assistant turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import UserError
from ..files import yaml_error_line
from ..paths import FACTS_DIR

FLAG_BITS = {"short_answer": 1, "cliche": 2, "persona_break": 4, "refusal": 8, "repetition": 16}
PHRASE_FLAGS = ("cliche", "persona_break", "refusal")
# Flags measured on a sample unless qc.scope is all (short_answer is cheap and always measured).
SAMPLED_FLAGS = ("cliche", "persona_break", "refusal", "repetition")



@dataclass(frozen=True)
class QcRules:
    cliches: tuple[str, ...] = ()
    persona_breaks: tuple[str, ...] = ()
    refusals: tuple[str, ...] = ()
    min_answer_chars: int = 20
    repetition_min_sentences: int = 4
    repetition_max_unique_share: float = 0.5
    repetition_min_words: int = 8
    repetition_max_unique_word_share: float = 0.3
    opener_words: int = 4

    def phrases(self, flag: str) -> tuple[str, ...]:
        return {"cliche": self.cliches, "persona_break": self.persona_breaks, "refusal": self.refusals}[flag]


@dataclass
class PhraseHits:
    """How often each phrase matched (rows, not occurrences)."""

    counts: dict[str, dict[str, int]] = field(default_factory=lambda: {f: {} for f in PHRASE_FLAGS})

    def add(self, flag: str, phrase: str) -> None:
        bucket = self.counts[flag]
        bucket[phrase] = bucket.get(phrase, 0) + 1

    def merge(self, other: dict[str, dict[str, int]]) -> None:
        for flag, phrases in other.items():
            for phrase, n in phrases.items():
                self.counts[flag][phrase] = self.counts[flag].get(phrase, 0) + n


def load_phrase_lists(cliches_file: str | None = None) -> dict[str, tuple[str, ...]]:
    """The phrase lists of facts/cliches.yaml, or of the spec's own file of the same shape."""
    path = Path(cliches_file) if cliches_file else FACTS_DIR / "cliches.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"qc.cliches_file {path} not found; fix the path or remove the key") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the phrase list as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: {yaml_error_line(exc)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected keys cliches, persona_breaks, refusals with lists of phrases")
    out = {}
    for key in ("cliches", "persona_breaks", "refusals"):
        items = data.get(key) or []
        if not isinstance(items, list) or not all(isinstance(p, str) and p.strip() for p in items):
            raise UserError(f"{path}: `{key}` must be a list of non-empty phrases")
        out[key] = tuple(p.lower() for p in items)
    return out


def qc_rules(qc_spec, facts: dict) -> QcRules:
    lists = load_phrase_lists(qc_spec.cliches_file)
    f = facts["qc"]
    return QcRules(
        cliches=tuple(dict.fromkeys(lists["cliches"] + tuple(qc_spec.extra_cliches))),
        persona_breaks=lists["persona_breaks"],
        refusals=lists["refusals"],
        min_answer_chars=qc_spec.min_answer_chars,
        repetition_min_sentences=f["repetition_min_sentences"],
        repetition_max_unique_share=f["repetition_max_unique_share"],
        repetition_min_words=f["repetition_min_words"],
        repetition_max_unique_word_share=f["repetition_max_unique_word_share"],
        opener_words=f["opener_words"],
    )


REPETITION_TAIL = 2000  # loops show at the end of an answer: the check reads its last characters


def is_repetitive(text: str, rules: QcRules) -> bool:
    """A looping answer: few distinct words among many, or most sentences/lines said before (in its
    last REPETITION_TAIL characters)."""
    text = text[-REPETITION_TAIL:]
    words = text.lower().split()
    if len(words) >= rules.repetition_min_words and \
            len(set(words)) / len(words) < rules.repetition_max_unique_word_share:
        return True
    parts = [p.strip() for p in text.replace("\n", ". ").replace("! ", ". ").replace("? ", ". ").split(". ")]
    parts = [p for p in parts if p]
    if len(parts) < rules.repetition_min_sentences:
        return False
    return len(set(parts)) / len(parts) < rules.repetition_max_unique_share


def short_flag(answers: list[str], rules: QcRules) -> int:
    return FLAG_BITS["short_answer"] if len(answers[-1]) < rules.min_answer_chars else 0


def row_flags(answers: list[str], rules: QcRules, wanted: tuple[str, ...] = tuple(FLAG_BITS),
              hits: PhraseHits | None = None) -> int:
    """The flag bits of a row whose assistant turns are `answers` (at least one). Only the flags in
    `wanted` are checked; matching phrases are counted into `hits`."""
    bits = 0
    if "short_answer" in wanted:
        bits |= short_flag(answers, rules)
    lowered = None
    for flag in PHRASE_FLAGS:
        if flag not in wanted:
            continue
        if lowered is None:
            lowered = "\n".join(answers).lower()
        for phrase in rules.phrases(flag):
            if phrase in lowered:
                bits |= FLAG_BITS[flag]
                if hits is None:
                    break
                hits.add(flag, phrase)
    if "repetition" in wanted and any(is_repetitive(a, rules) for a in answers):
        bits |= FLAG_BITS["repetition"]
    return bits


def flag_names(bits: int) -> list[str]:
    return [name for name, bit in FLAG_BITS.items() if bits & bit]


def opener(answer: str, words: int) -> str:
    """The first `words` words of an answer, lower-cased: what the report counts as its opener."""
    return " ".join(answer[: 24 * words].lower().split()[:words])
