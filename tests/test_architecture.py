"""The package's import graph, read from the source (ast, nothing imported): no import circle between
modules, and no module importing from a layer above its own. The layers, bottom to top (README,
"Layout"), each importing only from its own layer or the ones below:

    core      errors, paths, files, lock, libraries, checkpoint (top-level modules)
    planning  catalog, train setup, memory, estimate, plan, DPO and serving and Mac estimates
    models    the tiny and the real pretrained model, created or fetched locally
    check     what Axolotl would make of a config
    corpus    the training corpus
    recipe    rendering recipes (SFT, DPO, specialists, serving, MLX) and the matrix
    gates     lm-eval gates
    run       staged training runs (they gate each stage)
    export    merge, NF4, serving files, model card, Hub upload
    demo      the whole workflow on a CPU
    cli       the command line
    __main__  `python -m llamaforge`

Folders on one layer (models, check) must not import each other. Function-level imports count
as much as top-level ones: hiding an import in a function does not change what depends on what."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tools" / "llamaforge"
CORE = {"errors", "paths", "files", "lock", "libraries", "checkpoint"}
LAYERS = [CORE, {"planning"}, {"models", "check"}, {"corpus"}, {"recipe"}, {"gates"}, {"run"}, {"export"},
          {"demo"}, {"cli"}, {"__main__"}]


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of the package -> the package modules it imports (anywhere in its body)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                candidates = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in files else prefix for a in node.names]
            else:
                continue
            for c in candidates:
                while c and c not in files and "." in c:
                    c = c.rsplit(".", 1)[0]
                if c in files and c != name and c != "llamaforge":
                    targets.add(c)
        graph[name] = targets
    return graph


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else parts[0]
    for i, folders in enumerate(LAYERS):
        if top in folders:
            return i
    raise AssertionError(f"{module}: not in any layer; add its folder to LAYERS (and README's layout section)")


def folder_of(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each once (as found by a depth-first search)."""
    found, state, stack = [], {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == "open":
                found.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for m, targets in sorted(graph.items()):
        for t in sorted(targets):
            lm, lt = layer_of(m), layer_of(t)
            if lt > lm:
                out.append(f"{m} imports {t}: upward ({folder_of(t)} is above {folder_of(m)})")
            elif lt == lm and lm != 0 and folder_of(m) != folder_of(t):
                out.append(f"{m} imports {t}: sideways ({folder_of(m)} and {folder_of(t)} share a layer)")
    return out


def test_the_package_has_no_import_circle():
    assert cycles(package_imports()) == []


def test_no_module_imports_from_a_layer_above_its_own():
    assert violations(package_imports()) == []


def test_every_module_has_a_layer():
    for m in package_imports():
        if m != "llamaforge":
            layer_of(m)


def _write(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "llamaforge"
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def test_the_checks_fail_on_a_circle_and_on_an_upward_import(tmp_path):
    """The graph reader sees relative, absolute and function-level imports, and both checks can fail."""
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "planning/__init__.py": "",
        "planning/plan.py": "from ..recipe.sft import x\n",               # upward, relative
        "recipe/__init__.py": "",
        "recipe/sft.py": "def f():\n    from . import matrix\n",          # function-level
        "recipe/matrix.py": "import llamaforge.recipe.sft\nfrom llamaforge.errors import E\n",
    })
    graph = package_imports(pkg)
    assert graph["llamaforge.recipe.sft"] == {"llamaforge.recipe.matrix"}
    assert graph["llamaforge.recipe.matrix"] == {"llamaforge.recipe.sft", "llamaforge.errors"}
    assert cycles(graph) == [["llamaforge.recipe.sft", "llamaforge.recipe.matrix", "llamaforge.recipe.sft"]]
    assert violations(graph) == ["llamaforge.planning.plan imports llamaforge.recipe.sft: upward (recipe is above planning)"]


def test_folders_on_one_layer_may_not_import_each_other(tmp_path):
    pkg = _write(tmp_path, {"__init__.py": "", "models/__init__.py": "", "check/__init__.py": "",
                            "check/findings.py": "from ..models import tiny\n", "models/tiny.py": ""})
    assert violations(package_imports(pkg)) == [
        "llamaforge.check.findings imports llamaforge.models.tiny: sideways (check and models share a layer)"]
