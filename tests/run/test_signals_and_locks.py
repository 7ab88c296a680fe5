"""Two real `llamaforge run` processes on one run folder, and signals to a running stage. The runs go
through the real CLI, planner, lock, watcher and report (tests/run/fake_launch.py replaces only the
Axolotl child, by tests/run/fake_trainer.py, which starts a grandchild in its process group):

- a second run on a folder in use is refused on one line naming the holder's pid, and the first
  run's live stage folder is left alone;
- the lock is released by the operating system when its holders die (kill -9), never left stale,
  and the training child holds it too, so an orphaned trainer still keeps the folder;
- SIGTERM or Ctrl-C (SIGINT) to `run` reaches the child's whole process group, is waited for, and
  leaves a report that says "interrupted"; the exit code is 128 + the signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llamaforge.errors import UserError
from llamaforge.run.runner import lock_run_folder

from .test_stage import workspace as stage_workspace  # noqa: F401 (a fixture)

FAKE_LAUNCH = Path(__file__).with_name("fake_launch.py")


@pytest.fixture(scope="module")
def workspace(stage_workspace):
    """The built demo corpus and demo recipe of the stage tests (root/recipe.yaml)."""
    return stage_workspace[0]


def start_run(root: Path, name: str, pids: Path, *, mode: str = "wait") -> subprocess.Popen:
    env = dict(os.environ, FAKE_TRAINER_PIDS=str(pids), FAKE_TRAINER_MODE=mode)
    # SIGINT at its default, as under a terminal: a test suite started in the background by a
    # non-interactive shell (`cmd &`) inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt, rightly (POSIX: background jobs ignore the terminal's interrupt)
    return subprocess.Popen([sys.executable, str(FAKE_LAUNCH), "run", "recipe.yaml", "--stage", "validate",
                             "--name", name], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_pids(proc: subprocess.Popen, pids: Path) -> tuple[int, int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if pids.is_file() and len(pids.read_text().split()) == 2:
            child, grandchild = map(int, pids.read_text().split())
            return child, grandchild
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the fake trainer did not start")


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for its parent counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def wait_dead(*pids: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def kill_quietly(*pids: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_second_run_on_a_folder_in_use_is_refused_with_the_holders_pid(workspace, tmp_path):
    pids = tmp_path / "pids"
    first = start_run(workspace, "shared", pids)
    child = grandchild = None
    try:
        child, grandchild = wait_for_pids(first, pids)
        stage = workspace / "runs/shared/validate"
        log_before = (stage / "train.log").read_text()
        second = start_run(workspace, "shared", tmp_path / "pids2", mode="exit")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2, (out, err)
        line = one_line(err)
        assert f"pid {first.pid}" in line and "runs/shared" in line and "in use" in line and "--name" in line
        # the first run's live folder was neither moved aside nor touched
        assert not list((workspace / "runs/shared").glob("validate.attempt-*"))
        assert (stage / "train.log").read_text().startswith(log_before)
        assert alive(child)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
        kill_quietly(*(p for p in (child, grandchild) if p))


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_process_group_and_the_report_says_interrupted(workspace, tmp_path, signum, code):
    name = f"sig-{signum}"
    pids = tmp_path / "pids"
    run = start_run(workspace, name, pids)
    child, grandchild = wait_for_pids(run, pids)
    try:
        run.send_signal(signum)
        out, err = run.communicate(timeout=120)
        assert run.returncode == code, (out, err)
        assert "Traceback" not in err
        assert wait_dead(child, grandchild), "the child's process group outlived the run"
        assert pids.with_suffix(".got").read_text() == signal.Signals(signum).name   # forwarded, not just killed
        stage = workspace / "runs" / name / "validate"
        report = json.loads((stage / "report.json").read_text())
        assert report["interrupted"] == {"signal": signal.Signals(signum).name, "during": "training"}
        assert report["passed"] is False and report["exit_code"] is None
        process = next(c for c in report["health"]["checks"] if c["name"] == "process")
        assert process["status"] == "fail" and "interrupted" in process["message"]
        assert report["output"]["files"][0]["path"] == "adapter_config.json"   # the run's output, hashed
        assert "interrupted" in (stage / "report.md").read_text()
        assert "interrupted by" in (stage / "train.log").read_text()
        assert "interrupted" in out
    finally:
        kill_quietly(child, grandchild)


def test_the_lock_dies_with_its_holders_and_is_held_by_the_training_child(workspace, tmp_path):
    pids = tmp_path / "pids"
    run = start_run(workspace, "killed", pids)
    child, grandchild = wait_for_pids(run, pids)
    try:
        run.kill()                                   # kill -9 llamaforge itself: no handler runs
        run.communicate(timeout=60)
        with pytest.raises(UserError, match=f"in use by another llamaforge process \\(pid {run.pid}"):
            lock_run_folder(workspace / "runs/killed")   # the orphaned trainer still holds the folder
        kill_quietly(child, grandchild)
        assert wait_dead(child)
        with lock_run_folder(workspace / "runs/killed"):     # no stale lock once every holder is gone
            pass
    finally:
        kill_quietly(child, grandchild)
