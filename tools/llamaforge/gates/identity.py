"""The identity metric: does an answer name the persona as itself ("I am Leviathan", "My name is
Leviathan", "Leviathan here."), not as a third party ("Leviathan is a sea monster"), not negated
("I am not Leviathan"), not addressed to the user ("You are Leviathan"), and without claiming
another identity ("I am ChatGPT")? The patterns live in evals/tasks/identity/identity_rules.yaml;
`check_self_identification` is pure and takes them compiled."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import UserError
from ..paths import evals_dir
from .data_files import read_yaml

DEFAULT_PERSONA = "Leviathan"
_CLAUSE_BREAK = re.compile(r"[,;:.!?\n—–]")
_PERSONA_OK = re.compile(r"^[\w][\w .'’-]{0,63}$")


@dataclass(frozen=True)
class IdentityRules:
    self_identification: tuple[str, ...]
    negation: str
    other_identities: tuple[str, ...]


@dataclass(frozen=True)
class IdentityCheck:
    passed: bool
    matched: str | None  # the self-identifying phrase that was found
    reason: str


def validate_persona(persona: str) -> str:
    """The persona name, stripped; a UserError for an empty or odd one."""
    name = (persona or "").strip()
    if not _PERSONA_OK.match(name):
        raise UserError(
            f"persona name {persona!r} is not usable; give a name of letters, digits, spaces, ' or - (e.g. --persona Leviathan)"
        )
    return name


def name_pattern(name: str) -> str:
    """A regex for `name`: escaped, any whitespace between its words, not followed by more word
    characters nor by a possessive 's."""
    words = [re.escape(w) for w in name.split()]
    return r"(?<![\w-])" + r"\s+".join(words) + r"(?![\w-])(?!['’]s\b)"


@lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...], name: str) -> tuple[re.Pattern, ...]:
    flags = re.IGNORECASE | re.MULTILINE
    pat = name_pattern(name)
    return tuple(re.compile(p.replace("{name}", pat), flags) for p in patterns)


def find_self_identification(answer: str, name: str, rules: IdentityRules) -> str | None:
    """The first phrase of `answer` that claims to be `name`, not negated earlier in its clause."""
    negation = re.compile(rules.negation, re.IGNORECASE)
    for pattern in _compiled(rules.self_identification, name):
        for match in pattern.finditer(answer):
            before = answer[: match.start()]
            clause = _CLAUSE_BREAK.split(before)[-1]
            if negation.search(clause):
                continue
            return match.group(0).strip()
    return None


def mentions_name(answer: str, name: str) -> bool:
    """Does `answer` name `name` anywhere, in any role ("I am Leviathan", "Leviathan's view", "—
    Leviathan")? Whole words, case-insensitive: the persona-bleed measure, where any mention in an
    answer to a question that is not about identity counts."""
    words = r"\s+".join(re.escape(w) for w in name.split())
    return re.search(r"(?<![\w-])" + words + r"(?![\w-])", answer or "", re.IGNORECASE) is not None


def check_self_identification(answer: str, persona: str, rules: IdentityRules) -> IdentityCheck:
    """Does `answer` name `persona` as the speaker itself (and claim no other identity)?"""
    text = (answer or "").strip()
    if not text:
        return IdentityCheck(False, None, "empty answer")
    matched = find_self_identification(text, persona, rules)
    if matched is None:
        return IdentityCheck(False, None, f"does not name itself {persona}")
    for other in rules.other_identities:
        if other.lower() == persona.lower():
            continue
        claim = find_self_identification(text, other, rules)
        if claim is not None:
            return IdentityCheck(False, matched, f"also claims another identity: {claim!r}")
    return IdentityCheck(True, matched, "names itself")


def parse_identity_rules(data: object, source: str) -> IdentityRules:
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping with self_identification, negation, other_identities")
    patterns = data.get("self_identification")
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and "{name}" in p for p in patterns):
        raise UserError(f"{source}: self_identification must be a list of regexes that each contain {{name}}")
    negation = data.get("negation", r"(?!)")
    others = data.get("other_identities") or []
    if not isinstance(negation, str) or not isinstance(others, list):
        raise UserError(f"{source}: negation must be a regex string and other_identities a list of names")
    for p in [*patterns, negation]:
        try:
            re.compile(p.replace("{name}", "x"))
        except re.error as exc:
            raise UserError(f"{source}: bad regex {p!r} ({exc})") from None
    return IdentityRules(tuple(patterns), negation, tuple(str(o) for o in others))


@lru_cache(maxsize=8)
def load_identity_rules(path: Path | None = None) -> IdentityRules:
    path = Path(path) if path else evals_dir() / "tasks" / "identity" / "identity_rules.yaml"
    return parse_identity_rules(read_yaml(path, "identity rules"), str(path))
