"""Pass 1 of a build, run in worker processes: read one piece of a source, validate and normalize
every row, write the normalized rows into the spool (one file per worker and shuffle bucket) and
return a compact record per row (content hash, seeded key, spool offset and size, length, line,
category, flags) plus the bad rows for quarantine.

The records are all the main process keeps of a row: the corpus itself is never held in memory."""

from __future__ import annotations

import os
import struct
from binascii import hexlify
from dataclasses import dataclass

import numpy as np
import orjson

from xxhash import xxh3_64_intdigest, xxh3_128_digest

from .dedup import MinHasher, band_keys
from .lengths import LengthMethod
from .normalize import RowProblem, add_system_prompt, normalize_preference_row, normalize_row, row_category
from .qc import QcRules, row_flags
from .readers import (
    BOM, ReadTask, SourceProblem, _ReadAsLines, excerpt, iter_csv, iter_hf, iter_json_array, iter_parquet,
    read_range, utf8_problem,
)

# One row's record, packed with RECORD_PACK (48 bytes): content hash (h1, h2), seeded key, spool
# offset and size, `size` (characters, or content tokens with a tokenizer), line (or row number),
# category code, turns, flags.
RECORD = np.dtype([
    ("h1", "<u8"), ("h2", "<u8"), ("key", "<u8"), ("off", "<u8"), ("nbytes", "<u4"), ("size", "<u4"),
    ("line", "<u4"), ("cat", "<u2"), ("turns", "u1"), ("flags", "u1"),
])
_BLANK = frozenset(b" \t\r\n\x0b\x0c")
RECORD_PACK = struct.Struct("<16sQQIIIHBB")
assert RECORD_PACK.size == RECORD.itemsize


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
    all_row_flags: tuple[str, ...]  # flags checked on every row in pass 1 (short_answer + those dropped)
    length: LengthMethod
    system_prompt: str | None = None  # added to rows without a system turn
    near: tuple[int, int, int] | None = None  # (num_perm, shingle_sample, bands) when near-dedup is on
    preference: bool = False  # rows are chosen/rejected pairs (a corpus of kind preference)
    keep_categories: frozenset[str] | None = None  # rows of other categories are recorded, not spooled


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
    signatures: np.ndarray | None = None
    bands: np.ndarray | None = None


class _Spool:
    """The spool files of one worker process: one buffered, append-only file per shuffle bucket.
    Rows are written as they are accepted (no per-task copy of the data in memory)."""

    def __init__(self, directory: str, worker: int, buckets: int):
        self.directory, self.worker = directory, worker
        self.files: dict[int, object] = {}
        self.sizes: dict[int, int] = {}
        self.buffering = max(16 << 10, min(1 << 20, (32 << 20) // max(buckets, 1)))

    def open(self, bucket: int):
        f = self.files[bucket] = open(spool_path(self.directory, self.worker, bucket), "ab",
                                      buffering=self.buffering)
        self.sizes[bucket] = f.tell()
        return f

    def flush(self) -> None:
        for f in self.files.values():
            f.flush()

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()


def spool_path(directory: str, worker: int, bucket: int) -> str:
    return os.path.join(directory, f"w{worker:03d}-b{bucket:05d}.bin")


_state: dict = {}


def init_worker(config: ScanConfig, worker: int | None = None) -> None:
    """Set up a worker process (also called in-process when the build runs without workers). A
    failure is kept and raised by the first task, so it reaches the main process (a pool would
    otherwise restart a worker that fails to start, forever)."""
    _state.clear()
    wid = os.getpid() if worker is None else worker
    _state.update(config=config, worker=wid, spool=_Spool(config.spool_dir, wid, 1 << config.bucket_bits),
                  tokenizer=None, minhash=None, error=None)
    try:
        if config.length.exact:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from tokenizers import Tokenizer

            _state["tokenizer"] = Tokenizer.from_file(config.length.tokenizer_file)
        if config.near is not None:
            _state["minhash"] = MinHasher(config.near[0], shingle_sample=config.near[1], seed=config.seed + 1)
    except Exception as exc:  # noqa: BLE001 - re-raised by scan_task in the main process's view
        _state["error"] = exc


class _TaskScan:
    """Accepts the rows of one task and builds its result."""

    def __init__(self, task: ReadTask):
        self.cfg: ScanConfig = _state["config"]
        self.task = task
        src = self.cfg.sources[task.source]
        self.src = src
        self.fmt = src.format
        self.source_json = orjson.dumps(src.label)
        self.seed = self.cfg.seed & ((1 << 64) - 1)
        self.shift = 64 - self.cfg.bucket_bits
        self.spool: _Spool = _state["spool"]
        self.spool_files, self.spool_sizes = self.spool.files, self.spool.sizes
        self.records = bytearray()
        self.pack = RECORD_PACK.pack
        self.system_prompt = self.cfg.system_prompt
        self.near = self.cfg.near
        self.cat_codes: dict[str, int] = {}
        self.cat_json: dict[str, bytes] = {}
        self.quarantine: list[tuple[int, str, str, str, str | None]] = []
        self.rules = self.cfg.rules
        self.row_flags_wanted = self.cfg.all_row_flags
        self.only_short_flag = self.row_flags_wanted == ("short_answer",)
        self.min_answer_chars = self.rules.min_answer_chars
        self.exact_tokens = self.cfg.length.exact
        self.texts_for_tokens: list[list[str]] = []
        self.near_texts: list[str] = []
        self.keep = self.cfg.keep_categories
        self.preference = self.cfg.preference

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

    def accept(self, obj, where: int, view=None, start: int = 0, end: int = 0) -> None:
        """Normalize one parsed row and spool it; on a problem, quarantine it. (The hot path.)"""
        if self.preference:
            return self.accept_pair(obj, where, view, start, end)
        try:
            messages = normalize_row(obj, self.fmt)
            category = self.category_of(obj)
        except RowProblem as p:
            return self.reject_parsed(p, where, obj, view, start, end)
        if self.system_prompt is not None:
            messages = add_system_prompt(messages, self.system_prompt)
        body = orjson.dumps(messages)
        digest = xxh3_128_digest(body)
        if self.keep is not None and category not in self.keep:
            return self.record_unkept(digest, where, category)
        code = self.category_code(category)
        line = b"".join((b'{"messages":', body, b',"_category":', self.cat_json[category], b',"_source":',
                         self.source_json, b',"_id":"', hexlify(digest), b'"}'))
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        texts = [m["content"] for m in messages]
        self.spool_row(line, digest, where, code, answers, texts, sum(map(len, texts)), len(messages))

    def accept_pair(self, obj, where: int, view=None, start: int = 0, end: int = 0) -> None:
        """`accept` for a preference corpus: one chosen/rejected pair. Its record's length is the
        prompt and the longer answer (Axolotl drops a pair when either side is over sequence_len)."""
        try:
            prompt, chosen, rejected = normalize_preference_row(obj)
            category = self.category_of(obj)
        except RowProblem as p:
            return self.reject_parsed(p, where, obj, view, start, end)
        if self.system_prompt is not None:
            prompt = add_system_prompt(prompt, self.system_prompt)
        body = b"".join((b'{"prompt":', orjson.dumps(prompt), b',"chosen":',
                         orjson.dumps({"role": "assistant", "content": chosen}), b',"rejected":',
                         orjson.dumps({"role": "assistant", "content": rejected})))
        digest = xxh3_128_digest(body)
        if self.keep is not None and category not in self.keep:
            return self.record_unkept(digest, where, category)
        code = self.category_code(category)
        line = b"".join((body, b',"_category":', self.cat_json[category], b',"_source":', self.source_json,
                         b',"_id":"', hexlify(digest), b'"}'))
        longer = chosen if len(chosen) >= len(rejected) else rejected
        texts = [m["content"] for m in prompt] + [longer]
        self.spool_row(line, digest, where, code, [chosen], texts, sum(map(len, texts)), len(prompt) + 1,
                       near_text="\n".join(texts[:-1] + [chosen, rejected]))

    def category_of(self, obj: dict) -> str:
        """The row's category (the fast check; row_category says what is wrong)."""
        field_name = self.src.category_field
        category = obj.get(field_name) if field_name is not None else self.src.category
        if type(category) is not str or not category or category.isspace():
            category = row_category(obj, self.src.category, field_name)
        return category

    def reject_parsed(self, problem: RowProblem, where: int, obj, view, start: int, end: int) -> None:
        """Quarantine a parsed row: its line as read, or its JSON for whole-source kinds."""
        raw = bytes(view[start:end]) if view is not None else \
            orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS, default=str)
        self.reject(where, problem.reason, problem.detail, raw, obj)

    def category_code(self, category: str) -> int:
        code = self.cat_codes.get(category)
        if code is None:
            code = self.cat_codes[category] = len(self.cat_codes)
            self.cat_json[category] = orjson.dumps(category)
        return code

    def record_unkept(self, digest: bytes, where: int, category: str) -> None:
        """A valid row of a category the spec does not keep: a record (so it is counted, as filtered
        `category`), nothing spooled, no QC, no length."""
        code = self.category_code(category)
        if self.exact_tokens:
            self.texts_for_tokens.append([])
        if self.near is not None:
            self.near_texts.append("")
        self.records += self.pack(digest, xxh3_64_intdigest(digest, seed=self.seed), 0, 0, 0, where, code, 0, 0)

    def spool_row(self, line: bytes, digest: bytes, where: int, code: int, answers: list[str], texts: list[str],
                  size: int, turns: int, near_text: str | None = None) -> None:
        """Write one accepted output row to the spool and append its record."""
        key = xxh3_64_intdigest(digest, seed=self.seed)
        bucket = key >> self.shift if self.shift < 64 else 0
        out = self.spool_files.get(bucket)
        if out is None:
            out = self.spool.open(bucket)
        out.write(line)
        off = self.spool_sizes[bucket]
        self.spool_sizes[bucket] = off + len(line)
        if self.only_short_flag:
            flags = 1 if len(answers[-1]) < self.min_answer_chars else 0
        else:
            flags = row_flags(answers, self.rules, self.row_flags_wanted)
        if self.exact_tokens:
            self.texts_for_tokens.append(texts)
            size = 0
        if self.near is not None:
            self.near_texts.append("\n".join(texts) if near_text is None else near_text)
        if size > 0xFFFFFFFF or turns > 255:  # absurd rows: the record keeps capped counts
            size, turns = min(size, 0xFFFFFFFF), min(turns, 255)
        self.records += self.pack(digest, key, off, len(line), size, where, code, turns, flags)

    def finish(self, *, line_based: bool, newlines: int = 0) -> ScanResult:
        self.spool.flush()  # the rows of this task are on disk before its records are returned
        records = np.frombuffer(bytes(self.records), dtype=RECORD).copy()
        if self.exact_tokens and self.texts_for_tokens:
            records["size"] = self._exact_tokens()
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
            signatures=signatures, bands=bands,
        )

    def _exact_tokens(self) -> np.ndarray:
        tok = _state["tokenizer"]
        flat = [t for texts in self.texts_for_tokens for t in texts]
        counts = [len(e.ids) for e in tok.encode_batch(flat, add_special_tokens=False)]
        out = np.empty(len(self.texts_for_tokens), dtype=np.uint32)
        pos = 0
        for i, texts in enumerate(self.texts_for_tokens):
            n = len(texts)
            out[i] = min(sum(counts[pos:pos + n]), 0xFFFFFFFF)
            pos += n
        return out


def scan_task(task: ReadTask) -> ScanResult:
    """Pass 1 for one task (runs in a worker)."""
    if _state.get("error") is not None:
        raise _state["error"]
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
    """The rows of JSONL bytes (a whole range of lines). Lines are parsed in place (memoryview
    slices, no copy); line numbers count blank lines too."""
    pos, size = 0, len(data)
    if task.start == 0 and data.startswith(BOM):
        pos = len(BOM)
    view = memoryview(data)
    find = data.find
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    i, last = 0, False
    while pos < size:
        end = find(b"\n", pos)
        last = end < 0
        if last:
            end = size
        if end > pos and (data[pos] not in _BLANK or not data[pos:end].isspace()):
            try:
                obj = loads(view[pos:end])
            except decode_error as exc:
                raw = data[pos:end]
                problem = utf8_problem(raw)
                if problem:
                    scan.reject(i, "invalid_utf8", problem, raw)
                elif last and task.last:
                    scan.reject(i, "truncated_last_line", f"the file ends without a newline inside this row ({exc})",
                                raw)
                else:
                    scan.reject(i, "invalid_json", str(exc), raw)
            else:
                scan.accept(obj, i, view, pos, end)
        pos = end + 1
        i += 1
    # Every line read ends with a newline but an unterminated last one.
    return scan.finish(line_based=True, newlines=i - (1 if last else 0))
