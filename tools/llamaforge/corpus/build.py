"""`llamaforge corpus build SPEC`: the whole build, streaming and in two passes.

Pass 1 (workers, in parallel over byte ranges of the sources): read, validate, normalize, hash; the
normalized rows go to a spool on disk, split into shuffle buckets by their seeded key; a compact
record per row (~50 bytes) comes back. Bad rows go to quarantine.jsonl with source, line and reason.
Decide (main process, numpy over the records): exact dedup, QC and length drops, near dedup, eval
hold-out, mix, limit, sample, phases; then the offset of every output row is known.
Pass 2 (workers, in parallel over buckets): each bucket's rows are written in key order at their
offsets of train/eval/sample. Then hashes, the QC report, the review file and, last, the manifest.

Everything is written into a temporary folder next to the output, which replaces the output folder
only when complete: an interrupted build leaves the previous corpus (or nothing), never a partial
one. Memory: the records (about 50 bytes per row, read column by column) and a bucket per worker."""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from ..errors import UserError
from ..files import JSON_SAFE_INT, check_folder_to_write, sha256_file, write_bytes_atomic
from ..lock import acquire_lock
from ..paths import display_path
from ..planning.catalog import get_model
from .dedup import lsh_bands, near_duplicates, repeat_keys
from .lengths import length_stats, resolve_tokenizer
from .manifest import (
    BUILDER, BUILDER_VERSION, MANIFEST_NAME, check_counts, load_manifest, manifest_bytes, manifest_hash,
)
from .mix import general_share_of
from .normalize import review_turns
from .qc import FLAG_BITS, SAMPLED_FLAGS, PhraseHits, qc_rules
from .readers import ReadTask, load_hf_dataset, plan_ranges
from .report import dumps_json, qc_markdown, qc_report, review_markdown
from .scan import RECORD, ScanConfig, ScanResult, SourceRead, init_worker, scan_task
from .selection import DUP_EXACT, DUP_NEAR, EVAL, FILTER_REASONS, FILTERED, STATE_COUNT, TRAIN, select_rows
from .spec import CorpusSpec, ResolvedSource, corpus_facts, load_spec, resolve_sources
from .split import phase_of_categories
from .writer import QC_REVIEW, QC_SAMPLE, Region, WriteTask, commit_dir, copy_range, write_bucket

OUTPUT_FILES = ("train", "eval", "sample")
REPEAT_SUFFIX = len(b',"_repeat":')
UNKNOWN_CATEGORY = "(unknown)"
TOP_OPENERS_PER_CATEGORY = 5


@dataclass
class BuildOptions:
    limit: int | None = None  # keep only the first N train rows (nested: a larger N extends a smaller)
    add: int | None = None  # extend the previous build in the output folder by N train rows
    workers: int | None = None  # worker processes (default: the CPU count; 1 = in this process)
    chunk_bytes: int | None = None
    bucket_bytes: int | None = None


class Progress:
    """What a build reports while it runs. The CLI shows it with rich; this one stays silent."""

    def start(self, stage: str, total: float | None) -> None: ...

    def advance(self, stage: str, amount: float) -> None: ...

    def finish(self, stage: str) -> None: ...


@dataclass
class BuildResult:
    manifest: dict
    out_dir: Path
    seconds: float
    input_bytes: int
    workers: int
    timings: dict[str, float] = field(default_factory=dict)


# ---- the worker pool -------------------------------------------------------------------------

class _Runner:
    """Runs tasks in worker processes, or in this process when one worker is asked for."""

    def __init__(self, workers: int, config: ScanConfig):
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if main_file is not None and not os.path.exists(main_file):
            workers = 1  # `python -` or `-c`: spawned workers could not re-import the main module
        self.workers = workers
        self.pool = None
        if workers > 1:
            self.pool = mp.get_context("spawn").Pool(workers, initializer=init_worker, initargs=(config,))
        else:
            init_worker(config, worker=0)

    def imap(self, fn, tasks, ahead: int | None = None):
        """Results in task order. With `ahead`, at most that many tasks are in flight, so a lazy
        iterable of big tasks is never materialized whole."""
        if self.pool is None:
            return map(fn, tasks)
        if ahead is None:
            return self.pool.imap(fn, tasks)
        return self._bounded(fn, iter(tasks), ahead)

    def _bounded(self, fn, tasks, ahead: int):
        from collections import deque

        window: deque = deque()
        for task in tasks:
            window.append(self.pool.apply_async(fn, (task,)))
            if len(window) >= ahead:
                yield window.popleft().get()
        while window:
            yield window.popleft().get()

    def close(self, ok: bool) -> None:
        if self.pool is not None:
            if ok:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()
            self.pool = None
        else:
            from .scan import _state

            spool = _state.get("spool")
            if spool is not None:
                spool.close()


# ---- pass 1: collecting the records --------------------------------------------------------

class _Columns:
    """The row records on disk, one file per column, appended task by task in read order."""

    NAMES = tuple(n for n in RECORD.names if n not in ("size", "turns")) + ("tokens", "src", "worker")

    def __init__(self, directory: Path):
        self.dir = directory
        self.files = {n: open(directory / f"{n}.bin", "wb") for n in self.NAMES}
        self.rows = 0

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        for name, arr in arrays.items():
            self.files[name].write(np.ascontiguousarray(arr).tobytes())
        self.rows += len(next(iter(arrays.values())))

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def _dtype(self, name: str):
        return {"src": np.uint16, "worker": np.uint16, "tokens": np.uint32}.get(name) or RECORD.fields[name][0]

    def load(self, name: str) -> np.ndarray:
        return np.fromfile(self.dir / f"{name}.bin", dtype=self._dtype(name))

    def map(self, name: str) -> np.ndarray:
        """The column as a read-only memory map (for gathering a few rows at a time)."""
        if not self.rows:
            return np.zeros(0, dtype=self._dtype(name))
        return np.memmap(self.dir / f"{name}.bin", dtype=self._dtype(name), mode="r")


class _Collector:
    def __init__(self, work: Path, sources: list[ResolvedSource], quarantine_path: Path, near_bands: int, length):
        self.sources = sources
        self.length = length
        self.cols = _Columns(work)
        self.quarantine = open(quarantine_path, "wb")
        self.categories: dict[str, int] = {}
        self.line_base: dict[int, int] = {}
        self.line_based: set[int] = set()
        self.workers: dict[int, int] = {}
        self.quarantined: Counter = Counter()  # (source, category or -1) -> rows
        self.quarantine_reasons: Counter = Counter()
        self.near_bands = near_bands
        self.sig_file = open(work / "signatures.bin", "wb") if near_bands else None
        self.band_files = [open(work / f"band{i}.bin", "wb") for i in range(near_bands)]

    def category_code(self, name: str) -> int:
        code = self.categories.get(name)
        if code is None:
            code = self.categories[name] = len(self.categories)
        return code

    def add(self, r: ScanResult) -> None:
        label = self.sources[r.source].label
        if r.line_based:
            self.line_based.add(r.source)
            base = self.line_base.get(r.source, 1)
            self.line_base[r.source] = base + r.newlines
        else:
            base = 0
        for where, reason, detail, text, category in r.quarantine:
            code = self.category_code(category) if category is not None else -1
            self.quarantined[(r.source, code)] += 1
            self.quarantine_reasons[reason] += 1
            entry = {"source": label, "line": base + where if r.line_based else None,
                     "row": None if r.line_based else where, "category": category, "reason": reason,
                     "detail": detail, "text": text}
            self.quarantine.write(orjson.dumps(entry) + b"\n")
        rec = r.records
        if len(rec):
            remap = np.array([self.category_code(c) for c in r.categories], dtype=np.uint16)
            worker = self.workers.setdefault(r.worker, len(self.workers))
            arrays = {name: rec[name] for name in RECORD.names if name not in ("size", "turns")}
            arrays["tokens"] = self.length.tokens(rec["size"], rec["turns"])
            arrays["cat"] = remap[rec["cat"]]
            arrays["line"] = (rec["line"].astype(np.int64) + base).astype(np.uint32)
            arrays["src"] = np.full(len(rec), r.source, dtype=np.uint16)
            arrays["worker"] = np.full(len(rec), worker, dtype=np.uint16)
            self.cols.append(arrays)
        if self.sig_file is not None and r.signatures is not None:
            self.sig_file.write(np.ascontiguousarray(r.signatures).tobytes())
            for i, f in enumerate(self.band_files):
                f.write(np.ascontiguousarray(r.bands[:, i]).tobytes())

    def close(self) -> None:
        self.cols.close()
        self.quarantine.close()
        if self.sig_file is not None:
            self.sig_file.close()
        for f in self.band_files:
            f.close()


# ---- the build -------------------------------------------------------------------------------

def _catalog_repos(name: str) -> list[str]:
    try:
        model = get_model(name)
    except UserError:
        return []
    return [getattr(model, "instruct_repo", None), model.hf_repo]


def _plan_tasks(sources: list[ResolvedSource], chunk_bytes: int) -> list[ReadTask]:
    tasks: list[ReadTask] = []
    for i, src in enumerate(sources):
        if src.kind == "jsonl":
            ranges = plan_ranges(src.path, src.size, chunk_bytes)
            for k, (start, end) in enumerate(ranges):
                tasks.append(ReadTask(len(tasks), i, start, end, last=k == len(ranges) - 1))
        else:
            tasks.append(ReadTask(len(tasks), i, 0, src.size, True))
    return tasks


def _previous_build(spec: CorpusSpec, out_dir: Path, add: int) -> tuple[dict, int]:
    if add <= 0:
        raise UserError("--add takes a positive number of train rows")
    if not (out_dir / MANIFEST_NAME).exists():
        raise UserError(f"--add extends a previous build, but {display_path(out_dir)} has none; "
                        "build first with --limit N")
    prev = load_manifest(out_dir, verify="size")
    if prev["spec"]["sha256"] != spec.sha256 or prev["seed"] != spec.seed:
        raise UserError(f"the build in {display_path(out_dir)} came from another spec or seed; --add extends only "
                        "a build of the same spec (rebuild with --limit N instead)")
    prev_limit = prev["build"]["limit"]
    if prev_limit is None:
        raise UserError(f"the build in {display_path(out_dir)} has no limit: it holds every row already")
    return prev, prev_limit + add


def _remove_stale_builds(out_dir: Path) -> None:
    """Remove the temporary folders of builds of this corpus that were killed (their process is gone)."""
    for path in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def build_corpus(spec_path: str | Path, options: BuildOptions | None = None, progress: Progress | None = None,
                 cwd: Path | None = None) -> BuildResult:
    """Build the corpus a spec describes into `<output>/<name>/`. User mistakes raise UserError
    before anything is written."""
    t0 = time.perf_counter()
    options = options or BuildOptions()
    progress = progress or Progress()
    cwd = cwd or Path.cwd()
    spec = load_spec(spec_path)
    facts = corpus_facts()
    sources = resolve_sources(spec, cwd)
    rules = qc_rules(spec.qc, facts)
    length = resolve_tokenizer(spec.lengths, _catalog_repos)
    out_dir = spec.output_dir(cwd)
    check_folder_to_write(out_dir, f"{spec.origin}: output folder")
    limit = options.limit
    for flag, value, low in (("--limit", options.limit, 0), ("--add", options.add, 1)):
        if value is not None and not low <= value <= JSON_SAFE_INT:
            raise UserError(f"{flag} {value}: give a number of train rows from {low} to {JSON_SAFE_INT:,}")
    if options.workers is not None and options.workers < 1:
        raise UserError(f"--workers {options.workers}: give 1 or more worker processes")
    if options.add is not None:
        if options.limit is not None:
            raise UserError("give --limit N or --add N, not both")
        _previous_build(spec, out_dir, options.add)
    for src in sources:
        if src.kind == "hf":
            load_hf_dataset(src.path, src.spec.hf_config, src.spec.hf_split)  # UserError when unavailable
    with lock_corpus_output(out_dir):
        previous = None
        if options.add is not None:   # read again under the lock: another build may have just replaced it
            previous, limit = _previous_build(spec, out_dir, options.add)
        return _build_locked(spec, sources, rules, length, out_dir, limit, previous, options, progress, facts, t0)


def lock_corpus_output(out_dir: Path):
    """The exclusive lock of a corpus output folder (see llamaforge.lock), beside it (the folder itself
    is replaced when a build commits): a second build into it is refused, naming the holder."""
    return acquire_lock(out_dir.parent / f".{out_dir.name}.lock", f"corpus output {display_path(out_dir)}",
                        "wait for that build to finish (a second build into the same folder would replace it)")


def _build_locked(spec, sources, rules, length, out_dir: Path, limit, previous, options: BuildOptions, progress,
                  facts, t0: float) -> BuildResult:
    chunk_bytes = options.chunk_bytes or facts["build"]["chunk_bytes"]
    bucket_bytes = options.bucket_bytes or facts["build"]["bucket_bytes"]
    input_bytes = sum(s.size for s in sources)
    bucket_bits = min(12, max(0, math.ceil(math.log2(input_bytes / bucket_bytes)))) if input_bytes > bucket_bytes else 0
    tasks = _plan_tasks(sources, chunk_bytes)
    # Small inputs are read in this process: starting workers would cost more than it saves.
    workers = options.workers or (1 if input_bytes < chunk_bytes // 4 else min(os.cpu_count() or 1, len(tasks)))
    workers = max(1, min(workers, len(tasks)))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(out_dir)
    tmp = out_dir.parent / f".{spec.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    work = tmp / ".work"
    spool_dir = work / "spool"
    spool_dir.mkdir(parents=True)
    near = None
    if spec.dedup.near:
        bands, _rows = lsh_bands(spec.dedup.num_perm, spec.dedup.near_threshold)
        near = (spec.dedup.num_perm, facts["dedup"]["shingle_sample"], bands)
    all_row_flags = _all_row_flags(spec)
    config = ScanConfig(
        sources=tuple(SourceRead(s.label, s.kind, s.path, s.spec.format, s.spec.category, s.spec.category_field,
                                 s.spec.hf_config, s.spec.hf_split) for s in sources),
        spool_dir=str(spool_dir), seed=spec.seed, bucket_bits=bucket_bits, rules=rules,
        all_row_flags=all_row_flags, length=length,
        system_prompt=spec.persona.system_prompt if spec.persona.add_system_prompt == "missing" else None,
        near=near, preference=spec.kind == "preference",
        keep_categories=frozenset(spec.keep_categories) if spec.keep_categories is not None else None,
    )
    timings: dict[str, float] = {}
    runner = None
    ok = False
    try:
        runner = _Runner(workers, config)
        t = time.perf_counter()
        collector = _Collector(work, sources, tmp / "quarantine.jsonl", near[2] if near else 0, length)
        progress.start("read", input_bytes)
        for result in runner.imap(scan_task, tasks):
            collector.add(result)
            task = tasks[result.task_id]
            progress.advance("read", (task.end - task.start) if sources[task.source].kind == "jsonl"
                             else sources[task.source].size)
        collector.close()
        progress.finish("read")
        timings["pass1_read"] = time.perf_counter() - t

        t = time.perf_counter()
        plan = _decide(spec, collector, work, near, limit, facts)
        timings["decide"] = time.perf_counter() - t
        _refuse_empty(spec, plan, collector)

        t = time.perf_counter()
        written = _write_outputs(spec, plan, collector, runner, tmp, spool_dir, bucket_bits, progress)
        timings["pass2_write"] = time.perf_counter() - t
        runner.close(ok=True)
        runner = None

        t = time.perf_counter()
        manifest = _finish(spec, sources, plan, collector, written, tmp, length, rules, limit, previous,
                           out_dir, progress)
        timings["reports_hashes"] = time.perf_counter() - t
        shutil.rmtree(work)
        if previous is not None:
            _check_extends(Path(previous["dir"]) / previous["files"]["train"]["path"], tmp / "train.jsonl")
        commit_dir(tmp, out_dir)
        ok = True
    finally:
        if runner is not None:
            runner.close(ok=False)
        if not ok:
            shutil.rmtree(tmp, ignore_errors=True)
    return BuildResult(manifest=manifest, out_dir=out_dir, seconds=time.perf_counter() - t0,
                       input_bytes=input_bytes, workers=workers, timings=timings)


# ---- deciding --------------------------------------------------------------------------------

@dataclass
class _Plan:
    categories: list[str]  # by code
    state: np.ndarray
    selection: object
    phase_of: dict[str, int]
    phase_names: list[str]
    # copies, sorted by (bucket, file, phase, key)
    c_row: np.ndarray
    c_file: np.ndarray
    c_phase: np.ndarray
    c_repeat: np.ndarray
    c_key: np.ndarray
    c_qc: np.ndarray
    c_size: np.ndarray


def _near_duplicate_finder(work: Path, n: int, near, threshold: float):
    """near_duplicates over the signatures and band keys pass 1 wrote (read one band at a time)."""
    num_perm, _sample, bands = near
    sigs = np.memmap(work / "signatures.bin", dtype=np.uint32, mode="r", shape=(n, num_perm)) if n else None

    def similarity(a, b):
        return (np.asarray(sigs[a]) == np.asarray(sigs[b])).mean(axis=1)

    columns = [lambda i=i: np.fromfile(work / f"band{i}.bin", dtype=np.uint64) for i in range(bands)]
    return lambda eligible: near_duplicates(columns, eligible, similarity, threshold)


def _decide(spec: CorpusSpec, collector: _Collector, work: Path, near, limit, facts) -> _Plan:
    cols = collector.cols
    categories = list(collector.categories)
    key = cols.load("key")
    cat = cols.load("cat")
    n = len(key)
    near_fn = _near_duplicate_finder(work, n, near, spec.dedup.near_threshold) if near is not None else None
    advice = tuple(facts["mix"]["general_share_advised"])
    selection = select_rows(
        h1=cols.load("h1"), h2=cols.load("h2"), key=key, cat=cat, flags=cols.load("flags"),
        tokens=cols.load("tokens"), categories=categories, spec=spec, limit=limit, general_advice=advice,
        near_duplicates=near_fn,
    )
    present = sorted(selection.splits)
    phase_of = phase_of_categories(present, spec.phases)
    phase_names = [p.name for p in spec.phases] or ["all"]

    rows, files, phases, repeats, qcs = [], [], [], [], []
    qc_n = spec.qc.sample_rows_per_category if spec.qc.scope == "sample" else None
    review_n = spec.qc.review_rows_per_category
    for name in present:
        sp = selection.splits[name]
        ph = phase_of[name]
        k0 = np.flatnonzero(sp.train_repeat == 0)
        order = k0[np.argsort(key[sp.train_rows[k0]], kind="stable")]
        mark = np.zeros(len(sp.train_rows), dtype=np.uint8)
        mark[order[:None if qc_n is None else max(qc_n, review_n)]] = QC_SAMPLE
        mark[order[:review_n]] |= QC_REVIEW
        for file_code, r, rep, m in (
            (0, sp.train_rows, sp.train_repeat, mark),
            (1, sp.eval_rows, np.zeros(len(sp.eval_rows), np.uint16), np.zeros(len(sp.eval_rows), np.uint8)),
            (2, sp.train_rows[sp.sample], sp.train_repeat[sp.sample], np.zeros(int(sp.sample.sum()), np.uint8)),
        ):
            rows.append(r.astype(np.uint32))
            files.append(np.full(len(r), file_code, np.uint8))
            phases.append(np.full(len(r), 0 if file_code == 1 else ph, np.uint8))
            repeats.append(rep.astype(np.uint16))
            qcs.append(m)
    c_row = np.concatenate(rows) if rows else np.zeros(0, np.uint32)
    c_file = np.concatenate(files) if files else np.zeros(0, np.uint8)
    c_phase = np.concatenate(phases) if phases else np.zeros(0, np.uint8)
    c_repeat = np.concatenate(repeats) if repeats else np.zeros(0, np.uint16)
    c_qc = np.concatenate(qcs) if qcs else np.zeros(0, np.uint8)
    c_key = key[c_row]
    again = c_repeat > 0
    if again.any():
        c_key[again] = repeat_keys(c_key[again], c_repeat[again])
    del key
    c_size = cols.load("nbytes")[c_row] + np.uint32(1)  # the line and its newline
    if again.any():
        reps = c_repeat[again].astype(np.int64)
        c_size[again] += (REPEAT_SUFFIX + np.floor(np.log10(reps)).astype(np.int64) + 1).astype(np.uint32)
    return _Plan(categories=categories, state=selection.state, selection=selection, phase_of=phase_of,
                 phase_names=phase_names, c_row=c_row, c_file=c_file, c_phase=c_phase, c_repeat=c_repeat,
                 c_key=c_key, c_qc=c_qc, c_size=c_size)


def _refuse_empty(spec: CorpusSpec, plan: _Plan, collector: _Collector) -> None:
    """A build that keeps no row is a failure, not an empty corpus: UserError with the counts that
    explain it (the quarantine reasons, duplicates, filters), before anything is written."""
    states = np.bincount(plan.state, minlength=STATE_COUNT)
    if int(states[TRAIN] + states[EVAL]):
        return
    counts = _count_block(states, sum(collector.quarantined.values()))
    parts = [f"quarantined {counts['quarantined']:,}"]
    if collector.quarantine_reasons:
        parts[0] += " (" + ", ".join(f"{r} {n:,}" for r, n in collector.quarantine_reasons.most_common(3)) + ")"
    parts.append(f"duplicates {counts['duplicates']['total']:,}")
    parts.append(f"filtered {counts['filtered']['total']:,}" + (
        " (" + ", ".join(f"{r} {n:,}" for r, n in counts["filtered"]["by_reason"].items()) + ")"
        if counts["filtered"]["by_reason"] else ""))
    raise UserError(f"{spec.origin}: the build keeps no row: read {counts['read']:,} = {', '.join(parts)}; nothing "
                    "was written. Fix the sources (or the spec's filters: keep_categories, qc.drop, lengths)")


# ---- pass 2: writing -------------------------------------------------------------------------

class _OutputHasher:
    """sha256 of train/eval/sample, and of each phase's part of them (the phase files), computed
    while pass 2 writes: as buckets finish, the written prefix of each file (in file order) is read
    back from the page cache and hashed, so most hashing overlaps the writing."""

    BLOCK = 8 << 20

    def __init__(self, paths: dict[str, Path], regions: dict[str, list[tuple[int, int, int, int]]],
                 phase_parts: bool):
        # Unbuffered: a buffered reader would keep bytes read ahead of a region not written yet.
        self.files = {name: open(path, "rb", buffering=0) for name, path in paths.items()}
        self.regions = regions  # file -> [(offset, size, bucket, phase)] in file order
        self.next = {name: 0 for name in regions}
        self.whole = {name: hashlib.sha256() for name in regions}
        self.parts: dict[tuple[str, int], object] = {}
        self.phase_parts = phase_parts
        self.done: set[int] = set()

    def bucket_done(self, bucket: int) -> None:
        self.done.add(bucket)
        for name, regions in self.regions.items():
            i = self.next[name]
            while i < len(regions) and regions[i][2] in self.done:
                self._hash(name, regions[i])
                i += 1
            self.next[name] = i

    def _hash(self, name: str, region) -> None:
        offset, size, _bucket, phase = region
        fd = self.files[name].fileno()
        part = None
        if self.phase_parts and name != "eval":
            part = self.parts.setdefault((name, phase), hashlib.sha256())
        while size:
            block = os.pread(fd, min(size, self.BLOCK), offset)
            if not block:
                raise RuntimeError(f"{name}: a region ends before the file does")  # a bug
            self.whole[name].update(block)
            if part is not None:
                part.update(block)
            size -= len(block)
            offset += len(block)

    def finish(self, all_buckets) -> tuple[dict[str, str], dict[tuple[str, int], str]]:
        for b in all_buckets:
            self.bucket_done(b)
        for f in self.files.values():
            f.close()
        for name, regions in self.regions.items():
            if self.next[name] != len(regions):
                raise RuntimeError(f"{name}: {len(regions) - self.next[name]} regions were never hashed")  # a bug
        return ({n: h.hexdigest() for n, h in self.whole.items()},
                {k: h.hexdigest() for k, h in self.parts.items()})


@dataclass
class _Written:
    rows: dict[str, int]
    bytes: dict[str, int]
    phase_ranges: dict[str, list[dict]]  # file -> per phase {rows: [start, end], bytes: [start, end]}
    qc_flags: dict[int, int]  # QC row -> bits (sampled flags)
    openers: dict[int, str]  # QC row -> opener
    phrase_hits: PhraseHits
    review: dict[int, bytes]
    digests: dict[str, str]  # train/eval/sample -> sha256
    phase_digests: dict[tuple[str, int], str]  # (train|sample, phase) -> sha256 of its phase file


def _write_outputs(spec, plan: _Plan, collector: _Collector, runner: _Runner, tmp: Path, spool_dir: Path,
                   bucket_bits: int, progress: Progress) -> _Written:
    shift = np.uint64(64 - bucket_bits) if bucket_bits else None
    nb = 1 << bucket_bits
    bucket = (plan.c_key >> shift).astype(np.uint32) if shift is not None else np.zeros(len(plan.c_key), np.uint32)
    order = np.lexsort((plan.c_key, plan.c_phase, plan.c_file, bucket))
    bucket = bucket[order]
    plan.c_key = None  # only the order of the keys was needed; free the copies as they are reordered
    c_row, plan.c_row = plan.c_row[order], None
    c_file, plan.c_file = plan.c_file[order], None
    c_phase, plan.c_phase = plan.c_phase[order], None
    c_repeat, plan.c_repeat = plan.c_repeat[order], None
    c_qc, plan.c_qc = plan.c_qc[order], None
    c_size, plan.c_size = plan.c_size[order], None
    del order

    # Size of every (file, phase, bucket) region, then offsets in file order: phase, bucket.
    n_phase = max(len(plan.phase_names), 1)
    group = ((c_file.astype(np.uint32) * n_phase + c_phase) * nb + bucket).astype(np.uint32)
    del c_file, c_phase
    sizes = np.bincount(group, weights=c_size, minlength=3 * n_phase * nb).astype(np.int64)
    counts = np.bincount(group, minlength=3 * n_phase * nb).astype(np.int64)
    offsets = np.zeros_like(sizes)
    written_rows, written_bytes, phase_ranges = {}, {}, {}
    for f, fname in enumerate(OUTPUT_FILES):
        lo, hi = f * n_phase * nb, (f + 1) * n_phase * nb
        offsets[lo:hi] = np.concatenate(([0], np.cumsum(sizes[lo:hi])[:-1]))
        written_rows[fname] = int(counts[lo:hi].sum())
        written_bytes[fname] = int(sizes[lo:hi].sum())
        ranges, row0, byte0 = [], 0, 0
        for p in range(n_phase):
            r = int(counts[lo + p * nb: lo + (p + 1) * nb].sum())
            b = int(sizes[lo + p * nb: lo + (p + 1) * nb].sum())
            ranges.append({"rows": [row0, row0 + r], "bytes": [byte0, byte0 + b]})
            row0, byte0 = row0 + r, byte0 + b
        phase_ranges[fname] = ranges
    outputs = tuple(str(tmp / f"{f}.jsonl") for f in OUTPUT_FILES)
    for path, fname in zip(outputs, OUTPUT_FILES):
        with open(path, "wb") as f:
            f.truncate(written_bytes[fname])
    file_regions = {}
    for f, fname in enumerate(OUTPUT_FILES):
        file_regions[fname] = [(int(offsets[gid]), int(sizes[gid]), (gid % (n_phase * nb)) % nb,
                                (gid % (n_phase * nb)) // nb)
                               for gid in range(f * n_phase * nb, (f + 1) * n_phase * nb) if sizes[gid]]
    hasher = _OutputHasher({n: tmp / f"{n}.jsonl" for n in OUTPUT_FILES}, file_regions, spec.phase_files)

    # What pass 2 needs of each row, read through memory maps and gathered one bucket at a time.
    off_col, nbytes_col = collector.cols.map("off"), collector.cols.map("nbytes")
    key_col, worker_col = collector.cols.map("key"), collector.cols.map("worker")
    worker_ids = np.array(sorted(collector.workers, key=collector.workers.get), dtype=np.uint32)
    bounds = np.searchsorted(bucket, np.arange(nb + 1))
    qc_flags = tuple(f for f in SAMPLED_FLAGS if f not in _all_row_flags(spec))

    def tasks():
        for b in range(nb):
            lo, hi = bounds[b], bounds[b + 1]
            if hi == lo:
                continue
            g = group[lo:hi]
            starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
            regions = []
            for s, e in zip(starts, np.r_[starts[1:], hi - lo]):
                gid = int(g[s])
                regions.append(Region(file=gid // (n_phase * nb), offset=int(offsets[gid]), size=int(sizes[gid]),
                                      count=int(e - s)))
            rows = c_row[lo:hi]
            src_bucket = (np.asarray(key_col[rows]) >> shift).astype(np.uint32) if shift is not None \
                else np.zeros(len(rows), np.uint32)
            yield WriteTask(
                bucket=b, spool_dir=str(spool_dir), workers=tuple(worker_ids.tolist()), outputs=outputs,
                regions=tuple(regions), repeat=c_repeat[lo:hi], src_worker=worker_ids[np.asarray(worker_col[rows])],
                src_bucket=src_bucket, src_off=np.asarray(off_col[rows]), nbytes=np.asarray(nbytes_col[rows]),
                qc=c_qc[lo:hi], row=rows, qc_flags=qc_flags,
            )

    n_tasks = int((np.diff(bounds) > 0).sum())
    progress.start("write", n_tasks)
    qc_rows: dict[int, int] = {}
    hits = PhraseHits()
    review: dict[int, bytes] = {}
    openers: dict[int, str] = {}
    for res in runner.imap(write_bucket, tasks(), ahead=2 * runner.workers):
        for row, bits, text in res.qc_rows:
            qc_rows[row] = bits
            openers[row] = text
        hits.merge(res.phrase_hits)
        review.update(res.review)
        hasher.bucket_done(res.bucket)
        progress.advance("write", 1)
    digests, phase_digests = hasher.finish(range(nb))
    progress.finish("write")
    return _Written(rows=written_rows, bytes=written_bytes, phase_ranges=phase_ranges, qc_flags=qc_rows,
                    openers=openers, phrase_hits=hits, review=review, digests=digests,
                    phase_digests=phase_digests)


def _all_row_flags(spec) -> tuple[str, ...]:
    """Flags checked on every row in pass 1: the cheap one, and those the spec drops."""
    return ("short_answer",) + tuple(f for f in SAMPLED_FLAGS if f in spec.qc.drop)


# ---- reports, hashes, manifest ---------------------------------------------------------------

def _count_block(states: np.ndarray, quarantined: int) -> dict:
    """Counts of one group from its per-state row counts."""
    kept = int(states[TRAIN] + states[EVAL])
    exact, near = int(states[DUP_EXACT]), int(states[DUP_NEAR])
    by_reason = {r: int(states[FILTERED[r]]) for r in FILTER_REASONS if states[FILTERED[r]]}
    filtered = sum(by_reason.values())
    return {"read": kept + exact + near + filtered + quarantined, "kept": kept,
            "duplicates": {"exact": exact, "near": near, "total": exact + near},
            "quarantined": quarantined, "filtered": {"total": filtered, "by_reason": by_reason}}


def _finish(spec, sources, plan: _Plan, collector: _Collector, written: _Written, tmp: Path, length, rules,
            limit, previous, out_dir, progress) -> dict:
    cols = collector.cols
    categories = plan.categories
    state = plan.state
    src = cols.load("src")
    cat = cols.load("cat")
    n_src, n_cat = len(sources), len(categories)
    per_src = np.bincount(src.astype(np.uint32) * STATE_COUNT + state, minlength=n_src * STATE_COUNT)
    per_src = per_src.reshape(n_src, STATE_COUNT)
    per_cat = np.bincount(cat.astype(np.uint32) * STATE_COUNT + state, minlength=max(n_cat, 1) * STATE_COUNT)
    per_cat = per_cat.reshape(max(n_cat, 1), STATE_COUNT)
    q_src, q_cat = Counter(), Counter()
    for (s, c), k in collector.quarantined.items():
        q_src[s] += k
        q_cat[c] += k
    counts = _count_block(per_src.sum(axis=0), sum(q_src.values()))
    counts["quarantined_by_reason"] = dict(sorted(collector.quarantine_reasons.items()))
    counts["per_source"] = {s.label: _count_block(per_src[i], q_src[i]) for i, s in enumerate(sources)}
    counts["per_category"] = {name: _count_block(per_cat[code], q_cat[code]) for code, name in enumerate(categories)}
    if q_cat[-1]:
        counts["per_category"][UNKNOWN_CATEGORY] = _count_block(np.zeros(STATE_COUNT, np.int64), q_cat[-1])
    counts["per_category"] = dict(sorted(counts["per_category"].items()))
    splits = plan.selection.splits
    outputs = {"train_rows": 0, "eval_rows": 0, "sample_rows": 0, "repeats": 0}
    for name, block in counts["per_category"].items():
        sp = splits.get(name)
        block["train_rows"] = int(len(sp.train_rows)) if sp else 0
        block["eval_rows"] = int(len(sp.eval_rows)) if sp else 0
        block["sample_rows"] = int(sp.sample.sum()) if sp else 0
        block["repeats"] = int((sp.train_repeat > 0).sum()) if sp else 0
        for k in outputs:
            outputs[k] += block[k]
    counts.update(outputs)
    assert outputs["train_rows"] == written.rows["train"] and outputs["eval_rows"] == written.rows["eval"]
    check_counts(counts)

    # Lengths of the kept rows.
    tokens = cols.load("tokens")
    kept = (state == TRAIN) | (state == EVAL)
    seq = spec.lengths.sequence_len
    lengths = {"method": length.describe(), "exact": length.exact, "sequence_len": seq,
               "total": length_stats(tokens[kept], seq), "per_category": {}}
    warnings = list(plan.selection.warnings)
    for code, name in enumerate(categories):
        stats = length_stats(tokens[kept & (cat == code)], seq)
        lengths["per_category"][name] = stats
        if stats["over_sequence_len"]:
            warnings.append(f"category {name!r}: {stats['over_sequence_len']:,} of {stats['rows']:,} rows are longer "
                            f"than sequence_len {seq:,} ({'exact' if length.exact else 'estimated'}); Axolotl drops "
                            "them without an error (set lengths.drop_over_sequence_len, shorten them, or raise "
                            "sequence_len)")
    lengths["per_category"] = dict(sorted(lengths["per_category"].items()))
    if not counts["train_rows"]:
        warnings.append("the train split is empty: no row survived validation, dedup, QC and the mix")
    if counts["quarantined"]:
        warnings.append(f"{counts['quarantined']:,} bad rows are in quarantine.jsonl (with file, line and reason)")

    # QC: short answers and dropped flags were checked on every row; the phrase flags, repetition and
    # openers on the QC rows (a uniform sample per category, or every train row with scope: all).
    flags = cols.load("flags")
    all_flags = _all_row_flags(spec)
    qc_by_cat: dict[int, list[int]] = {}
    for row in written.qc_flags:
        qc_by_cat.setdefault(int(cat[row]), []).append(row)
    qc_cats, all_openers = {}, Counter()
    for code, name in enumerate(categories):
        in_cat = kept & (cat == code)
        all_rows = {f: int(((flags[in_cat] & FLAG_BITS[f]) != 0).sum()) for f in all_flags}
        rows = qc_by_cat.get(code, [])
        sample = {f: sum(1 for r in rows if written.qc_flags[r] & FLAG_BITS[f]) for f in SAMPLED_FLAGS
                  if f not in all_flags}
        openers = Counter(written.openers[r] for r in rows)
        all_openers.update(openers)
        filtered = {f: int(((state == FILTERED[f"qc:{f}"]) & (cat == code)).sum()) for f in spec.qc.drop}
        qc_cats[name] = {"kept": int(in_cat.sum()), "all_rows": all_rows, "sample_rows": len(rows),
                         "sample": sample, "filtered": filtered,
                         "top_openers": _frequent(openers, TOP_OPENERS_PER_CATEGORY)}
    top_global = _frequent(all_openers, corpus_facts()["qc"]["top_openers"])
    hits_scope = "every train row" if spec.qc.scope == "all" else \
        f"QC sample, up to {spec.qc.sample_rows_per_category:,} rows per category"
    hits = written.phrase_hits
    targets = plan.selection.mix.targets
    general = {"categories": list(spec.mix.general_categories),
               "share": None if not written.rows["train"] else round(
                   sum(len(splits[c].train_rows) for c in spec.mix.general_categories if c in splits)
                   / written.rows["train"], 4),
               "target_share": general_share_of(targets, spec.mix.general_categories),
               "advised": corpus_facts()["mix"]["general_share_advised"]}
    for name, sp in sorted(splits.items()):
        if len(sp.train_rows) < plan.selection.mix.targets.get(name, 0) and limit is None:
            warnings.append(f"category {name!r}: {len(sp.train_rows):,} train rows, fewer than its target "
                            f"{plan.selection.mix.targets[name]:,}")
    report = qc_report(categories=qc_cats, phrase_hits=hits.counts, hits_scope=hits_scope, top_openers=top_global,
                       sample_scope=spec.qc.scope,
                       lengths=lengths, drop=spec.qc.drop, warnings=warnings, general=general)
    write_bytes_atomic(tmp / "qc.json", dumps_json(report))
    write_bytes_atomic(tmp / "qc.md", qc_markdown(report, spec.name).encode("utf-8"))

    # Review rows, in train order per category.
    line_col = cols.load("line")
    by_cat: dict[str, list[tuple[int, dict]]] = {}
    c_key = cols.load("key")
    for row, raw in written.review.items():
        obj = orjson.loads(raw)
        unit = "line" if int(src[row]) in collector.line_based else "row"
        where = f"{unit} {int(line_col[row])}"
        by_cat.setdefault(categories[int(cat[row])], []).append((int(c_key[row]), {
            "source": sources[int(src[row])].label, "where": where, "id": obj["_id"],
            "flags": int(flags[row]) | written.qc_flags.get(row, 0), "messages": review_turns(obj)}))
    review = {c: [r for _k, r in sorted(items, key=lambda kr: kr[0])] for c, items in by_cat.items()}
    write_bytes_atomic(tmp / "review.md", review_markdown(spec.name, review).encode("utf-8"))

    # Phase files.
    phases = []
    for p, pname in enumerate(plan.phase_names):
        entry = {"name": pname, "categories": sorted(c for c, ph in plan.phase_of.items() if ph == p)}
        for fname in ("train", "sample"):
            entry[f"{fname}_rows"] = written.phase_ranges[fname][p]["rows"]
        phases.append(entry)
    extra_files = {}
    if spec.phase_files:
        for p, pname in enumerate(plan.phase_names):
            for fname, key in (("train", "path"), ("sample", "sample_path")):
                rng = written.phase_ranges[fname][p]
                target = f"{fname}.{p + 1:02d}-{pname}.jsonl"
                copy_range(str(tmp / f"{fname}.jsonl"), str(tmp / target), rng["bytes"][0],
                           rng["bytes"][1] - rng["bytes"][0])
                extra_files[f"{fname}.{p + 1:02d}-{pname}"] = (
                    target, rng["rows"][1] - rng["rows"][0],
                    written.phase_digests.get((fname, p), hashlib.sha256().hexdigest()))
                phases[p][key] = target

    # Hashes: train/eval/sample and the phase files were hashed while they were written; the small
    # files now.
    entries = {name: (f"{name}.jsonl", written.rows[name], written.digests[name]) for name in OUTPUT_FILES}
    entries["quarantine"] = ("quarantine.jsonl", counts["quarantined"], None)
    entries["qc_json"] = ("qc.json", None, None)
    entries["qc_md"] = ("qc.md", None, None)
    entries["review"] = ("review.md", None, None)
    entries.update(extra_files)
    files = {name: {"path": path, "rows": rows, "bytes": os.path.getsize(tmp / path),
                    "sha256": digest or sha256_file(tmp / path)} for name, (path, rows, digest) in entries.items()}

    stage = None
    if previous is not None:
        stage = {"limit": previous["build"]["limit"], "manifest_sha256": manifest_hash(previous["dir"])}
    manifest = {
        "builder": {"name": BUILDER, "version": BUILDER_VERSION},
        "name": spec.name,
        "kind": spec.kind,
        "spec": {"path": display_path(Path(spec.origin)), "sha256": spec.sha256, "extends": spec.extends,
                 "keep_categories": None if spec.keep_categories is None else list(spec.keep_categories)},
        "seed": spec.seed,
        "build": {"limit": limit, "extends": stage},
        "persona": {"name": spec.persona.name, "system_prompt": spec.persona.system_prompt,
                    "add_system_prompt": spec.persona.add_system_prompt},
        "sources": [{"label": s.label, "kind": s.kind, "bytes": s.size, "format": s.spec.format,
                     "path": s.path if s.kind == "hf" else display_path(Path(s.path)),
                     "category": s.spec.category, "category_field": s.spec.category_field} for s in sources],
        "categories": {name: {"phase": plan.phase_names[plan.phase_of[name]], "kept": int(
            len(splits[name].train_rows[splits[name].train_repeat == 0]) + len(splits[name].eval_rows)),
            "available_for_train": splits[name].available, "target": targets[name],
            "quota": plan.selection.quotas[name]} for name in sorted(splits)},
        "phases": phases,
        "curriculum": bool(spec.phases),
        "mix": {"general": general, "targets": dict(sorted(targets.items()))},
        "files": files,
        "counts": counts,
        "lengths": lengths,
        "qc": {"scope": spec.qc.scope, "drop": list(spec.qc.drop), "report": "qc.md",
               "sample_rows_per_category": spec.qc.sample_rows_per_category},
        "dedup": {"exact": spec.dedup.exact, "near": spec.dedup.near,
                  "near_threshold": spec.dedup.near_threshold if spec.dedup.near else None},
        "splits": {"eval_fraction": spec.eval_fraction, "sample_fraction": spec.sample_fraction},
        "warnings": warnings,
    }
    write_bytes_atomic(tmp / MANIFEST_NAME, manifest_bytes(manifest))
    return manifest


def _frequent(counts: Counter, n: int) -> list[tuple[str, int]]:
    """The n most frequent openers seen at least twice (ties: alphabetical)."""
    return [(text, k) for text, k in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n] if k >= 2]


def _check_extends(old_train: Path, new_train: Path) -> None:
    """A staged build must hold every train row of the build it extends (a bug otherwise)."""
    def ids(path: Path):
        with open(path, "rb") as f:
            for line in f:
                obj = orjson.loads(line)
                yield obj["_id"], obj.get("_repeat", 0)

    old = set(ids(old_train))
    for pair in ids(new_train):
        old.discard(pair)
        if not old:
            return
    if old:
        raise AssertionError(f"the extended build lost {len(old)} train rows of the previous one")
