"""The corpus builder: spec -> read -> validate -> normalize -> dedup -> mix -> split/sample ->
write + manifest. See docs/data.md.

Public API (the modules import numpy and friends only when used):
  build_corpus(spec_path, options=None, progress=None, cwd=None) -> BuildResult   (corpus.build)
  load_manifest(path, verify="size") -> dict, manifest_hash(path) -> str         (corpus.manifest)
  load_spec(path) -> CorpusSpec                                                   (corpus.spec)
"""

from __future__ import annotations

from .manifest import load_manifest, manifest_hash

__all__ = ["build_corpus", "load_manifest", "load_spec", "manifest_hash"]


def build_corpus(*args, **kwargs):
    from .build import build_corpus as _build

    return _build(*args, **kwargs)


def load_spec(path):
    from .spec import load_spec as _load

    return _load(path)
