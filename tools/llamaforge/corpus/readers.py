"""Reading sources: cutting big JSONL files into byte ranges for the workers, and iterating the rows
of every supported kind (JSONL, JSON array, Parquet, CSV, Hugging Face datasets).

A JSONL byte range always starts at the beginning of a line and ends after a newline (or at the end
of the file), so every line is read by exactly one worker. Blank lines are not rows. A UTF-8 BOM at
the start of a file and CRLF line endings are accepted."""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import UserError, exception_line

BOM = codecs.BOM_UTF8
_SURROGATE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class ReadTask:
    """One piece of work for pass 1: a byte range of a JSONL file, or a whole source."""

    task_id: int
    source: int  # index into the build's resolved sources
    start: int = 0
    end: int = 0
    last: bool = True  # the range ends at the end of the file


def plan_ranges(path: str, size: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges of about `chunk_bytes` that start at line starts (deterministic for a file)."""
    if size == 0:
        return [(0, 0)]
    bounds = [0]
    with open(path, "rb") as f:
        pos = chunk_bytes
        while pos < size:
            f.seek(pos)
            tail = b""
            while True:
                piece = f.read(1 << 16)
                if not piece:
                    pos = size
                    break
                nl = piece.find(b"\n")
                if nl >= 0:
                    pos = f.tell() - len(piece) + nl + 1
                    break
                tail += piece
            if pos >= size:
                break
            bounds.append(pos)
            pos += chunk_bytes
    bounds.append(size)
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def read_range(path: str, start: int, end: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


def excerpt(raw: bytes | str, limit: int = 300) -> str:
    """A short, printable excerpt of a bad row; invalid UTF-8 bytes show as \\xNN escapes."""
    text = raw.decode("utf-8", errors="backslashreplace") if isinstance(raw, bytes) else raw
    text = _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)
    return text if len(text) <= limit else text[:limit] + "…"


def utf8_problem(raw: bytes) -> str | None:
    """Where a line is not valid UTF-8, or None."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not valid UTF-8 ({exc.reason})"
    return None


# ---- whole-source kinds: (row number, parsed object or a problem) -----------------------------

class SourceProblem(Exception):
    """A row of a whole-source reader that cannot be parsed: (reason, detail, raw excerpt)."""

    def __init__(self, reason: str, detail: str, raw: str = ""):
        super().__init__(detail)
        self.reason, self.detail, self.raw = reason, detail, raw


def iter_json_array(path: str) -> Iterator[tuple[int, Any]]:
    """Rows of a .json file: a JSON array of objects. A file whose content is JSON lines is read as
    such (many datasets name their JSONL files .json)."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(BOM):
        data = data[len(BOM):]
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if data.lstrip().startswith(b"{") and b"\n" in data.strip():
            raise _ReadAsLines() from None
        problem = utf8_problem(data)
        yield 1, SourceProblem("invalid_utf8" if problem else "invalid_json",
                               f"the file is not one JSON document: {problem or exc}", excerpt(data[:300]))
        return
    if isinstance(doc, list):
        yield from enumerate(doc, start=1)
    else:
        yield 1, doc


class _ReadAsLines(Exception):
    """A .json file that holds JSON lines."""


def iter_parquet(path: str) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{path}: reading Parquet needs pyarrow; `pip install pyarrow`") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a broken file
        yield 1, SourceProblem("unreadable_source", f"not a readable Parquet file: {exc}")
        return
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        for obj in batch.to_pylist():
            row += 1
            yield row, obj


def iter_csv(path: str) -> Iterator[tuple[int, Any]]:
    """Rows of a CSV file with a header line; every value is text (CSV has no other type). A row
    with bytes that are not UTF-8 is a bad row; the others are read."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield 1, SourceProblem("unreadable_source", f"the CSV header cannot be read: {exc}")
            return
        row = 0
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                row += 1
                yield row, SourceProblem("invalid_json", f"CSV error near line {reader.line_num}: {exc}")
                continue
            if not values or all(not v.strip() for v in values):
                continue
            row += 1
            joined = "\x1f".join(values)
            if _SURROGATE.search(joined):
                yield row, SourceProblem("invalid_utf8", f"line {reader.line_num} has bytes that are not UTF-8",
                                         excerpt(joined.replace("\x1f", ",")))
                continue
            if len(values) != len(header):
                yield row, SourceProblem("wrong_type", f"{len(values)} values for {len(header)} columns "
                                                       f"(line {reader.line_num})", excerpt(",".join(values)))
                continue
            yield row, dict(zip(header, values))


def load_hf_dataset(name: str, config: str | None, split: str):
    """A Hugging Face dataset by name (from the local cache when offline) or a local dataset folder.
    UserError when it cannot be had."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"hf: {name}: reading Hugging Face datasets needs the `datasets` package; "
                        "`pip install datasets`") from None
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds for the same problem
        first = exception_line(exc)
        raise UserError(
            f"hf: {name}: the dataset is not available ({type(exc).__name__}: {first}); offline, it must be in "
            "the local Hugging Face cache (run once with network, or point `path:` at local files)"
        ) from None


def iter_hf(name: str, config: str | None, split: str) -> Iterator[tuple[int, Any]]:
    ds = load_hf_dataset(name, config, split)
    for row, obj in enumerate(ds, start=1):
        yield row, obj
