"""Exclusive locks on what one process must own alone: a run folder (`llamaforge run`), a corpus
output (`corpus build`). A lock is an `fcntl.flock` on a lock file, held until the process releases
it or dies: the operating system drops it with the process (kill -9 included), so a crash never
leaves a stale lock (a leftover file is just a file: the next process locks it). The holder writes
its pid and command line into the file, so a refused process can say who holds it. A release
removes the file, and the folders the lock had to create when they are still empty, so a command
that fails leaves nothing behind; a process that locks a file another just removed notices (its
path no longer names the file it locked) and locks the new one instead."""

from __future__ import annotations

import fcntl
import os
import shlex
import sys
import time
from pathlib import Path

from .errors import UserError


class LockHeld(UserError):
    """Another live process holds the lock (exit 2: a user error, retry later or choose another name)."""


class HeldLock:
    """An acquired lock; `release()` (or leaving the `with` block) gives it back."""

    def __init__(self, path: Path, fd: int, created: list[Path]):
        self.path = path
        self._fd: int | None = fd
        self._created = created

    def fileno(self) -> int:
        """The descriptor holding the lock: a child process given it (Popen pass_fds) holds the lock
        too, until the last holder exits."""
        if self._fd is None:
            raise ValueError("the lock was released")
        return self._fd

    def release(self) -> None:
        if self._fd is None:
            return
        if _names(self.path, self._fd):
            self.path.unlink(missing_ok=True)    # still locked: no one can lock this file meanwhile
        os.close(self._fd)                        # closing the last descriptor drops the flock
        self._fd = None
        for folder in self._created:              # deepest first
            try:
                folder.rmdir()
            except OSError:
                break                             # not empty (the command wrote there) or gone

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _names(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open at `fd`."""
    try:
        st, fst = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; the ones created, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        f.mkdir(exist_ok=True)
    return missing


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
    except OSError:
        text = ""
    pid, _, rest = text.partition(" ")
    if not pid.isdigit():
        return "pid unknown"
    return f"pid {pid}: {rest}" if rest else f"pid {pid}"


def acquire_lock(path: str | Path, what: str, advice: str) -> HeldLock:
    """Take the exclusive lock `path` (created with its folder) without waiting. LockHeld, naming
    `what`, the holder's pid and command, and `advice`, when another process holds it."""
    path = Path(path)
    created = _make_folders(path.parent)
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise LockHeld(f"{what} is in use by another llamaforge process ({holder}); {advice}") from None
        except BaseException:
            os.close(fd)
            raise
        if _names(path, fd):
            break
        os.close(fd)       # its holder removed it as we opened it: lock the file the path names now
    else:
        raise RuntimeError(f"could not lock {path}: it keeps being replaced")
    command = " ".join(shlex.quote(a) for a in ["llamaforge", *sys.argv[1:]]).replace("\n", " ")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {command}, since {stamp}\n".encode(), 0)
    return HeldLock(path, fd, created)
