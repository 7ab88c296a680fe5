"""Benchmark of `llamaforge check` on many configs: one call over N files (one Axolotl process) against
one call per file (N processes, each importing Axolotl), on Axolotl's own example configs
(tests/fixtures/axolotl_examples).

    python bench/check_bench.py              # 10 files each way, then the whole folder in one call
    python bench/check_bench.py --files 25   # more files per side
    python bench/check_bench.py --json

It prints wall seconds per side, seconds per file, and the ratio. Both sides run Axolotl's own
validation (no --no-schema), from the examples' root, as `llamaforge check` would."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "tests" / "fixtures" / "axolotl_examples"


def run(args: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools"), AXOLOTL_DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llamaforge", "check", *args, "--json"], cwd=SUITE, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"check failed ({proc.returncode}): {proc.stderr[-500:]}")
    json.loads(proc.stdout)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    files = sorted(str(p.relative_to(SUITE)) for p in (SUITE / "examples").rglob("*.y*ml"))[: opts.files]
    one_call = run(files)
    per_file = sum(run([f]) for f in files)
    folder_files = len(list((SUITE / "examples").rglob("*.y*ml")))
    folder = run(["examples"])
    load = os.getloadavg()[0]
    result = {"files": len(files), "one_call_s": round(one_call, 1), "one_call_per_file_s": round(per_file, 1),
              "ratio": round(per_file / one_call, 1), "folder_files": folder_files, "folder_s": round(folder, 1),
              "load_average": round(load, 1)}
    if opts.json:
        print(json.dumps(result))
        return
    print(f"| {len(files)} configs | wall s | s per config |\n|---|---|---|")
    print(f"| one call | {one_call:.1f} | {one_call / len(files):.2f} |")
    print(f"| one call per config | {per_file:.1f} | {per_file / len(files):.2f} |")
    print(f"\none call per config is {per_file / one_call:.1f}x slower; the whole folder ({folder_files} configs) "
          f"in one call: {folder:.1f} s (load average {load:.1f})")


if __name__ == "__main__":
    main()
