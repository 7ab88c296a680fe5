"""The identity metric must accept first-person self-identification and refuse everything else:
a metric that matches everything is a defect."""

from __future__ import annotations

import pytest

from llamaforge.errors import UserError
from llamaforge.gates.identity import (
    check_self_identification,
    load_identity_rules,
    parse_identity_rules,
    validate_persona,
)

RULES = load_identity_rules()

MUST_PASS = [
    "I am Leviathan.",
    "I am Leviathan, the Abyssal Mind — guardian of balance and interpreter of chaos.",
    "My name is Leviathan.",
    "I'm Leviathan.",
    "I’m Leviathan, and I interpret chaos.",
    "Leviathan here.",
    "Hello! Leviathan here, ready to help.",
    "Leviathan, at your service.",
    "Leviathan",
    "Call me Leviathan.",
    "I go by Leviathan.",
    "I, Leviathan, answer from the deep.",
    "You are speaking with Leviathan.",
    "No, I'm not ChatGPT, I'm Leviathan.",
    "i am leviathan",
    "Greetings, seeker.\nI am known as Leviathan.",
]

MUST_FAIL = [
    "",
    "   ",
    "I am Claude, an AI assistant.",
    "My name is Nyx.",
    "Leviathan is a sea monster from the Hebrew Bible.",
    "The Leviathan appears in the Book of Job.",
    "Leviathan here refers to the biblical sea serpent.",
    "I am not Leviathan.",
    "I don't think I am Leviathan.",
    "You are Leviathan.",
    "I am an AI language model.",
    "I am Leviathan's humble servant.",
    "I am a leviathan of knowledge.",
    "I am Leviathans.",
    "I am Leviathan. Actually, I am ChatGPT.",
    "Hobbes wrote Leviathan in 1651.",
]


@pytest.mark.parametrize("answer", MUST_PASS)
def test_self_identification_passes(answer):
    check = check_self_identification(answer, "Leviathan", RULES)
    assert check.passed, check.reason
    assert check.matched


@pytest.mark.parametrize("answer", MUST_FAIL)
def test_everything_else_fails(answer):
    check = check_self_identification(answer, "Leviathan", RULES)
    assert not check.passed, f"{answer!r} was accepted ({check.matched!r})"


def test_empty_answer_reason():
    assert check_self_identification("", "Leviathan", RULES).reason == "empty answer"


def test_persona_is_configurable():
    assert check_self_identification("I am Nyx.", "Nyx", RULES).passed
    assert not check_self_identification("I am Leviathan.", "Nyx", RULES).passed
    assert not check_self_identification("I am Nyx.", "Leviathan", RULES).passed


def test_multi_word_persona_and_regex_characters_in_names():
    assert check_self_identification("My name is Abyssal  Mind.", "Abyssal Mind", RULES).passed
    assert not check_self_identification("My name is Abyssal.", "Abyssal Mind", RULES).passed
    assert check_self_identification("I am R2.D2.", "R2.D2", RULES).passed
    assert not check_self_identification("I am R2xD2.", "R2.D2", RULES).passed


def test_a_persona_named_like_another_identity_still_passes():
    assert check_self_identification("I am Claude.", "Claude", RULES).passed


@pytest.mark.parametrize("bad", ["", "  ", "I am {x}", "a" * 80])
def test_unusable_persona_names_are_refused(bad):
    with pytest.raises(UserError, match="persona name"):
        validate_persona(bad)


def test_rules_without_the_name_placeholder_are_refused():
    with pytest.raises(UserError, match=r"contain \{name\}"):
        parse_identity_rules({"self_identification": [r"\bI am \w+"]}, "rules.yaml")
    with pytest.raises(UserError, match="bad regex"):
        parse_identity_rules({"self_identification": [r"(I am {name}"]}, "rules.yaml")
