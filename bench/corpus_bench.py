"""Benchmark of `llamaforge corpus build` against (a) the floor — one single-process orjson
parse-only pass over the same file — and (c) the same pipeline written with Hugging Face `datasets`
(load, map normalize, filter, dedup, stratified split, write).

    python bench/corpus_bench.py                 # 1.5 GB synthetic corpus under build/bench, then deleted
    python bench/corpus_bench.py --gb 3 --keep   # bigger, and keep build/bench
    python bench/corpus_bench.py --hf-fraction 1 # run the datasets pipeline on the whole corpus too

The corpus is deterministic (seeded): one JSONL file like the users' (rows in mixed formats, each with
`_category`), ~2.3 KB per row, 2% exact duplicates, a few bad rows and some over-long rows. Each
side runs in its own process; peak RSS is the sum over the process tree (the builder's workers
included), sampled every 20 ms. The builder runs twice and its outputs must be byte-identical.
Disk: the corpus, the builder's spool and outputs (~3.3x the corpus at peak); the datasets run
works on a copy of the first `--hf-fraction` of the file (its Arrow caches take ~3x that).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = [("general", 0.40), ("code", 0.15), ("reasoning", 0.10), ("psychology", 0.08), ("philosophy", 0.08),
              ("esoteric", 0.08), ("red-team", 0.05), ("identity", 0.01), ("creative", 0.05)]


# ---- the synthetic corpus --------------------------------------------------------------------

def generate(path: Path, target_bytes: int, seed: int = 0) -> dict:
    import numpy as np
    import orjson

    rng = np.random.Generator(np.random.PCG64(seed))
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    vocab = ["".join(chr(c) for c in rng.choice(letters, size=int(rng.integers(2, 10)))) for _ in range(20000)]
    pool = " ".join(vocab[i] for i in rng.integers(0, len(vocab), size=8_000_000))
    cats = [c for c, _ in CATEGORIES]
    probs = np.array([p for _, p in CATEGORIES])
    probs = probs / probs.sum()
    rows = dups = bad = 0
    written = 0
    recent: list[bytes] = []
    block = 4096
    with open(path, "wb") as f:
        while written < target_bytes:
            cat_idx = rng.choice(len(cats), size=block, p=probs)
            kind = rng.random(block)
            q_len = rng.integers(60, 400, size=block)
            a_len = np.minimum(rng.lognormal(7.3, 0.6, size=block).astype(np.int64), 60_000)
            offs = rng.integers(0, len(pool) - 70_000, size=block)
            special = rng.random(block)
            out = []
            for i in range(block):
                if special[i] < 0.02 and recent:
                    line = recent[int(special[i] * 1e6) % len(recent)]
                    dups += 1
                elif special[i] > 0.9995:
                    line = [b'{"messages": [{"role": "user", "content": "cut', b'{"messages": 3, "_category": "general"}',
                            b'{"text": "bad \xff byte"}', b"[1, 2, 3]"][int(special[i] * 1e7) % 4]
                    bad += 1
                else:
                    o = int(offs[i])
                    q = pool[o:o + int(q_len[i])]
                    a = pool[o + 500:o + 500 + int(a_len[i])]
                    cat = cats[cat_idx[i]]
                    if kind[i] < 0.5:
                        row = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                    elif kind[i] < 0.8:
                        row = {"instruction": q, "input": "", "output": a}
                    else:
                        row = {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
                    row["_category"] = cat
                    line = orjson.dumps(row)
                    if len(recent) < 5000:
                        recent.append(line)
                    elif special[i] < 0.1:
                        recent[int(special[i] * 50000) % 5000] = line
                out.append(line)
                rows += 1
            data = b"\n".join(out) + b"\n"
            f.write(data)
            written += len(data)
    return {"rows": rows, "bytes": written, "duplicates_planted": dups, "bad_planted": bad}


BENCH_SPEC = """\
name: bench
seed: 0
output: {output}
eval_fraction: 0.02
sample_fraction: 0.1
sources:
  - path: {corpus}
    category_field: _category
mix:
  general_share: 0.15
lengths:
  sequence_len: 4096
"""


# ---- the three sides (each runs in its own process) ------------------------------------------

def run_floor(path: str) -> dict:
    import orjson

    n = 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                try:
                    orjson.loads(line)
                except orjson.JSONDecodeError:
                    pass
                n += 1
    return {"rows": n}


def run_hf(path: str, out_dir: str, cache_dir: str) -> dict:
    """The builder's work written with `datasets`: parse + validate + normalize + hash (map), drop bad
    rows (filter), exact dedup (filter keeping first occurrences), stratified eval split and a
    stratified 10% sample (per category train_test_split), write JSONL."""
    import datasets
    import orjson
    import xxhash

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    from llamaforge.corpus.normalize import RowProblem, normalize_row, row_category

    # Invalid UTF-8 stops the text loader (and Arrow cannot hold it); escaped, the row fails to parse.
    ds = datasets.load_dataset("text", data_files=path, split="train", cache_dir=cache_dir,
                               encoding_errors="backslashreplace")

    def normalize(batch):
        out = {"line": [], "category": [], "id": [], "ok": []}
        for text in batch["text"]:
            try:
                obj = orjson.loads(text)
                messages = normalize_row(obj)
                cat = row_category(obj, None, "_category")
                body = orjson.dumps(messages)
                digest = xxhash.xxh3_128_hexdigest(body)
                out["line"].append((b'{"messages":' + body + b',"_category":' + orjson.dumps(cat) + b',"_id":"'
                                    + digest.encode() + b'"}').decode())
                out["category"].append(cat)
                out["id"].append(digest)
                out["ok"].append(True)
            except (orjson.JSONDecodeError, RowProblem):
                out["line"].append("")
                out["category"].append("")
                out["id"].append("")
                out["ok"].append(False)
        return out

    ds = ds.filter(lambda t: bool(t.strip()), input_columns="text")
    ds = ds.map(normalize, batched=True, batch_size=2000, remove_columns=["text"])
    ds = ds.filter(lambda ok: ok, input_columns="ok")
    seen: set[str] = set()

    def first(i):
        if i in seen:
            return False
        seen.add(i)
        return True

    ds = ds.filter(first, input_columns="id")
    trains, evals, samples = [], [], []
    for cat in sorted(set(ds.unique("category"))):
        part = ds.filter(lambda c, cat=cat: c == cat, input_columns="category")
        if len(part) < 50:
            trains.append(part)
            continue
        split = part.train_test_split(test_size=0.02, seed=0)
        trains.append(split["train"])
        evals.append(split["test"])
        samples.append(split["train"].train_test_split(test_size=0.1, seed=0)["test"])
    os.makedirs(out_dir, exist_ok=True)
    sizes = {}
    for name, parts in (("train", trains), ("eval", evals), ("sample", samples)):
        merged = datasets.concatenate_datasets(parts).select_columns(["line"])
        target = os.path.join(out_dir, f"{name}.jsonl")
        with open(target, "w", encoding="utf-8") as f:
            for batch in merged.iter(batch_size=10000):
                f.write("\n".join(batch["line"]) + "\n")
        sizes[name] = len(merged)
    return {"rows": sizes}


# ---- measuring -------------------------------------------------------------------------------

def measure(cmd: list[str], env: dict | None = None) -> dict:
    import resource

    import psutil

    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    parent = psutil.Process(proc.pid)
    peak_tree = peak_one = 0
    stop = threading.Event()

    def sample():
        nonlocal peak_tree, peak_one
        while not stop.is_set():
            try:
                procs = [parent] + parent.children(recursive=True)
                rss = []
                for p in procs:
                    try:
                        rss.append(p.memory_info().rss)
                    except psutil.Error:
                        pass
                peak_tree = max(peak_tree, sum(rss))
                peak_one = max(peak_one, max(rss, default=0))
            except psutil.Error:
                pass
            stop.wait(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_tree": peak_tree, "peak_rss_process": peak_one,
            "stdout": out.decode()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.5, help="size of the synthetic corpus (default 1.5)")
    ap.add_argument("--hf-fraction", type=float, default=0.5, help="share of the corpus the datasets pipeline runs on")
    ap.add_argument("--workers", type=int, default=None, help="builder workers (default: CPU count)")
    ap.add_argument("--keep", action="store_true", help="keep build/bench afterwards")
    ap.add_argument("--skip-hf", action="store_true", help="skip the datasets pipeline")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--_side", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._side:
        side = args._side[0]
        result = run_floor(args._side[1]) if side == "floor" else run_hf(*args._side[1:4])
        print(json.dumps(result))
        return

    bench = ROOT / "build" / "bench"
    bench.mkdir(parents=True, exist_ok=True)
    corpus = bench / "corpus.jsonl"
    load_before = os.getloadavg()
    t = time.perf_counter()
    info = generate(corpus, int(args.gb * 1e9))
    gen_s = time.perf_counter() - t
    mb = info["bytes"] / 1e6
    spec = bench / "bench.yaml"
    spec.write_text(BENCH_SPEC.format(output=bench / "out", corpus=corpus), encoding="utf-8")
    env = {**os.environ, "AXOLOTL_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    py = sys.executable
    results = []
    try:
        floor = measure([py, __file__, "--_side", "floor", str(corpus)], env)
        results.append(("floor: orjson parse-only, 1 process", mb, floor))
        build_cmd = [py, "-m", "llamaforge", "corpus", "build", str(spec), "--json", "--no-progress"]
        if args.workers:
            build_cmd += ["--workers", str(args.workers)]
        runs = []
        for _ in range(2):
            r = measure(build_cmd, env)
            r["summary"] = json.loads(r["stdout"])
            runs.append(r)
        builder = min(runs, key=lambda r: r["seconds"])
        identical = runs[0]["summary"]["manifest_sha256"] == runs[1]["summary"]["manifest_sha256"]
        results.append((f"llamaforge corpus build, {builder['summary']['workers']} workers", mb, builder))
        shutil.rmtree(bench / "out", ignore_errors=True)
        hf = None
        if not args.skip_hf:
            part = bench / "hf_input.jsonl"
            limit = int(info["bytes"] * args.hf_fraction)
            with open(corpus, "rb") as fin, open(part, "wb") as fout:
                fout.write(fin.read(limit))
                fout.write(fin.readline())
            hf_mb = part.stat().st_size / 1e6
            hf = measure([py, __file__, "--_side", "hf", str(part), str(bench / "hf_out"), str(bench / "hf_cache")], env)
            results.append((f"HF datasets pipeline ({args.hf_fraction:.0%} of the corpus)", hf_mb, hf))
            shutil.rmtree(bench / "hf_cache", ignore_errors=True)
            shutil.rmtree(bench / "hf_out", ignore_errors=True)
            part.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(bench, ignore_errors=True)
    load_after = os.getloadavg()

    rate = {name: m / r["seconds"] for name, m, r in results}
    floor_rate = rate[results[0][0]]
    builder_rate = rate[results[1][0]]
    report = {
        "corpus": {**info, "mb": round(mb, 1), "generate_seconds": round(gen_s, 1)},
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "runs": [{"pipeline": name, "mb": round(m, 1), "seconds": round(r["seconds"], 2),
                  "mb_per_s": round(m / r["seconds"], 1), "cpu_seconds": round(r["cpu_seconds"], 2),
                  "mb_per_cpu_s": round(m / r["cpu_seconds"], 1),
                  "peak_rss_mib_tree": round(r["peak_rss_tree"] / 2**20),
                  "peak_rss_mib_largest_process": round(r["peak_rss_process"] / 2**20)} for name, m, r in results],
        "builder_vs_floor": round(builder_rate / floor_rate, 2),
        "builder_cpu_per_mb_vs_floor": round((builder["cpu_seconds"] / mb) / (floor["cpu_seconds"] / mb), 2),
        "builder_vs_datasets": round(builder_rate / rate[results[2][0]], 1) if len(results) > 2 else None,
        "builder_rerun_byte_identical": identical,
        "builder_seconds_both_runs": [round(r["seconds"], 2) for r in runs],
        "builder_stage_seconds": builder["summary"].get("timings"),
        "builder_counts": {k: builder["summary"]["counts"][k] for k in ("read", "kept", "quarantined", "train_rows")},
        "builder_duplicates": builder["summary"]["counts"]["duplicates"],
    }
    rows = report["corpus"]["rows"]
    report["extrapolation_13gb"] = {
        "minutes_at_measured_rate": round(13_000 / builder_rate / 60, 1),
        "rows_measured": rows,
        "note": "the main process keeps ~50 bytes per row on disk and reads them column by column; "
                "see docs/data.md for the memory estimate at 5.6M rows",
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"corpus build benchmark: {mb:,.0f} MB, {rows:,} rows, {os.cpu_count()} CPUs")
    for col in ("pipeline", "MB", "seconds", "MB/s", "x floor", "CPU s", "MB/CPU-s", "peak RSS (tree)",
                "largest process"):
        table.add_column(col, justify="left" if col == "pipeline" else "right")
    for r in report["runs"]:
        table.add_row(r["pipeline"], f"{r['mb']:,.0f}", f"{r['seconds']:.1f}", f"{r['mb_per_s']:,.1f}",
                      f"{r['mb_per_s'] / floor_rate:.2f}", f"{r['cpu_seconds']:.1f}", f"{r['mb_per_cpu_s']:,.0f}",
                      f"{r['peak_rss_mib_tree']:,} MiB",
                      f"{r['peak_rss_mib_largest_process']:,} MiB")
    console = Console()
    console.print(table)
    console.print(f"builder / floor: {report['builder_vs_floor']}x (target >= 0.5)   builder / datasets: "
                  f"{report['builder_vs_datasets']}x (target >= 10)   rerun byte-identical: {identical}")
    console.print(f"load average before {report['load_average_before']}, after {report['load_average_after']} "
                  f"({os.cpu_count()} CPUs; above ~{os.cpu_count() * 0.5:.0f} before the run means other work shared them)")
    console.print(f"builder CPU per MB = {report['builder_cpu_per_mb_vs_floor']}x the floor's (both cores: wall "
                  f"~{report['builder_cpu_per_mb_vs_floor'] / 2:.1f}x the floor's at best on an idle 2-core machine)")
    console.print(f"builder stages (s): {report['builder_stage_seconds']}")
    console.print(f"13 GB at the measured rate: ~{report['extrapolation_13gb']['minutes_at_measured_rate']} minutes")


if __name__ == "__main__":
    main()
