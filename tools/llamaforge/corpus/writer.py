"""Pass 2 of a build, run in worker processes: assemble the output rows of one shuffle bucket from
the spool, in key order, and write them at their precomputed offsets of train/eval/sample (every
bucket's share of every file is known before writing, so buckets are written in parallel and the
result is byte-identical however the work was divided). It also measures the QC flags of the rows
picked for the QC sample and returns the rows picked for review.

Also here: the atomic commit of the output folder, and file hashing."""

from __future__ import annotations

import mmap
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from .normalize import assistant_answers
from .qc import PhraseHits, opener, row_flags
from .scan import _state, spool_path

# Marks of a copy (bits): measure its QC flags and opener, return it for review.
QC_SAMPLE, QC_REVIEW = 1, 2


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
    qc_rows: list[tuple[int, int, str]]  # (row, flag bits, opener)
    phrase_hits: dict[str, dict[str, int]]
    review: list[tuple[int, bytes]]


def write_bucket(task: WriteTask) -> WriteResult:
    # This bucket's spool files are mapped and their rows written to the outputs straight from the
    # map (pwritev, no copy in Python); rows repeated from other buckets are pread.
    maps: list[mmap.mmap] = []
    local: dict[int, memoryview] = {}
    for w in task.workers:
        path = spool_path(task.spool_dir, w, task.bucket)
        if os.path.exists(path) and os.path.getsize(path):
            with open(path, "rb") as f:
                maps.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
            local[w] = memoryview(maps[-1])
    remote: dict[tuple[int, int], int] = {}

    def remote_line(w: int, b: int, off: int, nb: int) -> bytes:
        fd = remote.get((w, b))
        if fd is None:
            fd = remote[(w, b)] = os.open(spool_path(task.spool_dir, w, b), os.O_RDONLY)
        return os.pread(fd, nb, off)

    rules = _state["config"].rules
    hits = PhraseHits()
    qc_rows, review = [], []
    out_fds = {}
    bucket = task.bucket
    lines: list = []
    try:
        repeat, src_w, src_b = task.repeat.tolist(), task.src_worker.tolist(), task.src_bucket.tolist()
        offs, sizes = task.src_off.tolist(), task.nbytes.tolist()
        lines = [local[w][o:o + n] if b == bucket else remote_line(w, b, o, n)
                 for w, b, o, n in zip(src_w, src_b, offs, sizes)]
        for i in task.repeat.nonzero()[0].tolist():
            lines[i] = b"%s,\"_repeat\":%d}" % (bytes(lines[i][:-1]), repeat[i])
        marks, rows = task.qc, task.row
        for i in marks.nonzero()[0].tolist():
            obj = orjson.loads(lines[i])
            answers = assistant_answers(obj)
            if marks[i] & QC_SAMPLE:
                qc_rows.append((int(rows[i]), row_flags(answers, rules, task.qc_flags, hits),
                                opener(answers[0], rules.opener_words)))
            if marks[i] & QC_REVIEW:
                review.append((int(rows[i]), bytes(lines[i])))
        pos = 0
        for region in task.regions:
            part = lines[pos:pos + region.count]
            pos += region.count
            size = sum(map(len, part)) + len(part)
            if size != region.size:
                raise RuntimeError(f"bucket {bucket}: region of {size} bytes, planned {region.size}")  # a bug
            fd = out_fds.get(region.file)
            if fd is None:
                fd = out_fds[region.file] = os.open(task.outputs[region.file], os.O_WRONLY)
            _write_lines(fd, part, region.offset)
    finally:
        lines = part = None  # release the views of the maps before closing them
        local.clear()
        for fd in list(remote.values()) + list(out_fds.values()):
            os.close(fd)
        for m in maps:
            m.close()
    return WriteResult(bucket, qc_rows, {f: v for f, v in hits.counts.items() if v}, review)


_NEWLINE = b"\n"
_LINES_PER_CALL = 500  # 2 buffers per line, under the usual IOV_MAX of 1024


def _write_lines(fd: int, lines: list, offset: int) -> None:
    """Write `lines`, each followed by a newline, at `offset` of fd."""
    for start in range(0, len(lines), _LINES_PER_CALL):
        buffers = []
        for line in lines[start:start + _LINES_PER_CALL]:
            buffers.append(line)
            buffers.append(_NEWLINE)
        want = sum(map(len, buffers))
        done = os.pwritev(fd, buffers, offset)
        if done < want:  # a short write (rare for regular files): finish it the plain way
            rest = memoryview(b"".join(bytes(b) for b in buffers))[done:]
            pos = offset + done
            while rest:
                n = os.pwrite(fd, rest, pos)
                rest, pos = rest[n:], pos + n
        offset += want


# ---- files -----------------------------------------------------------------------------------

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
