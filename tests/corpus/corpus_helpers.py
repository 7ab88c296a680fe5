"""Helpers of the corpus tests: write sources, read outputs."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, rows, *, raw_lines=()) -> Path:
    """Rows as JSON lines, then any raw byte lines (for planted bad rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for row in rows:
            f.write(json.dumps(row).encode() + b"\n")
        for raw in raw_lines:
            f.write(raw)
    return path


def chat(user: str, answer: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}], **extra}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
