"""Every committed recipe's header figures come from one `llamaforge estimate` command, which the
header prints (`# Estimate:`): running that command reproduces the memory, host RAM, throughput,
MFU, hours and cost the header states."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from llamaforge.paths import recipes_dir

MEMORY = re.compile(r"^# Memory:\s+~([\d.]+) GiB peak per GPU of ([\d.]+) usable; host RAM ~([\d,.]+) GiB")
THROUGHPUT = re.compile(r"^# Throughput:\s+~([\d,]+) tokens/s.*\((\d+)% MFU assumed.*1B training tokens take ~([\d,.]+) h, ~\$([\d,]+)")
ESTIMATE = re.compile(r"^# Estimate:\s+(llamaforge estimate .+?)\s*$")
# MLX-LM configs for a Mac (templates/mlx/lora.yaml.j2)
MLX_MEMORY = re.compile(r"^# Memory:\s+~([\d,]+) GiB peak of ([\d,]+) GiB the GPU may use")
MLX_THROUGHPUT = re.compile(r"^# Throughput:\s+~([\d,]+) tokens/s; .* take ~([\d,]+) h")

# every Axolotl recipe (a `# llamaforge-model:` header); not accelerate configs nor corpus specs
RECIPES = sorted(p for p in recipes_dir().rglob("*.yaml") if "\n# llamaforge-model:" in p.read_text(encoding="utf-8"))


def _header(path: Path) -> dict[str, re.Match]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        for name, pattern in (("memory", MEMORY), ("throughput", THROUGHPUT), ("estimate", ESTIMATE),
                              ("mlx_memory", MLX_MEMORY), ("mlx_throughput", MLX_THROUGHPUT)):
            if (m := pattern.match(line)) is not None:
                found[name] = m
    return found


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _shows(value: float, shown: float, unit: float) -> bool:
    """`shown` is `value` printed to `unit` (the JSON rounds to 3 decimals first, so allow that)."""
    return abs(value - shown) <= unit / 2 + 1e-3 * max(1.0, abs(value))


def test_there_are_recipes_with_estimates():
    assert sum(1 for p in RECIPES if "estimate" in _header(p)) >= 15


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(recipes_dir())))
def test_the_header_estimate_command_reproduces_its_figures(path, cli):
    header = _header(path)
    assert "estimate" in header, f"{path}: the header states an estimate but not the command that makes it"
    args = shlex.split(header["estimate"].group(1))
    res = cli(*args[1:], "--json")
    assert res.code == 0, res.err
    est = res.json()
    if "mlx_memory" in header:                 # an MLX-LM config for a Mac
        est = est["estimate"]
        peak, usable = (_number(g) for g in header["mlx_memory"].groups())
        assert _shows(est["peak_gib"], peak, 1) and _shows(est["usable_gib"], usable, 1)
        tps, hours = (_number(g) for g in header["mlx_throughput"].groups())
        assert _shows(est["tokens_per_s"], tps, 1) and _shows(est["hours"], hours, 1)
        return
    assert "memory" in header and "throughput" in header, path
    peak, usable, host = (_number(g) for g in header["memory"].groups())
    assert _shows(est["peak_gpu_gib"], peak, 0.1), (est["peak_gpu_gib"], peak)
    assert _shows(est["usable_gpu_gib"], usable, 0.1)
    assert _shows(est["host_ram_gib"], host, 1)
    tps, mfu, hours, cost = (_number(g) for g in header["throughput"].groups())
    assert _shows(est["tokens_per_s"], tps, 1), (est["tokens_per_s"], tps)
    assert _shows(100 * est["mfu"], mfu, 1)
    assert _shows(est["hours"], hours, 0.1)
    assert _shows(est["cost_usd"], cost, 1)
    if est["verdict"] == "tight":
        assert "tight:" in path.read_text(encoding="utf-8").split("# Throughput:")[0]
