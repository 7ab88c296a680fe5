"""Reading the gates' data files (gates.yaml, the tasks' rules and prompts): a UserError naming the
file and the problem, on one line, instead of a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import yaml_error_line


def read_yaml(path: Path, what: str = "file") -> Any:
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: {yaml_error_line(exc)}") from None


def read_prompt_rows(path: Path) -> list[dict]:
    """JSON lines, each an object with a non-empty "prompt"."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise UserError(f"{path}:{n}: each row needs a non-empty \"prompt\" string")
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no prompts")
    return rows
