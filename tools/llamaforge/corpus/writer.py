"""Pass 2 of a build, run in worker processes: assemble the output rows of one shuffle bucket from
the spool, in key order, and write them at their precomputed offsets of train/eval/sample (every
bucket's share of every file is known before writing, so buckets are written in parallel and the
result is byte-identical however the work was divided). It also measures the QC flags of the rows
picked for the QC sample and returns the rows picked for review.

Also here: atomic commits of the output folder and files, and file hashing."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from .qc import PhraseHits, opener, row_flags
from .scan import _state, spool_path

# Marks of a copy (bits): measure its QC flags, return it for review, return its opener text.
QC_SAMPLE, QC_REVIEW, QC_OPENER = 1, 2, 4


@dataclass(frozen=True)
class Region:
    file: int  # index into WriteTask.outputs
    offset: int
    size: int
    count: int


@dataclass
class WriteTask:
    bucket: int
    spool_dir: str
    workers: tuple[int, ...]  # worker ids whose spool may hold rows of this bucket
    outputs: tuple[str, ...]
    regions: tuple[Region, ...]  # consecutive groups of the copies below, in order
    repeat: np.ndarray  # uint16 per copy
    src_worker: np.ndarray  # worker id per copy
    src_bucket: np.ndarray  # bucket whose spool holds the row
    src_off: np.ndarray
    nbytes: np.ndarray
    qc: np.ndarray  # QC_* bits per copy
    row: np.ndarray  # row index per copy (for QC and review results)
    qc_flags: tuple[str, ...]  # flags to measure on QC rows


@dataclass
class WriteResult:
    bucket: int
    qc_rows: list[tuple[int, int]]  # (row, flag bits)
    phrase_hits: dict[str, dict[str, int]]
    review: list[tuple[int, bytes]]
    openers: list[tuple[int, str]]


def write_bucket(task: WriteTask) -> WriteResult:
    local: dict[int, bytes] = {}
    for w in task.workers:
        path = spool_path(task.spool_dir, w, task.bucket)
        if os.path.exists(path):
            with open(path, "rb") as f:
                local[w] = f.read()
    remote: dict[tuple[int, int], int] = {}
    rules = _state["config"].rules
    hits = PhraseHits()
    qc_rows, review, openers = [], [], []
    out_fds = {}
    try:
        pos = 0
        repeat, src_w, src_b = task.repeat.tolist(), task.src_worker.tolist(), task.src_bucket.tolist()
        offs, sizes, marks, rows = task.src_off.tolist(), task.nbytes.tolist(), task.qc.tolist(), task.row.tolist()
        for region in task.regions:
            parts = []
            for i in range(pos, pos + region.count):
                off, nb = offs[i], sizes[i]
                if src_b[i] == task.bucket:
                    line = local[src_w[i]][off:off + nb]
                else:
                    fd = remote.get((src_w[i], src_b[i]))
                    if fd is None:
                        fd = remote[(src_w[i], src_b[i])] = os.open(
                            spool_path(task.spool_dir, src_w[i], src_b[i]), os.O_RDONLY)
                    line = os.pread(fd, nb, off)
                if len(line) != nb:
                    raise RuntimeError(f"spool row of {nb} bytes read as {len(line)}")  # a bug
                if repeat[i]:
                    line = b"%s,\"_repeat\":%d}" % (line[:-1], repeat[i])
                parts.append(line)
                if marks[i]:
                    obj = orjson.loads(line)
                    answers = [m["content"] for m in obj["messages"] if m["role"] == "assistant"]
                    if marks[i] & QC_SAMPLE:
                        qc_rows.append((rows[i], row_flags(answers, rules, task.qc_flags, hits)))
                    if marks[i] & QC_REVIEW:
                        review.append((rows[i], line))
                    if marks[i] & QC_OPENER:
                        openers.append((rows[i], opener(answers[0], rules.opener_words)))
            pos += region.count
            if not parts:
                continue
            parts.append(b"")
            data = b"\n".join(parts)
            if len(data) != region.size:
                raise RuntimeError(f"bucket {task.bucket}: region of {len(data)} bytes, planned {region.size}")
            fd = out_fds.get(region.file)
            if fd is None:
                fd = out_fds[region.file] = os.open(task.outputs[region.file], os.O_WRONLY)
            view, offset = memoryview(data), region.offset
            while view:
                done = os.pwrite(fd, view, offset)
                view, offset = view[done:], offset + done
    finally:
        for fd in list(remote.values()) + list(out_fds.values()):
            os.close(fd)
    return WriteResult(task.bucket, qc_rows, {f: v for f, v in hits.counts.items() if v}, review, openers)


# ---- files -----------------------------------------------------------------------------------

def sha256_file(path: str | Path, progress=None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 23)
            if not block:
                break
            h.update(block)
            if progress is not None:
                progress(len(block))
    return h.hexdigest()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def commit_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Put a finished build folder in place: the old folder (if any) is moved aside first and
    removed after, so `final_dir` is always either the old build or the new one."""
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def copy_range(src: str, dst: str, offset: int, size: int) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        remaining = size
        fin.seek(offset)
        while remaining:
            try:
                done = os.copy_file_range(fin.fileno(), fout.fileno(), remaining, offset, None)
            except (AttributeError, OSError):
                done = 0
            if done <= 0:
                fin.seek(offset)
                shutil.copyfileobj(_limited(fin, remaining), fout)
                return
            offset += done
            remaining -= done


def _limited(f, size: int):
    class _Reader:
        def __init__(self):
            self.left = size

        def read(self, n=-1):
            n = self.left if n < 0 else min(n, self.left)
            data = f.read(n)
            self.left -= len(data)
            return data

    return _Reader()
