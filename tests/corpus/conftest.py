"""Fixtures of the corpus tests: a working folder where specs and sources are written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


class CorpusDir:
    """A temporary working folder (the current directory during the test); `dir / "x"` is a path in
    it and `spec(sources=[...], **keys)` writes a corpus spec there."""

    def __init__(self, path: Path):
        self.path = path

    def __truediv__(self, other) -> Path:
        return self.path / other

    def spec(self, name: str = "c", *, sources, output: str = "out", **keys) -> Path:
        data = {"name": name, "seed": 0, "output": output, "sources": sources, **keys}
        path = self.path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path


@pytest.fixture
def corpus_dir(tmp_path, monkeypatch) -> CorpusDir:
    monkeypatch.chdir(tmp_path)
    return CorpusDir(tmp_path)
