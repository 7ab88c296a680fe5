"""Library noise, found at its cause and silenced precisely: torchao's optional-kernel warnings on
every model load (llamaforge.libraries), and colorama's atexit traceback at the end of a pytest run
that imported Axolotl's CLI (tests/conftest.py). Each test also shows the noise without the fix, so
it can fail."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llamaforge.libraries import quiet_optional_kernels

LOAD = """
import logging, sys
logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
{quiet}
import transformers.quantizers   # what a model load imports: it imports torchao when installed
print("torchao" in sys.modules)
"""


def test_only_torchaos_optional_kernel_records_are_dropped():
    quiet_optional_kernels()
    quiet_optional_kernels()                      # idempotent
    torchao = logging.getLogger("torchao")
    assert len(torchao.filters) == 1

    def passes(logger, msg):
        return logger.filter(logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, None, None))

    assert not passes(torchao, "Failed to load /venv/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: "
                               "Could not load this library")
    assert not passes(torchao, "Failed to load /venv/site-packages/torchao/_C_cutlass_90a.abi3.so: x")
    assert passes(torchao, "Skipping import of cpp extensions due to incompatible torch version")
    assert passes(torchao, "Failed to load the quantized weights of model.layers.0")
    pytree = logging.getLogger("torch.utils._pytree")
    assert not passes(pytree, "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by "
                              "torch.compile as an opaque value type.")
    assert passes(pytree, "something else about pytrees")


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed")
def test_a_model_load_prints_no_torchao_kernel_warning():
    def run(quiet: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", LOAD.format(quiet=quiet)], capture_output=True, text=True,
                              timeout=300)

    plain = run("")
    assert plain.stdout.strip() == "True"
    quieted = run("from llamaforge.libraries import quiet_optional_kernels; quiet_optional_kernels()")
    assert quieted.returncode == 0 and quieted.stdout.strip() == "True"
    assert "Failed to load" not in quieted.stderr and "Enum subclass" not in quieted.stderr
    if "Failed to load" not in plain.stderr:
        pytest.skip("torchao's kernels load here: no warning to drop")


COLORAMA_UNDER_AXOLOTL = """
import sys

import colorama
from axolotl.utils.tee import _StreamTee


def test_what_loading_axolotls_config_does():
    colorama.init()                          # axolotl.logging_config.configure_logging(), on importing axolotl.cli
    sys.stdout = _StreamTee(sys.stdout)      # axolotl.utils.tee, when load_cfg prepares its debug log
    colorama.init()                          # configure_logging() again: colorama now holds the tee
"""


def test_colorama_initialised_under_pytest_capture_leaves_no_atexit_traceback(tmp_path):
    """What the tests that load Axolotl's config in-process do (tests/corpus/test_corpus_axolotl.py),
    reduced to its three steps: at exit colorama's handler asks the tee, which asks pytest's closed
    capture stream, whether it is a terminal."""
    pytest.importorskip("axolotl.utils.tee")
    (tmp_path / "test_colorama.py").write_text(COLORAMA_UNDER_AXOLOTL)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_colorama.py"]
    without = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert without.returncode == 0 and "I/O operation on closed file" in without.stdout + without.stderr
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    fixed = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "I/O operation on closed file" not in fixed.stdout + fixed.stderr
    assert "Exception ignored" not in fixed.stdout + fixed.stderr
