"""Pass 1 of a build, run in worker processes: read one piece of a source, validate and normalize
every row, write the normalized rows into the spool (one file per worker and shuffle bucket) and
return a compact record per row (content hash, seeded key, spool offset, size, tokens, opener,
category, flags) plus the bad rows for quarantine.

The records are all the main process keeps of a row: the corpus itself is never held in memory."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field

import numpy as np
import orjson

from .dedup import MinHasher, band_keys, mix64
from .lengths import LengthMethod
from .normalize import RowProblem, add_system_prompt, normalize_row, row_category
from .qc import FLAG_BITS, PhraseHits, QcRules, opener, opener_hash, row_flags
from .readers import (
    BOM, ReadTask, SourceProblem, _ReadAsLines, excerpt, iter_csv, iter_hf, iter_json_array, iter_parquet,
    read_range, utf8_problem,
)

RECORD = np.dtype([
    ("h1", "<u8"), ("h2", "<u8"), ("key", "<u8"), ("off", "<u8"), ("nbytes", "<u4"), ("tokens", "<u4"),
    ("opener", "<u4"), ("line", "<u4"), ("cat", "<u2"), ("flags", "<u1"),
])


@dataclass(frozen=True)
class SourceRead:
    """What a worker needs to know of a source."""

    label: str
    kind: str
    path: str
    format: str
    category: str | None
    category_field: str | None
    hf_config: str | None = None
    hf_split: str = "train"


@dataclass(frozen=True)
class ScanConfig:
    sources: tuple[SourceRead, ...]
    spool_dir: str
    seed: int
    bucket_bits: int
    rules: QcRules
    all_row_flags: tuple[str, ...]  # flags checked on every row in pass 1
    length: LengthMethod
    system_prompt: str | None = None  # added to rows without a system turn
    near: tuple[int, int, int] | None = None  # (num_perm, shingle_sample, bands) when near-dedup is on


@dataclass
class ScanResult:
    task_id: int
    source: int
    worker: int
    records: np.ndarray
    categories: list[str]
    quarantine: list[tuple[int, str, str, str, str | None]]  # (line or row, reason, detail, excerpt, category)
    line_based: bool
    newlines: int = 0
    phrase_hits: dict[str, dict[str, int]] = field(default_factory=dict)
    signatures: np.ndarray | None = None
    bands: np.ndarray | None = None


class _Spool:
    """The spool files of one worker process: one append-only file per shuffle bucket."""

    def __init__(self, directory: str, worker: int):
        self.directory, self.worker = directory, worker
        self.fds: dict[int, int] = {}
        self.sizes: dict[int, int] = {}

    def path(self, bucket: int) -> str:
        return spool_path(self.directory, self.worker, bucket)

    def append(self, bucket: int, data: bytes) -> int:
        fd = self.fds.get(bucket)
        if fd is None:
            fd = os.open(self.path(bucket), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self.fds[bucket] = fd
            self.sizes[bucket] = 0
        start = self.sizes[bucket]
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        self.sizes[bucket] = start + len(data)
        return start


def spool_path(directory: str, worker: int, bucket: int) -> str:
    return os.path.join(directory, f"w{worker:03d}-b{bucket:05d}.bin")


_state: dict = {}


def init_worker(config: ScanConfig, worker: int | None = None) -> None:
    """Set up a worker process (also called in-process when the build runs without workers)."""
    _state.clear()
    wid = os.getpid() if worker is None else worker
    _state.update(config=config, worker=wid, spool=_Spool(config.spool_dir, wid), tokenizer=None, minhash=None)
    if config.length.exact:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from tokenizers import Tokenizer

        _state["tokenizer"] = Tokenizer.from_file(config.length.tokenizer_file)
    if config.near is not None:
        _state["minhash"] = MinHasher(config.near[0], shingle_sample=config.near[1], seed=config.seed + 1)


class _TaskScan:
    """Accepts the rows of one task and builds its result."""

    def __init__(self, task: ReadTask):
        self.cfg: ScanConfig = _state["config"]
        self.task = task
        src = self.cfg.sources[task.source]
        self.src = src
        self.fmt = src.format
        self.source_json = orjson.dumps(src.label)
        self.seed_mix = mix64(self.cfg.seed & ((1 << 64) - 1))
        self.shift = 64 - self.cfg.bucket_bits
        self.records: list[tuple] = []
        self.cat_codes: dict[str, int] = {}
        self.cat_json: dict[str, bytes] = {}
        self.quarantine: list[tuple[int, str, str, str, str | None]] = []
        self.buckets: dict[int, list[bytes]] = {}
        self.bucket_sizes: dict[int, int] = {}
        self.hits = PhraseHits()
        self.rules = self.cfg.rules
        self.row_flags_wanted = self.cfg.all_row_flags
        self.count_hits = any(f in self.cfg.all_row_flags for f in ("cliche", "persona_break", "refusal"))
        self.exact_tokens = self.cfg.length.exact
        self.texts_for_tokens: list[list[str]] = []
        self.near_texts: list[str] = []

    def reject(self, where: int, reason: str, detail: str, raw: bytes | str, obj=None) -> None:
        """Quarantine a row, with the category it would have had when that can be told."""
        category = self.src.category
        if type(obj) is dict and self.src.category_field is not None:
            try:
                category = row_category(obj, self.src.category, self.src.category_field)
            except RowProblem:
                category = self.src.category
        elif self.src.category_field is not None:
            category = None
        self.quarantine.append((where, reason, detail, excerpt(raw), category))

    def accept(self, obj, where: int, raw: bytes | None = None) -> None:
        """Normalize one parsed row; on a problem, quarantine it."""
        try:
            messages = normalize_row(obj, self.fmt)
            category = row_category(obj, self.src.category, self.src.category_field)
        except RowProblem as p:
            if raw is None:
                raw = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS, default=str)
            self.reject(where, p.reason, p.detail, raw, obj)
            return
        if self.cfg.system_prompt is not None:
            messages = add_system_prompt(messages, self.cfg.system_prompt)
        body = orjson.dumps(messages)
        digest = hashlib.sha256(body).digest()
        h1 = int.from_bytes(digest[:8], "little")
        h2 = int.from_bytes(digest[8:16], "little")
        key = mix64(h1 ^ self.seed_mix)
        cat_json = self.cat_json.get(category)
        if cat_json is None:
            cat_json = self.cat_json[category] = orjson.dumps(category)
            self.cat_codes[category] = len(self.cat_codes)
        line = b"".join((b'{"messages":', body, b',"_category":', cat_json, b',"_source":', self.source_json,
                         b',"_id":"', digest[:16].hex().encode(), b'"}'))
        bucket = key >> self.shift if self.shift < 64 else 0
        parts = self.buckets.get(bucket)
        if parts is None:
            parts = self.buckets[bucket] = []
            self.bucket_sizes[bucket] = 0
        off = self.bucket_sizes[bucket]
        parts.append(line)
        self.bucket_sizes[bucket] = off + len(line)
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        oh = opener_hash(opener(answers[0], self.rules.opener_words))
        flags = row_flags(answers, self.rules, self.row_flags_wanted, self.hits if self.count_hits else None)
        if self.exact_tokens:
            self.texts_for_tokens.append([m["content"] for m in messages])
            tokens = 0
        else:
            chars = 0
            for m in messages:
                chars += len(m["content"])
            tokens = math.ceil(chars / self.cfg.length.chars_per_token) + \
                self.cfg.length.tokens_per_message * len(messages)
        if self.cfg.near is not None:
            self.near_texts.append("\n".join(m["content"] for m in messages))
        self.records.append((h1, h2, key, off, len(line), min(tokens, 0xFFFFFFFF), oh, where,
                             self.cat_codes[category], flags))

    def finish(self, *, line_based: bool, newlines: int = 0) -> ScanResult:
        spool: _Spool = _state["spool"]
        records = np.array(self.records, dtype=RECORD) if self.records else np.zeros(0, dtype=RECORD)
        if len(records):
            # Offsets so far are within this task's part of each bucket; make them file offsets.
            buckets = records["key"] >> np.uint64(self.shift) if self.shift < 64 else np.zeros(len(records), np.uint64)
            base = {b: spool.append(b, b"".join(parts)) for b, parts in self.buckets.items()}
            starts = np.array([base.get(int(b), 0) for b in range(max(base) + 1)], dtype=np.uint64)
            records["off"] += starts[buckets.astype(np.int64)]
        if self.exact_tokens and self.texts_for_tokens:
            records["tokens"] = self._exact_tokens()
        signatures = bands = None
        if self.cfg.near is not None:
            mh: MinHasher = _state["minhash"]
            signatures = np.stack([mh.signature(t) for t in self.near_texts]) if self.near_texts else \
                np.zeros((0, self.cfg.near[0]), np.uint32)
            bands = band_keys(signatures, self.cfg.near[2])
        return ScanResult(
            task_id=self.task.task_id, source=self.task.source, worker=_state["worker"], records=records,
            categories=list(self.cat_codes), quarantine=self.quarantine, line_based=line_based,
            newlines=newlines,
            phrase_hits={f: dict(v) for f, v in self.hits.counts.items() if v},
            signatures=signatures, bands=bands,
        )

    def _exact_tokens(self) -> np.ndarray:
        tok = _state["tokenizer"]
        flat = [t for texts in self.texts_for_tokens for t in texts]
        counts = [len(e.ids) for e in tok.encode_batch(flat, add_special_tokens=False)]
        out = np.empty(len(self.texts_for_tokens), dtype=np.uint32)
        pos = 0
        per_msg = self.cfg.length.tokens_per_message
        for i, texts in enumerate(self.texts_for_tokens):
            n = len(texts)
            out[i] = min(sum(counts[pos:pos + n]) + per_msg * n, 0xFFFFFFFF)
            pos += n
        return out


def scan_task(task: ReadTask) -> ScanResult:
    """Pass 1 for one task (runs in a worker)."""
    cfg: ScanConfig = _state["config"]
    src = cfg.sources[task.source]
    scan = _TaskScan(task)
    if src.kind == "jsonl":
        return _scan_lines(scan, read_range(src.path, task.start, task.end), task)
    if src.kind == "json":
        try:
            rows = list(iter_json_array(src.path))
        except _ReadAsLines:
            with open(src.path, "rb") as f:
                return _scan_lines(scan, f.read(), ReadTask(task.task_id, task.source, 0, 0, True))
        return _scan_rows(scan, rows)
    if src.kind == "parquet":
        return _scan_rows(scan, iter_parquet(src.path))
    if src.kind == "csv":
        return _scan_rows(scan, iter_csv(src.path))
    if src.kind == "hf":
        return _scan_rows(scan, iter_hf(src.path, src.hf_config, src.hf_split))
    raise ValueError(f"unknown source kind {src.kind}")


def _scan_rows(scan: _TaskScan, rows) -> ScanResult:
    for row, obj in rows:
        if isinstance(obj, SourceProblem):
            scan.reject(row, obj.reason, obj.detail, obj.raw)
        else:
            scan.accept(obj, row)
    return scan.finish(line_based=False)


def _scan_lines(scan: _TaskScan, data: bytes, task: ReadTask) -> ScanResult:
    if task.start == 0 and data.startswith(BOM):
        data = data[len(BOM):]
    lines = data.split(b"\n")
    # The piece after the last newline: empty when the range ends with a newline.
    unterminated = len(lines) - 1 if lines[-1] else -1
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for i, raw in enumerate(lines):
        if not raw or raw.isspace():
            continue
        try:
            obj = loads(raw)
        except decode_error as exc:
            problem = utf8_problem(raw)
            if problem:
                scan.reject(i, "invalid_utf8", problem, raw)
            elif i == unterminated and task.last:
                scan.reject(i, "truncated_last_line", f"the file ends without a newline inside this row ({exc})", raw)
            else:
                scan.reject(i, "invalid_json", str(exc), raw)
            continue
        scan.accept(obj, i, raw)
    return scan.finish(line_based=True, newlines=data.count(b"\n"))
