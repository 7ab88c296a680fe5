"""Two real `corpus build` processes into one output: the second is refused on one line naming the
first's pid, writes nothing, and the first finishes a corpus that matches its manifest. A build
killed with SIGKILL leaves no lock behind (the operating system drops it with the process) and no
complete-looking output; the next build succeeds and is byte-identical to an undisturbed one."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from llamaforge.corpus.manifest import load_manifest

from .corpus_helpers import chat, write_jsonl


def make_source(folder: Path, rows: int) -> Path:
    rng = random.Random(0)
    write_jsonl(folder / "src.jsonl", (chat(f"question {i}: {rng.random()}", " ".join(str(rng.random()) for _ in range(12)))
                                      for i in range(rows)))
    return folder / "src.jsonl"


def start_build(folder: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "llamaforge", "corpus", "build", "c.yaml", "--workers", "1", "--json"],
                            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))


def stop_while_locked(proc: subprocess.Popen, lock: Path) -> bool:
    """SIGSTOP the build as soon as it holds the lock; False when it finished first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            holder = lock.read_text().split(" ", 1)[0]
        except FileNotFoundError:
            holder = ""
        if holder == str(proc.pid):
            proc.send_signal(signal.SIGSTOP)
            return proc.poll() is None
        time.sleep(0.002)
    raise AssertionError("the build never took its lock")


def held_build(folder: Path) -> subprocess.Popen:
    """A build stopped while it holds the output's lock (the source grows until one is caught)."""
    rows = 40_000
    for _ in range(4):
        make_source(folder, rows)
        proc = start_build(folder)
        if stop_while_locked(proc, folder / "out/.c.lock"):
            return proc
        assert proc.wait(timeout=120) == 0, proc.communicate()
        rows *= 2
    raise AssertionError("every build finished before it could be caught holding its lock")


def files_of(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


def test_a_second_build_into_the_same_output_is_refused_and_the_first_completes(corpus_dir):
    corpus_dir.spec(sources=[{"path": "src.jsonl", "category": "general"}])
    first = held_build(corpus_dir.path)
    try:
        second = start_build(corpus_dir.path)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2, (out, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert f"pid {first.pid}" in lines[0] and "in use" in lines[0] and "out/c" in lines[0]
        assert not (corpus_dir / "out/c").exists()           # the second wrote nothing
        assert not [p for p in (corpus_dir / "out").iterdir() if p.name.endswith(f"-{second.pid}")]
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    manifest = load_manifest(corpus_dir / "out/c", verify="sha256")
    assert json.loads(out)["counts"]["kept"] == manifest["counts"]["kept"] > 0


def test_a_killed_build_leaves_no_lock_and_the_rebuild_is_byte_identical(corpus_dir):
    corpus_dir.spec(sources=[{"path": "src.jsonl", "category": "general"}])
    killed = held_build(corpus_dir.path)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert not (corpus_dir / "out/c/manifest.json").exists()   # nothing complete-looking
    rebuild = start_build(corpus_dir.path)
    out, err = rebuild.communicate(timeout=300)
    assert rebuild.returncode == 0, err
    first = files_of(corpus_dir / "out/c")
    again = start_build(corpus_dir.path)
    assert again.wait(timeout=300) == 0
    assert files_of(corpus_dir / "out/c") == first
    assert sorted(p.name for p in (corpus_dir / "out").iterdir()) == ["c"]   # no temporary folder, no lock file left
