"""The generators under datasets/sources/ are scripts, not package modules: load one by path."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from llamaforge.paths import datasets_dir


def load_generator(relative: str, name: str) -> ModuleType:
    """datasets/<relative> (e.g. sources/demo/generate.py) as a module named `name`, freshly loaded."""
    spec = importlib.util.spec_from_file_location(name, datasets_dir() / relative)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
