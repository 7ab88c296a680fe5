"""Generated blocks of the docs (calibration tables) kept in sync with the tests that produce them."""

from __future__ import annotations

import os
from pathlib import Path


def assert_block_in_sync(doc: Path, begin: str, end: str, block: str, regenerate: str) -> None:
    """The text between `begin` and `end` in `doc` must be `block`; with LLAMAFORGE_REGEN_DOCS=1 it is
    rewritten (atomically) first. `regenerate` is the command the failure message names."""
    text = doc.read_text(encoding="utf-8")
    assert begin in text and end in text, f"{doc} lacks the {begin} / {end} markers"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    fresh = f"{head}{begin}\n{block}\n{end}{tail}"
    if os.environ.get("LLAMAFORGE_REGEN_DOCS") == "1":
        tmp = doc.with_suffix(".md.tmp")
        tmp.write_text(fresh, encoding="utf-8")
        os.replace(tmp, doc)
        text = fresh
    assert text == fresh, f"{doc.name}'s generated table is stale: run {regenerate}"
