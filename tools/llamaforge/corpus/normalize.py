"""Rows in, one normalized conversation out (pure).

Input formats (`auto` picks per row by its fields, in this order):
  messages         {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
  sharegpt         {"conversations": [{"from": "system"|"human"|"user"|"gpt"|"assistant", "value": str}, ...]}
  alpaca           {"instruction": str, "input": str (optional), "output": str, "system": str (optional)}
  prompt_response  {"prompt": str, "response" | "completion": str, "system": str (optional)}
  text             {"text": str}  -> one assistant turn (trained as a whole)

Out: a list of {"role", "content"} dicts, a system turn only first, the last turn the assistant's.

Preference pairs (a corpus of `kind: preference`, read by `normalize_preference_row`):
  {"prompt": str | [turns ending with the user's], "chosen": ANSWER, "rejected": ANSWER,
   "system": str (optional)}, where ANSWER is a str, {"role": "assistant", "content": str}, or a
  whole conversation [turns ending with the assistant's]; with conversations `prompt` may be left
  out: it is then their shared turns before the answer, which must be the same in both.
Out: (prompt turns, chosen text, rejected text), the shape Axolotl 0.19's DPO `chat_template.default`
reads (field_messages: prompt, field_chosen: chosen, field_rejected: rejected).
Nothing is coerced: a number where text belongs, a null content, an unknown role, an empty turn make
the row bad (`RowProblem` with a reason code) and it goes to quarantine. Text is kept exactly as it
came (no trimming, no Unicode normalization). An optional field (`input`, `system`) that is null
counts as absent.
"""

from __future__ import annotations

from typing import Any

ROLES = frozenset(("system", "user", "assistant"))
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant"}

# Reason codes of quarantined rows (docs/data.md lists them).
REASONS = {
    "invalid_json": "the line is not valid JSON",
    "invalid_utf8": "the line is not valid UTF-8 (it is quarantined as it is, never repaired)",
    "truncated_last_line": "the file ends in the middle of a row (no final newline, not valid JSON)",
    "not_an_object": "the row is JSON but not an object",
    "unknown_format": "the row has none of the fields of a known format",
    "missing_field": "a required field is absent",
    "wrong_type": "a field has the wrong type (never coerced)",
    "empty_conversation": "the conversation has no turns",
    "empty_message": "a turn's text is empty or only whitespace",
    "unknown_role": "a turn's role is not system, user or assistant (or a ShareGPT equivalent)",
    "misplaced_system": "a system turn that is not the first turn",
    "no_final_assistant": "the last turn is not the assistant's, so there is nothing to train on",
    "no_final_user": "a preference prompt's last turn is not the user's, so there is nothing to answer",
    "identical_pair": "chosen and rejected are the same text (ignoring surrounding white space): no preference",
    "prompt_mismatch": "chosen and rejected continue different conversations (or not the row's prompt)",
    "not_a_pair": "the row is not a chosen/rejected pair (a preference corpus reads only pairs)",
    "unreadable_source": "the source could not be read as a whole",
}


class RowProblem(Exception):
    """A bad row: `reason` is a code of REASONS, `detail` says what exactly."""

    __slots__ = ("reason", "detail")

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "text", bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _text_problem(value, name: str) -> RowProblem | None:
    """Why `value` (a field named `name`) is not usable text, or None."""
    if type(value) is not str:
        return RowProblem("wrong_type", f"{name} is {json_kind(value)}, expected text")
    if not value or value.isspace():
        return RowProblem("empty_message", f"{name} is empty")
    return None


def _text(obj: dict, key: str) -> str:
    if key not in obj:
        raise RowProblem("missing_field", f"no {key!r} field")
    problem = _text_problem(obj[key], repr(key))
    if problem:
        raise problem
    return obj[key]


def _optional_text(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is not str:
        raise RowProblem("wrong_type", f"{key!r} is {json_kind(value)}, expected text")
    return value


def _turn_problem(i: int, turn, key: str, role_key: str, text_key: str, role_map) -> RowProblem:
    """What is wrong with turn i (the slow path, only for bad rows)."""
    if type(turn) is not dict:
        return RowProblem("wrong_type", f"{key}[{i}] is {json_kind(turn)}, expected an object")
    if role_key not in turn:
        return RowProblem("missing_field", f"{key}[{i}] has no {role_key!r}")
    role = turn[role_key]
    if type(role) is not str:
        return RowProblem("wrong_type", f"{key}[{i}].{role_key} is {json_kind(role)}, expected text")
    if role not in role_map:
        return RowProblem("unknown_role", f"{key}[{i}].{role_key} is {role[:40]!r}")
    if text_key not in turn:
        return RowProblem("missing_field", f"{key}[{i}] has no {text_key!r}")
    return _text_problem(turn[text_key], f"{key}[{i}].{text_key}") or \
        RowProblem("misplaced_system", f"{key}[{i}] is a system turn after the first turn")


def _turns(items: Any, key: str, role_key: str, text_key: str, role_map, final: str = "assistant") -> list[dict]:
    if type(items) is not list:
        raise RowProblem("wrong_type", f"{key!r} is {json_kind(items)}, expected a list of turns")
    if not items:
        raise RowProblem("empty_conversation", f"{key!r} is an empty list")
    out = []
    append = out.append
    for turn in items:
        # One check for the common case; the slow path says exactly what is wrong.
        try:
            role = role_map.get(turn.get(role_key)) if type(turn) is dict else None
        except TypeError:  # an unhashable role
            role = None
        content = turn.get(text_key) if role is not None else None
        if type(content) is not str or not content or content.isspace() or (role == "system" and out):
            raise _turn_problem(len(out), turn, key, role_key, text_key, role_map)
        append({"role": role, "content": content})
    if role != final:
        raise RowProblem(f"no_final_{final}", f"the last turn of {key!r} is {role!r}, not {final!r}")
    return out


_IDENTITY_ROLES = {r: r for r in ROLES}


def _messages(obj: dict) -> list[dict]:
    if "messages" not in obj:
        raise RowProblem("missing_field", "no 'messages' field")
    return _turns(obj["messages"], "messages", "role", "content", _IDENTITY_ROLES)


def _sharegpt(obj: dict) -> list[dict]:
    if "conversations" not in obj:
        raise RowProblem("missing_field", "no 'conversations' field")
    return _turns(obj["conversations"], "conversations", "from", "value", SHAREGPT_ROLES)


def _with_system(obj: dict, user: str, answer: str) -> list[dict]:
    system = _optional_text(obj, "system")
    turns = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    if system:
        turns.insert(0, {"role": "system", "content": system})
    return turns


def _alpaca(obj: dict) -> list[dict]:
    instruction = _text(obj, "instruction")
    extra = _optional_text(obj, "input")
    user = f"{instruction}\n\n{extra}" if extra and not extra.isspace() else instruction
    return _with_system(obj, user, _text(obj, "output"))


def _prompt_response(obj: dict) -> list[dict]:
    prompt = _text(obj, "prompt")
    key = "response" if "response" in obj or "completion" not in obj else "completion"
    return _with_system(obj, prompt, _text(obj, key))


def _text_row(obj: dict) -> list[dict]:
    return [{"role": "assistant", "content": _text(obj, "text")}]


FORMAT_READERS = {"messages": _messages, "sharegpt": _sharegpt, "alpaca": _alpaca,
                  "prompt_response": _prompt_response, "text": _text_row}


def detect_format(obj: dict) -> str:
    """The format `auto` reads a row as (raises RowProblem when none fits)."""
    if "messages" in obj:
        return "messages"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj:
        return "alpaca"
    if "prompt" in obj:
        return "prompt_response"
    if "text" in obj:
        return "text"
    keys = ", ".join(list(obj)[:6]) or "none"
    raise RowProblem("unknown_format", f"fields ({keys}) match no format: messages, conversations, "
                                       "instruction/output, prompt/response, text")


def normalize_row(obj: Any, fmt: str = "auto") -> list[dict]:
    """The conversation of one parsed row. Raises RowProblem for a bad row."""
    if type(obj) is not dict:
        raise RowProblem("not_an_object", f"the row is {json_kind(obj)}, expected an object")
    if fmt == "auto":
        fmt = detect_format(obj)
    return FORMAT_READERS[fmt](obj)


def row_category(obj: dict, fixed: str | None, field_name: str | None) -> str:
    """The row's category: its `field_name` field when set and present, else the fixed one."""
    if field_name is not None:
        if field_name in obj:
            value = obj[field_name]
            problem = _text_problem(value, repr(field_name))
            if problem:
                raise problem
            return value
        if fixed is None:
            raise RowProblem("missing_field", f"no {field_name!r} field (the spec takes the category from it)")
    return fixed  # type: ignore[return-value]


def add_system_prompt(messages: list[dict], prompt: str) -> list[dict]:
    """The persona's system prompt first, unless the conversation has a system turn already."""
    if messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": prompt}, *messages]


# ---- preference pairs ------------------------------------------------------------------------

def _answer(value: Any, key: str) -> tuple[list[dict] | None, str]:
    """(the conversation before it or None, the answer text) of a `chosen`/`rejected` value."""
    if type(value) is str:
        problem = _text_problem(value, repr(key))
        if problem:
            raise problem
        return None, value
    if type(value) is dict:
        role = value.get("role", "assistant")
        if role != "assistant":
            raise RowProblem("unknown_role", f"{key}.role is {str(role)[:40]!r}, expected 'assistant'")
        if "content" not in value:
            raise RowProblem("missing_field", f"{key} has no 'content'")
        problem = _text_problem(value["content"], f"{key}.content")
        if problem:
            raise problem
        return None, value["content"]
    if type(value) is list:
        turns = _turns(value, key, "role", "content", _IDENTITY_ROLES)
        return turns[:-1], turns[-1]["content"]
    raise RowProblem("wrong_type", f"{key!r} is {json_kind(value)}, expected text, an assistant turn or a conversation")


def normalize_preference_row(obj: Any) -> tuple[list[dict], str, str]:
    """(prompt turns, chosen text, rejected text) of one parsed preference row. Raises RowProblem."""
    if type(obj) is not dict:
        raise RowProblem("not_an_object", f"the row is {json_kind(obj)}, expected an object")
    if "chosen" not in obj and "rejected" not in obj:
        keys = ", ".join(list(obj)[:6]) or "none"
        raise RowProblem("not_a_pair", f"fields ({keys}) have no chosen/rejected pair")
    for key in ("chosen", "rejected"):
        if key not in obj:
            raise RowProblem("missing_field", f"no {key!r} field")
    chosen_before, chosen = _answer(obj["chosen"], "chosen")
    rejected_before, rejected = _answer(obj["rejected"], "rejected")
    prompt_value = obj.get("prompt")
    if prompt_value is None:
        if chosen_before is None or rejected_before is None:
            raise RowProblem("missing_field", "no 'prompt' field (needed unless chosen and rejected are conversations)")
        prompt = chosen_before
    elif type(prompt_value) is str:
        problem = _text_problem(prompt_value, "'prompt'")
        if problem:
            raise problem
        prompt = [{"role": "user", "content": prompt_value}]
    else:
        prompt = _turns(prompt_value, "prompt", "role", "content", _IDENTITY_ROLES, final="user")
    for before, key in ((chosen_before, "chosen"), (rejected_before, "rejected")):
        if before is not None and before != prompt:
            raise RowProblem("prompt_mismatch", f"the turns of {key!r} before its answer are not the prompt"
                             + (" of 'chosen'" if prompt_value is None else ""))
    if not prompt:
        raise RowProblem("empty_conversation", "the prompt has no turns")
    if prompt[-1]["role"] != "user":
        raise RowProblem("no_final_user", f"the prompt's last turn is {prompt[-1]['role']!r}, not 'user'")
    system = _optional_text(obj, "system")
    if system and not system.isspace():
        if prompt[0]["role"] == "system":
            raise RowProblem("misplaced_system", "a 'system' field and a system turn in the prompt; keep one")
        prompt = [{"role": "system", "content": system}, *prompt]
    if chosen.strip() == rejected.strip():
        raise RowProblem("identical_pair", "chosen and rejected are the same text")
    return prompt, chosen, rejected


def assistant_answers(row: dict) -> list[str]:
    """The answers QC judges in an output row: every assistant turn of an SFT row, the chosen answer
    of a preference pair (what training moves towards)."""
    if "chosen" in row:
        return [row["chosen"]["content"]]
    return [m["content"] for m in row["messages"] if m["role"] == "assistant"]


def review_turns(row: dict) -> list[dict]:
    """The turns of an output row as review.md shows them; a pair's answers are labelled."""
    if "chosen" in row:
        return [*row["prompt"], {"role": "chosen", "content": row["chosen"]["content"]},
                {"role": "rejected", "content": row["rejected"]["content"]}]
    return row["messages"]
