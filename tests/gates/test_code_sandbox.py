"""The HumanEval executor: opt-in only, pass/fail/timeout, no network, and the real problems."""

from __future__ import annotations

import pytest

from llamaforge.gates.code_execution import (
    CODE_EVAL_ENV,
    CodeExecutionNotAllowed,
    SandboxLimits,
    run_untrusted_program,
    sandbox_launcher,
)
from llamaforge.gates.task_functions import humaneval_program, load_humaneval_problems, score_humaneval
from llamaforge.paths import evals_dir

QUICK = SandboxLimits(timeout_s=2.0, cpu_s=2)


@pytest.fixture
def opted_in(monkeypatch):
    monkeypatch.setenv(CODE_EVAL_ENV, "1")


def test_refuses_without_the_opt_in(monkeypatch):
    monkeypatch.delenv(CODE_EVAL_ENV, raising=False)
    with pytest.raises(CodeExecutionNotAllowed, match="code execution not allowed"):
        run_untrusted_program("pass", QUICK)
    monkeypatch.setenv(CODE_EVAL_ENV, "true")  # only the exact value "1" counts, as in lm-eval
    with pytest.raises(CodeExecutionNotAllowed):
        run_untrusted_program("pass", QUICK)


def test_pass_fail_and_syntax_error(opted_in):
    assert run_untrusted_program("assert sum([1, 2]) == 3", QUICK).passed
    failed = run_untrusted_program("assert 1 == 2, 'wrong'", QUICK)
    assert not failed.passed and failed.outcome == "failed" and "AssertionError" in failed.detail
    assert "SyntaxError" in run_untrusted_program("def f(:\n    pass", QUICK).detail


def test_infinite_loop_times_out(opted_in):
    result = run_untrusted_program("while True:\n    pass", SandboxLimits(timeout_s=1.0, cpu_s=5))
    assert not result.passed and result.outcome == "timeout"


def test_environment_is_empty_and_sockets_are_blocked(opted_in):
    assert run_untrusted_program(f"import os\nassert {CODE_EVAL_ENV!r} not in os.environ\nassert 'HOME' in os.environ", QUICK).passed
    blocked = run_untrusted_program("import socket\nsocket.socket()", QUICK)
    assert not blocked.passed and "blocked by the llamaforge code sandbox" in blocked.detail


def test_network_is_unreachable_even_past_the_guard(opted_in):
    if not sandbox_launcher().network_isolated:
        pytest.skip(f"no network namespace on this machine: {sandbox_launcher().description}")
    program = (
        "import importlib, socket\nimportlib.reload(socket)\n"
        "s = socket.socket()\ns.settimeout(1)\ns.connect(('1.1.1.1', 80))\n"
    )
    result = run_untrusted_program(program, QUICK)
    assert not result.passed and "unreachable" in result.detail.lower()


def test_canonical_humaneval_solutions_pass_and_stubs_fail(opted_in):
    problems = list(load_humaneval_problems()["test"])
    assert len(problems) == 164
    task_dir = evals_dir() / "tasks" / "humaneval_offline"
    for doc in problems[:4]:
        solved = doc["prompt"] + doc["canonical_solution"]
        assert score_humaneval(doc, [[solved]], task_dir) == {"pass@1": 1.0}, doc["task_id"]
        assert score_humaneval(doc, [[doc["prompt"] + "    pass\n"]], task_dir) == {"pass@1": 0.0}, doc["task_id"]
    assert humaneval_program("def f(): pass", problems[0]).rstrip().endswith(f"check({problems[0]['entry_point']})")
