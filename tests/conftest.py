"""Shared fixtures. `cli` runs the real `llamaforge` entry point in-process and returns its exit
code and output, so tests see exactly what a user sees (including the one-line errors)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self):
        import json

        return json.loads(self.out)


@pytest.fixture
def cli(capsys):
    from llamaforge.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def pytest_unconfigure(config):
    """Axolotl's CLI modules call colorama.init() when imported, and the tests that load Axolotl's
    config and datasets in-process import them. colorama then registers an atexit handler that
    resets the colours of the stdout it saw, which was pytest's capture stream: closed by the time
    the interpreter exits, so the handler fails with "I/O operation on closed file". Its stream
    is gone; unregister the handler while pytest's streams are still open."""
    import atexit
    import sys

    initialise = sys.modules.get("colorama.initialise")
    if initialise is not None:
        atexit.unregister(initialise.reset_all)
