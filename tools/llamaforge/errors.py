"""Errors a user can cause. The CLI prints them as one line and exits 2, without a traceback.
Anything else that escapes is a bug and may raise."""

from __future__ import annotations

import re


class UserError(Exception):
    """Bad input from the user: a name, a path, a YAML file, a row. The message names the thing
    and the fix, on one line."""

    exit_code = 2


class Infeasible(UserError):
    """A request that cannot fit or run on the given hardware. Carries the reason and, where the
    planner found one, the smallest catalog hardware that would work."""

    exit_code = 1

    def __init__(self, message: str, *, suggestion: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.suggestion = suggestion
        self.details = details or {}


def clip(text: str, limit: int = 200) -> str:
    """`text` on one line (whitespace runs become one space), at most `limit` characters: a longer
    text is cut at the last word boundary and ends with "…", never mid-word without a mark."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if text[limit - 1] != " ":            # the cut falls inside a word: back to the last word boundary
        space = cut.rfind(" ")
        cut = cut[:space] if space > 0 else cut   # one word longer than the limit: cut it, marked
    return cut.rstrip(" ,;:") + "…"


def exception_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when the message is empty), clipped."""
    lines = str(exc).strip().splitlines()
    return clip(lines[0] if lines else type(exc).__name__, limit)


# Every character that ends a line somewhere a name can land: YAML (\n, \r, NEL, LS, PS), a
# terminal, a log line; and the other control characters.
LINE_BREAKS = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


def require_one_line(value: str, what: str) -> str:
    """`value` when it is a non-empty name on one line; else UserError naming `what`."""
    if not isinstance(value, str) or not value.strip() or LINE_BREAKS.search(value):
        raise UserError(f"{what} {value!r}: give a name on one line (no line breaks or control characters)")
    return value
