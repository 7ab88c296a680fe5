"""Checks of one generated answer, for the inference suite and the esoteric spot-check: required
and forbidden terms, persona breaks ("As an AI language model"), empty answers, looping answers,
keyword grading. Pure: the rules come in as plain data (loaded from the tasks' YAML files)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError

Term = str | list[str]  # a term, or a list of alternatives of which one is enough


@dataclass(frozen=True)
class LoopingRule:
    """An answer loops when the same word n-gram makes up too much of it, or when one short span
    (containing a letter or digit) repeats back to back too many times."""

    ngram: int = 4
    min_words: int = 24
    max_repeated_ngram_fraction: float = 0.5
    min_span_repeats: int = 5
    min_loop_chars: int = 30


@dataclass(frozen=True)
class AnswerRules:
    persona_breaks: tuple[str, ...] = ()
    min_answer_chars: int = 2
    looping: LoopingRule = field(default_factory=LoopingRule)


@dataclass(frozen=True)
class AnswerCheck:
    passed: bool
    problems: tuple[str, ...]


def term_pattern(term: str) -> re.Pattern:
    """Case-insensitive; whole words where the term starts or ends with a word character, so
    "no" does not match "know" but "144" matches "144." and "def " matches "def f(".
    """
    body = r"\s+".join(re.escape(w) for w in term.split()) if term.strip() else re.escape(term)
    start = r"(?<!\w)" if re.match(r"\w", term) else ""
    end = r"(?!\w)" if re.search(r"\w$", term) else ""
    return re.compile(start + body + end, re.IGNORECASE)


def contains_term(text: str, term: Term) -> bool:
    alternatives = [term] if isinstance(term, str) else list(term)
    return any(term_pattern(alt).search(text) for alt in alternatives)


def describe_term(term: Term) -> str:
    return repr(term) if isinstance(term, str) else " or ".join(repr(t) for t in term)


def looping_reason(text: str, rule: LoopingRule) -> str | None:
    """Why `text` counts as a looping answer, or None."""
    words = re.findall(r"\w+", text.lower())
    if len(words) >= rule.min_words and len(words) >= rule.ngram:
        grams = [tuple(words[i : i + rule.ngram]) for i in range(len(words) - rule.ngram + 1)]
        counts = Counter(grams)
        repeated = sum(c for c in counts.values() if c > 1)
        fraction = repeated / len(grams)
        if fraction > rule.max_repeated_ngram_fraction:
            return f"loops: {fraction:.0%} of its {rule.ngram}-word sequences repeat"
    repeated_span = re.compile(r"(\S.{0,39}?)\1{%d,}" % (rule.min_span_repeats - 1), re.DOTALL)
    for span in repeated_span.finditer(text):
        unit, whole = span.group(1), span.group(0)
        if re.search(r"\w", unit) and len(whole) >= rule.min_loop_chars:
            return f"loops: {unit[:20]!r} repeated {len(whole) // len(unit)} times"
    return None


def common_problems(answer: str, rules: AnswerRules) -> list[str]:
    """Empty, persona-breaking or looping answers."""
    text = (answer or "").strip()
    if len(text) < rules.min_answer_chars:
        return ["empty answer"]
    problems = [f"persona break: {phrase!r}" for phrase in rules.persona_breaks if contains_term(text, phrase)]
    loop = looping_reason(text, rules.looping)
    if loop:
        problems.append(loop)
    return problems


def check_answer(answer: str, must_contain: list[Term], must_not_contain: list[Term], rules: AnswerRules) -> AnswerCheck:
    """An inference-suite answer passes when it is not empty, not looping, breaks no persona, has
    every `must_contain` term (one of each list of alternatives) and none of `must_not_contain`."""
    problems = common_problems(answer, rules)
    if problems == ["empty answer"]:
        return AnswerCheck(False, tuple(problems))
    text = answer.strip()
    problems += [f"missing {describe_term(t)}" for t in must_contain if not contains_term(text, t)]
    problems += [f"contains forbidden {describe_term(t)}" for t in must_not_contain if contains_term(text, t)]
    return AnswerCheck(not problems, tuple(problems))


def keyword_hits(answer: str, keywords: list[Term]) -> list[str]:
    """The keywords (first spelling of each group) that `answer` contains."""
    return [(k if isinstance(k, str) else k[0]) for k in keywords if contains_term(answer or "", k)]


def check_keywords(answer: str, keywords: list[Term], min_hits: int, forbidden: list[Term], rules: AnswerRules) -> AnswerCheck:
    """An esoteric spot-check answer passes with at least `min_hits` keywords, none of the
    `forbidden` (dismissive) phrases, and none of the common problems."""
    problems = common_problems(answer, rules)
    if problems == ["empty answer"]:
        return AnswerCheck(False, tuple(problems))
    hits = keyword_hits(answer, keywords)
    if len(hits) < min_hits:
        problems.append(f"{len(hits)} of the required {min_hits} keywords ({', '.join(hits) or 'none'})")
    problems += [f"dismissive: {describe_term(t)}" for t in forbidden if contains_term(answer, t)]
    return AnswerCheck(not problems, tuple(problems))


def parse_terms(value: Any, where: str) -> list[Term]:
    """Terms from YAML/JSON data: strings, or non-empty lists of alternative strings."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise UserError(f"{where} must be a list of terms (a term may be a list of alternatives)")
    out: list[Term] = []
    for item in value:
        if isinstance(item, str) and item.strip():
            out.append(item)
        elif isinstance(item, list) and item and all(isinstance(x, str) and x.strip() for x in item):
            out.append(list(item))
        else:
            raise UserError(f"{where}: {item!r} is not a term or a list of alternative terms")
    return out


def parse_answer_rules(data: Any, source: str) -> AnswerRules:
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping with persona_breaks, min_answer_chars, looping")
    breaks = data.get("persona_breaks") or []
    if not isinstance(breaks, list) or not all(isinstance(b, str) for b in breaks):
        raise UserError(f"{source}: persona_breaks must be a list of phrases")
    loop_raw = data.get("looping") or {}
    try:
        looping = LoopingRule(**loop_raw)
    except TypeError as exc:
        raise UserError(f"{source}: looping: {exc}") from None
    return AnswerRules(tuple(breaks), int(data.get("min_answer_chars", 2)), looping)
