"""Parsing Axolotl 0.19's outputs into curves: the three real logs captured on a CPU machine, the
trainer_state.json of a real checkpoint, and synthetic logs for OOM, NaN and a killed process."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from llamaforge.errors import UserError
from llamaforge.run.metrics import (
    Curve, LogWatcher, choose_curve, curve_from_trainer_state, describe_oom, detect_oom, latest_trainer_state,
    parse_log, parse_metric_dict, run_curve,
)

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"


def read_log(name: str) -> str:
    return (LOGS / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tiny() -> LogWatcher:
    return parse_log(read_log("axolotl_cpu_lora_tiny.log"))


# ---- one metric dict ---------------------------------------------------------------------------


def test_metric_dict_with_string_values_as_axolotl_prints_them():
    text = ("{'loss': '4.902', 'grad_norm': '2.482', 'learning_rate': '0.006545', 'ppl': '134.6', "
            "'memory/max_active (GiB)': '0', 'tokens/train_per_sec_per_gpu': '2309', "
            "'tokens/total': 5120, 'epoch': '0.5'}")
    m = parse_metric_dict(text)
    assert m["loss"] == 4.902 and m["grad_norm"] == 2.482 and m["learning_rate"] == 0.006545
    assert m["tokens/train_per_sec_per_gpu"] == 2309.0 and m["tokens/total"] == 5120.0 and m["epoch"] == 0.5


def test_metric_dict_non_finite_values_quoted_or_bare():
    m = parse_metric_dict("{'loss': 'nan', 'grad_norm': 'inf', 'x': '-inf', 'epoch': 0}")
    assert math.isnan(m["loss"]) and m["grad_norm"] == math.inf and m["x"] == -math.inf and m["epoch"] == 0.0
    m = parse_metric_dict("{'loss': nan, 'grad_norm': inf, 'learning_rate': 1e-05}")
    assert math.isnan(m["loss"]) and m["grad_norm"] == math.inf and m["learning_rate"] == 1e-05


def test_metric_dict_drops_non_numbers_and_rejects_non_dicts():
    assert parse_metric_dict("{'loss': '1.5', 'note': 'hello', 'flag': True}") == {"loss": 1.5}
    assert parse_metric_dict("{'note': 'hello'}") is None
    assert parse_metric_dict("[1, 2]") is None
    assert parse_metric_dict("{'loss': '1.5'") is None
    assert parse_metric_dict("{'loss': __import__('os')}") is None
    assert parse_metric_dict("not a dict") is None


# ---- the real single-process LoRA log --------------------------------------------------------------


def test_tiny_log_train_curve_numbers(tiny):
    train = tiny.curve.train
    assert len(train) == 45  # 225 steps, logging_steps 5
    assert (train[0].step, train[0].loss, train[0].grad_norm, train[0].learning_rate) == (5, 7.03, 3.698, 0.003636)
    assert train[0].epoch == pytest.approx(0.06667)
    assert train[0].tokens_per_s is None  # the first log has no throughput yet
    assert train[1].tokens_per_s == 181.4
    assert (train[-1].step, train[-1].loss, train[-1].epoch) == (225, 0.1383, 3.0)
    assert [p.step for p in train] == list(range(5, 230, 5))


def test_tiny_log_eval_points_and_run_facts(tiny):
    evals = tiny.curve.eval
    assert [p.step for p in evals] == [0, 50, 100, 150, 200, 225]
    assert [p.loss for p in evals] == [7.272, 0.51, 0.1759, 0.1368, 0.123, 0.1227]
    assert evals[1].perplexity == pytest.approx(math.exp(0.51))
    c = tiny.curve
    assert (c.total_steps, c.epochs) == (225, 3.0)
    assert c.peak_memory_gib is None  # CPU: Axolotl prints 0 GiB, which measures nothing
    assert tiny.oom is None and tiny.last_error is None
    assert tiny.checkpoints == ["out/checkpoint-100", "out/checkpoint-200", "out/checkpoint-225"]
    assert tiny.settings["logging_steps"] == 5 and tiny.settings["world_size"] == 1
    assert tiny.progress["step"] == 225 and tiny.progress["total"] == 225 and tiny.progress["eta_s"] == 0


def test_tiny_log_steps_match_trainer_state(tiny):
    """The redrawn progress bar after each dict gives the exact step: the curve from the log has
    the same steps as trainer_state.json's log_history, and the same values to 4 digits."""
    state = curve_from_trainer_state(LOGS / "trainer_state_tiny.json")
    assert [p.step for p in tiny.curve.train] == [p.step for p in state.train]
    assert [p.step for p in tiny.curve.eval] == [p.step for p in state.eval]
    for a, b in zip(tiny.curve.train, state.train):
        assert a.loss == pytest.approx(b.loss, rel=6e-4)


def test_events_report_the_step_known_when_the_dict_was_read():
    events = LogWatcher().feed(read_log("axolotl_cpu_lora_tiny.log"))
    train = [e for e in events if e["kind"] == "train"]
    assert len(train) == 45 and train[0]["loss"] == 7.03
    # the bar printed before the step-70 dict showed 66/225 (tqdm skips refreshes): provisional
    by_epoch = {round(e["epoch"], 4): e["step"] for e in train}
    assert by_epoch[0.9333] == 66
    progress = [e for e in events if e["kind"] == "progress"]
    assert progress[-1]["step"] == 225 and all(e["total"] == 225 for e in progress)
    assert [e["path"] for e in events if e["kind"] == "checkpoint"][-1] == "out/checkpoint-225"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_feeding_gives_the_same_curve(tiny, seed):
    text = read_log("axolotl_cpu_lora_tiny.log")
    rng = random.Random(seed)
    watcher, pos = LogWatcher(), 0
    while pos < len(text):
        size = rng.choice([1, 2, 7, 64, 333, 4096])
        watcher.feed(text[pos:pos + size])
        pos += size
    watcher.finish()
    assert watcher.curve == tiny.curve


def test_progress_bar_is_read_before_its_carriage_return():
    w = LogWatcher()
    w.feed("[x] [INFO] [axolotl.utils.data.sft] Maximum number of steps set at 40\n")
    events = w.feed("\r 25%|██▌       | 10/40 [00:05<00:15,  2.00it/s]")
    assert events == [{"kind": "progress", "step": 10, "total": 40, "elapsed_s": 5.0, "eta_s": 15.0, "it_per_s": 2.0}]
    w.feed("\r 28%|██▊       | 11/40 [1:00:05<?, 3.00s/it]")
    assert w.progress["elapsed_s"] == 3605.0 and w.progress["eta_s"] is None
    assert w.progress["it_per_s"] == pytest.approx(1 / 3)


def test_data_preparation_and_eval_bars_are_not_training_progress(tiny):
    w = LogWatcher()
    w.feed("Dropping Invalid Sequences (<None or >256) (num_proc=2):  50%|█████     | 300/600 "
           "[00:00<00:00, 2677.52 examples/s]\n")
    w.feed("Loading weights: 100%|██████████| 21/21 [00:00<00:00, 19044.41it/s]\n")
    assert w.progress is None
    # in the real log the eval bar (x/5) never replaces the training bar (x/225)
    assert tiny.progress["total"] == 225


# ---- the real 2-process DeepSpeed ZeRO-3 logs -----------------------------------------------------


def test_zero3_two_process_log():
    w = parse_log(read_log("axolotl_cpu_zero3_2proc.log"))
    assert [(p.step, p.loss) for p in w.curve.train] == [(5, 4.902), (10, 2.121)]
    assert [(p.step, p.loss) for p in w.curve.eval] == [(0, 7.272), (10, 1.85)]
    assert w.settings["world_size"] == 2 and w.settings["max_steps"] == 10
    assert w.curve.total_steps == 10 and w.curve.epochs == 1.0
    assert w.last_error is None and w.oom is None


def test_batch_mismatch_crash_error_line_through_rank_prefixes():
    w = parse_log(read_log("axolotl_cpu_zero3_batch_mismatch.log"))
    assert w.last_error == (
        "AssertionError: Check batch related parameters. train_batch_size is not equal to "
        "micro_batch_per_gpu * gradient_acc_step * world_size 8 != 8 * 1 * 2")
    # torchrun's empty ChildFailedError afterwards is a wrapper and does not replace it
    assert w.curve.train == [] and w.curve.eval == [] and w.oom is None
    assert w.progress is None


# ---- out of memory ------------------------------------------------------------------------------


@pytest.mark.parametrize("line, where", [
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 3.91 GiB. GPU 0 has a total capacity", "gpu"),
    ("[rank3]: torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB", "gpu"),
    ("RuntimeError: CUDA out of memory. Tried to allocate 1.50 GiB (GPU 0; 79.15 GiB total capacity)", "gpu"),
    ("RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`", "gpu"),
    ("RuntimeError: CUDA error: out of memory", "gpu"),
    ("gpu-node-3:1234:1300 [0] include/alloc.h:103 NCCL WARN Cuda failure 'out of memory'", "gpu"),
    ("torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error "
     "(run with NCCL_DEBUG=INFO for details), NCCL version 2.20.5 ncclUnhandledCudaError: Call to CUDA "
     "function failed. Last error: Cuda failure 'out of memory'", "gpu"),
    ("RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
     "you tried to allocate 34359738368 bytes.", "host"),
    ("Killed", "host"),
    ("/bin/bash: line 1: 48213 Killed                  accelerate launch -m axolotl.cli.train x.yaml", "host"),
    ("  traceback : Signal 9 (SIGKILL) received by PID 10315", "host"),
])
def test_detect_oom_variants(line, where):
    text = f"[INFO] step 3\n{line}\nmore output\n"
    found = detect_oom(text)
    assert found is not None and found in line
    assert describe_oom(found).startswith("GPU out of memory" if where == "gpu" else "host RAM (OOM killer?)")


@pytest.mark.parametrize("line", [
    "[2026-11-21] [INFO] [axolotl.train] Starting trainer...",
    "{'loss': '0.5', 'memory/max_allocated (GiB)': '61.2'}",
    "we skill-killed it",
    "RuntimeError: Expected all tensors to be on the same device",
    "[WARNING] out of memory risk is low",
])
def test_detect_oom_ignores_other_lines(line):
    assert detect_oom(line) is None


def test_describe_oom_from_a_sigkill_exit_code_alone():
    assert describe_oom(None, 137) == "host RAM (OOM killer?): process killed by SIGKILL (exit code 137)"
    assert describe_oom(None, -9).startswith("host RAM (OOM killer?)")
    assert describe_oom(None, 1) is None and describe_oom(None, None) is None


def test_watcher_on_a_cuda_oom_in_a_two_process_run():
    w = LogWatcher()
    events = w.feed(read_log("synthetic_cuda_oom_2proc.log"))
    assert w.oom.startswith("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 3.91 GiB. GPU 0")
    # the last exception line is rank 1's OOM; torchrun's ChildFailedError only wraps it
    assert w.last_error.startswith("torch.OutOfMemoryError: CUDA out of memory") and "GPU 1" in w.last_error
    assert [e["where"] for e in events if e["kind"] == "oom"] == ["gpu", "gpu"]
    assert [(p.step, p.loss) for p in w.curve.train] == [(10, 2.91)]
    assert w.curve.peak_memory_gib == 74.81  # the largest memory/* figure: device_reserved
    assert w.progress["step"] == 12 and w.curve.total_steps == 400


def test_watcher_on_nan_loss_then_killed():
    w = parse_log(read_log("synthetic_nan_then_killed.log"))
    losses = [p.loss for p in w.curve.train]
    assert losses[:2] == [3.1, 2.7] and all(math.isnan(v) for v in losses[2:])
    assert [p.step for p in w.curve.train] == [5, 10, 15, 20]
    assert w.curve.train[2].grad_norm == math.inf
    assert w.oom.startswith("/bin/bash: line 1: 48213 Killed")
    assert describe_oom(w.oom).startswith("host RAM (OOM killer?)")


def test_steps_without_progress_bars_come_from_logging_steps():
    """disable_tqdm: no bars, dicts printed by PrinterCallback; the config dump gives logging_steps."""
    log = ("[2026] [INFO] [axolotl.cli.config] config:\n{\n  \"logging_steps\": 10,\n  \"num_epochs\": 2.0,\n"
           "  \"datasets\": [\n    {\n      \"logging_steps\": 99\n    }\n  ],\n  \"max_steps\": 40\n}\n"
           "{'loss': '2.0', 'epoch': '0.5'}\n{'loss': '1.5', 'epoch': '1'}\n{'eval_loss': '1.6', 'epoch': '1'}\n")
    w = parse_log(log)
    assert w.settings == {"logging_steps": 10, "num_epochs": 2.0, "max_steps": 40}
    assert [p.step for p in w.curve.train] == [10, 20] and w.curve.eval[0].step == 20
    assert (w.curve.total_steps, w.curve.epochs) == (40, 2.0)


def test_finish_reads_a_last_line_without_newline():
    w = LogWatcher()
    w.feed("{'loss': '1.25', 'epoch': '0.1'}\nRuntimeError: boom")
    assert w.last_error is None
    events = w.finish()
    assert w.last_error == "RuntimeError: boom" and events == [{"kind": "error", "line": "RuntimeError: boom"}]


# ---- trainer_state.json ----------------------------------------------------------------------------


def test_trainer_state_curve():
    c = curve_from_trainer_state(LOGS / "trainer_state_tiny.json")
    assert len(c.train) == 45 and len(c.eval) == 6
    assert (c.train[0].step, c.train[0].loss) == (5, pytest.approx(7.030126953125))
    assert (c.train[-1].step, c.train[-1].epoch) == (225, 3.0)
    assert c.eval[-1].loss == pytest.approx(0.12272071838378906) and c.eval[0].step == 0
    assert (c.total_steps, c.epochs, c.peak_memory_gib) == (225, 3.0, None)


@pytest.mark.parametrize("content, why", [
    (None, "not found"),
    ('{"log_history": [', "not readable JSON"),
    ('{"global_step": 3}', "no `log_history`"),
    ('[1, 2]', "no `log_history`"),
])
def test_trainer_state_errors_are_user_errors(tmp_path, content, why):
    path = tmp_path / "trainer_state.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=why):
        curve_from_trainer_state(path)


def test_latest_trainer_state_orders_checkpoints_numerically(tmp_path):
    for n in (25, 100, 9):
        (tmp_path / f"checkpoint-{n}").mkdir()
        (tmp_path / f"checkpoint-{n}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-final").mkdir()
    assert latest_trainer_state(tmp_path) == tmp_path / "checkpoint-100" / "trainer_state.json"
    assert latest_trainer_state(tmp_path / "nothing") is None


def test_choose_curve_prefers_the_state_unless_the_log_got_further(tiny):
    state = curve_from_trainer_state(LOGS / "trainer_state_tiny.json")
    assert choose_curve(tiny.curve, state) is state
    behind = Curve(train=state.train[:20], eval=state.eval[:2], total_steps=225)
    assert choose_curve(tiny.curve, behind) is tiny.curve
    assert choose_curve(tiny.curve, None) is tiny.curve


def test_curve_dict_round_trip_is_strict_json():
    state = curve_from_trainer_state(LOGS / "trainer_state_tiny.json")
    state.train[3].loss = math.nan
    state.train[4].grad_norm = math.inf
    data = json.loads(json.dumps(state.to_dict(), allow_nan=False))
    assert data["train"][3]["loss"] == "nan" and data["train"][4]["grad_norm"] == "inf"
    back = Curve.from_dict(data)
    assert math.isnan(back.train[3].loss) and back.train[4].grad_norm == math.inf
    assert back.train[10] == state.train[10] and back.eval == state.eval


def test_config_dump_cut_short_does_not_swallow_the_rest():
    log = ("[2026] [INFO] [axolotl.cli.config] config:\n{\n  \"num_epochs\": 2.0,\n"
           "[2026] [INFO] [axolotl.train] Starting trainer...\n"
           "  0%|          | 0/30 [00:00<?, ?it/s]\r 33%|███▎      | 10/30 [00:05<00:10,  2.00it/s]\r"
           "{'loss': '2.0', 'epoch': '0.5'}\n\r 33%|███▎      | 10/30 [00:05<00:10,  2.00it/s]\n")
    w = parse_log(log)
    assert w.settings == {"num_epochs": 2.0} and w.curve.epochs == 2.0
    assert [(p.step, p.loss) for p in w.curve.train] == [(10, 2.0)] and w.curve.total_steps == 30


def test_run_curve_falls_back_to_the_log_when_the_checkpoint_is_half_written(tmp_path, tiny):
    assert run_curve(tiny.curve, tmp_path) is tiny.curve  # no checkpoint
    ckpt = tmp_path / "checkpoint-225"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text((LOGS / "trainer_state_tiny.json").read_text())
    chosen = run_curve(tiny.curve, tmp_path)
    assert chosen is not tiny.curve and chosen.train[0].loss == pytest.approx(7.030126953125)
    (ckpt / "trainer_state.json").write_text('{"log_history": [{"loss": 1.0, "st')
    assert run_curve(tiny.curve, tmp_path) is tiny.curve
