"""Files as the tools see them: their fingerprints (sha256 records that later stages check), and the
one-line refusals for a path of the wrong kind (a file where a folder is expected and the
reverse, a path under a file, an input that is missing), given before any work starts."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

from .errors import UserError

# The largest integer every JSON reader holds exactly (a double's 53-bit mantissa): counts written to
# manifests and requests stay at or below it.
JSON_SAFE_INT = 2**53 - 1

# ---- fingerprints ----------------------------------------------------------------------------



# Atomic writes: a temporary file in the same folder, flushed to disk, then renamed over the target,
# so a reader (or a crash) never sees a half-written file under the final name.
def write_bytes_atomic(path: str | Path, data: bytes, *, mode: int = 0o644) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str, *, mode: int = 0o644) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), mode=mode)

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


def file_record(path: Path, folder: Path) -> dict:
    """{"path" (relative to `folder`, POSIX), "bytes", "sha256"} of one file."""
    return {"path": path.relative_to(folder).as_posix(), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def top_level_records(folder: Path) -> list[dict]:
    """The records of the files directly in `folder` (not in its subfolders), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [file_record(p, folder) for p in sorted(folder.iterdir()) if p.is_file() and not p.is_symlink()]


def record_problems(recorded: list[dict], actual: list[dict], where: str) -> list[str]:
    """How the files of `actual` differ from what `recorded` says they were: not recorded, another
    size, another sha256 (an actual record whose sha256 is None is checked by size only). Empty when
    every actual file matches. `where` names their folder."""
    by_path = {r.get("path"): r for r in recorded if isinstance(r, dict)}
    problems = []
    for a in actual:
        r = by_path.get(a["path"])
        if r is None:
            problems.append(f"{where}/{a['path']} was not there when the run ended (not in its record)")
        elif r.get("bytes") != a["bytes"]:
            problems.append(f"{where}/{a['path']} is {a['bytes']:,} bytes, the run wrote {r.get('bytes'):,} "
                            "(truncated or replaced)" if isinstance(r.get("bytes"), int) else
                            f"{where}/{a['path']} has no recorded size")
        elif a.get("sha256") is not None and r.get("sha256") != a["sha256"]:
            problems.append(f"{where}/{a['path']} is not the file the run wrote (sha256 {str(r.get('sha256'))[:12]}… "
                            f"recorded, {a['sha256'][:12]}… now)")
    return problems


# ---- paths of the right kind -------------------------------------------------------------------


def _file_above(path: Path) -> Path | None:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent if not parent.is_dir() else None
    return None


def _check_path(path: str | Path, what: str, *, folder: bool, existing: bool) -> Path:
    """`path` is of the right kind (a folder, or a file), and exists (`existing`) or can be made."""
    p = Path(path)
    if p.exists() and p.is_dir() != folder:
        kind = "a file, not a folder" if folder else "a folder, not a file"
        raise UserError(f"{what} {p} is {kind}" + ("" if existing else f"; give {'a folder' if folder else 'a file name'}"))
    if existing and not p.exists():
        raise UserError(f"{what} {p} not found")
    above = None if existing else _file_above(p)
    if above is not None:
        raise UserError(f"{what} {p}: {above} is a file, so nothing can be made under it; give another path")
    return p


def check_folder_to_write(path: str | Path, what: str) -> Path:
    """`path` can be (or already is) a folder: not an existing file, not under a file."""
    return _check_path(path, what, folder=True, existing=False)


def check_file_to_write(path: str | Path, what: str) -> Path:
    """`path` can be written as a file: not an existing folder, not under a file."""
    return _check_path(path, what, folder=False, existing=False)


def check_input_file(path: str | Path, what: str) -> Path:
    """`path` is an existing file: "not found" when it is missing, "is a folder" when it is one."""
    return _check_path(path, what, folder=False, existing=True)


def check_input_folder(path: str | Path, what: str) -> Path:
    """`path` is an existing folder: "not found" when it is missing, "is a file" when it is one."""
    return _check_path(path, what, folder=True, existing=True)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file (an existing one, through links too, or the same path)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return pa.samefile(pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def json_safe(obj):
    """A copy of `obj` that strict JSON can hold: non-finite floats as strings, Paths as strings,
    tuples as lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def read_json(path: Path, *, missing: str, unreadable: str, error: type[Exception] = UserError):
    """The parsed JSON at `path`; raises `error(missing)` when the file does not exist and
    `error(unreadable)` (with `{reason}` filled in) when it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(missing) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise error(unreadable.replace("{reason}", f"{exc.__class__.__name__}: {exc}")) from None


def yaml_error_line(exc: Exception) -> str:
    """A YAML parse error (yaml.YAMLError) as one line, for every reader of a user's YAML file:
    `malformed YAML at line L, column C: what the parser found` (where it knows the place)."""
    mark = getattr(exc, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
    return f"malformed YAML{at}: {problem}"

