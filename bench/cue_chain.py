"""What seed 000's preference chain reaches on the real CPU model (SmolLM2-135M-Instruct): the cue
gate of the base, of an SFT stage on the cued mythic answers, and of a DPO stage on the cue pairs
that starts from the merged SFT model, run through `llamaforge run` (validate, then optionally full
with --force). A measurement of learning, not of speed: it prints one table, base -> SFT -> DPO.

    python bench/cue_chain.py --workdir build/bench/cue-chain                 # SFT 3 epochs, DPO lr 1e-3, 3 epochs
    python bench/cue_chain.py --dpo-lr 3e-3 --dpo-epochs 4 --full             # a stronger DPO, and its full run

The recipes are the slow tests' (tests/recipe/dpo/cue_demo.py): LoRA r 16 on the top 10 of the 30
layers, CPU settings. The SFT stage trains the `cued` rows of datasets/demo_cue.yaml (the prompt with
⟁ and its mythic chosen answer): seed 000's stage 2, "supervised fine-tuning on the curated mythic
data", before the preference stage that conditions the register on the cue. docs/preference.md has
the measured numbers."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "tests" / "recipe" / "dpo")]

from cue_demo import write_dpo_recipe, write_sft_recipe  # noqa: E402

from llamaforge.corpus.build import BuildOptions, build_corpus  # noqa: E402
from llamaforge.export.merge import merge_adapter  # noqa: E402
from llamaforge.models.pretrained import ensure_pretrained, link_model_folder  # noqa: E402
from llamaforge.paths import datasets_dir  # noqa: E402

METRICS = ("cue_following", "cued_styled", "uncued_plain", "exit_honoured", "persona_collapse")


def sft_rows(pairs: Path, out: Path, registers: str = "cued") -> int:
    """The pairs as SFT rows, each prompt with its chosen answer: the cued ones only (the prompt with
    ⟁, the mythic answer), or `both` registers (the plain and way-out pairs' plain answers too)."""
    out.mkdir(parents=True, exist_ok=True)
    kept = 0
    for split in ("train", "eval"):
        with open(pairs / f"{split}.jsonl", encoding="utf-8") as src, open(out / f"{split}.jsonl", "w", encoding="utf-8") as dst:
            for line in src:
                row = json.loads(line)
                if registers == "both" or row.get("_category") == "cued":
                    dst.write(json.dumps({"messages": row["prompt"] + [row["chosen"]],
                                          "_category": row.get("_category")}) + "\n")
                    kept += split == "train"
    return kept


def gate_values(results: Path) -> tuple[dict, dict]:
    gates = json.loads(results.read_text())["gates"]
    return ({g["name"]: g.get("base_value") for g in gates}, {g["name"]: g.get("value") for g in gates})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.error = lambda message: sys.exit(print(f"cue_chain: {message}", file=sys.stderr) or 2)   # one line
    ap.add_argument("--workdir", default="build/bench/cue-chain")
    ap.add_argument("--sft-epochs", type=int, default=3)
    ap.add_argument("--sft-registers", choices=("cued", "both"), default="cued",
                    help="SFT on the cued mythic answers only, or on the plain answers too")
    ap.add_argument("--dpo-lr", type=float, default=1e-3)
    ap.add_argument("--dpo-epochs", type=int, default=3)
    ap.add_argument("--dpo-loss", choices=("dpo", "dpo+nll"), default="dpo",
                    help="plain DPO on the top 10 layers (the measurements of docs/preference.md's chain), or DPO "
                         "plus the chosen answers' NLL on every layer (what the slow test trains)")
    ap.add_argument("--full", action="store_true", help="also run the DPO full stage (--force where validation failed)")
    args = ap.parse_args()
    problem = next((f"{opt} must be {want}, not {value!r}" for opt, value, ok, want in (
        ("--sft-epochs", args.sft_epochs, args.sft_epochs >= 1, "a whole number >= 1"),
        ("--dpo-epochs", args.dpo_epochs, args.dpo_epochs >= 1, "a whole number >= 1"),
        ("--dpo-lr", args.dpo_lr, math.isfinite(args.dpo_lr) and 0 < args.dpo_lr < 1, "a number between 0 and 1"),
        ("--workdir", args.workdir, not Path(args.workdir).exists() or Path(args.workdir).is_dir(), "a folder"),
    ) if not ok), None)
    if problem:
        print(f"cue_chain: {problem}", file=sys.stderr)
        return 2
    env = dict(os.environ, AXOLOTL_DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    started = time.monotonic()
    times: dict[str, float] = {}

    def timed(name, fn):
        t = time.monotonic()
        out = fn()
        times[name] = time.monotonic() - t
        return out

    def sh(cmd, log):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        Path(log).write_text(res.stdout + res.stderr)
        return res.returncode

    pairs = build_corpus(datasets_dir() / "demo_cue.yaml", BuildOptions(workers=1), cwd=work).out_dir
    model = link_model_folder(ensure_pretrained("smollm2-135m").path, work / "model")
    rows = sft_rows(pairs, work / "sft-corpus", args.sft_registers)
    sft = write_sft_recipe(work / "sft.yaml", model, work / "sft-corpus", output_dir="outputs/sft", epochs=args.sft_epochs)
    sft.write_text(sft.read_text().replace("micro_batch_size: 8", "micro_batch_size: 4"))   # small corpora: more steps an epoch
    if timed("sft", lambda: sh(["accelerate", "launch", "--cpu", "--num_processes", "1", "-m", "axolotl.cli.train",
                                str(sft)], "sft.log")):
        print(f"SFT failed: {work / 'sft.log'}")
        return 1
    if not timed("merge", lambda: merge_adapter(model, work / "outputs/sft", work / "merged")).passed:
        print("the merge did not verify")
        return 1
    timed("sft gates", lambda: sh(["llamaforge", "gates", "--model", str(work / "merged"), "--base", str(model),
                                   "--profile", "cue", "--output", str(work / "sft-gates")], "sft-gates.log"))
    base, tuned_sft = gate_values(work / "sft-gates/results.json")
    dpo = write_dpo_recipe(work / "dpo.yaml", work / "merged", pairs, output_dir="outputs/dpo",
                           epochs=args.dpo_epochs, learning_rate=args.dpo_lr, nll=args.dpo_loss == "dpo+nll")
    columns = {"base": base, f"SFT ({args.sft_registers})": tuned_sft}
    stages = ["validate"] + (["full"] if args.full else [])
    for stage in stages:
        cmd = ["llamaforge", "run", str(dpo), "--stage", stage] + (["--force"] if stage == "full" else [])
        timed(f"dpo {stage}", lambda: sh(cmd, f"dpo-{stage}.log"))
        report = json.loads((work / "runs/dpo" / stage / "report.json").read_text())
        results = work / "runs/dpo" / stage / "gates/results.json"
        health = "health passed" if report["health"]["passed"] else "health FAILED: " + ", ".join(
            c["name"] for c in report["health"]["checks"] if c["status"] != "pass")
        print(f"DPO {stage}: {health}")
        if results.is_file():
            columns[f"SFT + DPO {stage}"] = gate_values(results)[1]
    print(f"\nrows: SFT {rows} {args.sft_registers} answers x {args.sft_epochs} epochs; {args.dpo_loss} lr {args.dpo_lr:g}, "
          f"{args.dpo_epochs} epochs\n")
    print("| gate | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for m in METRICS:
        print(f"| {m} | " + " | ".join("—" if c.get(m) is None else f"{c[m]:.2f}" for c in columns.values()) + " |")
    print("\n" + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; {time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
