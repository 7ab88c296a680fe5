"""Noise of the third-party libraries the tools load in-process (transformers, peft, lm-eval), and
what is quieted, precisely and why: nothing here hides an error of a model, a task or our code."""

from __future__ import annotations

import logging
import re

# torchao's wheel ships optional compiled kernels: CUTLASS kernels for sm_90a GPUs and MXFP8 kernels
# (built for one CPython), loaded when torchao is imported. transformers imports torchao whenever it
# is installed, only to register its quantizer; LlamaForge never uses torchao (NF4 goes through
# bitsandbytes). Where those kernels cannot load (no CUDA, another Python) torchao logs one warning
# per file on every model load ("Failed to load .../torchao/_C_....so"), which says nothing about
# our run. Only those records are dropped; every other torchao message still shows.
# The same import registers torchao's enums with torch's pytree, and torch 2.13 answers each with a
# deprecation note addressed to torchao's developers ("<enum 'KernelPreference'> is an Enum subclass
# and is now natively supported by torch.compile ..."). Only those notes are dropped.
_QUIETED = {
    "torchao": re.compile(r"^Failed to load \S*/torchao/_C[^/\s]*\.so\b"),
    "torch.utils._pytree": re.compile(r"^<enum '\w+'> is an Enum subclass and is now natively supported by torch\.compile"),
}


class _RecordFilter(logging.Filter):
    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


_FILTERS = {name: _RecordFilter(pattern) for name, pattern in _QUIETED.items()}


def quiet_optional_kernels() -> None:
    """Drop torchao's optional-kernel warnings and torch's notes on torchao's enums (see above). Call
    before a library that may import torchao (transformers' model loading) is used; calling again is
    harmless."""
    for name, filt in _FILTERS.items():
        logger = logging.getLogger(name)
        if filt not in logger.filters:
            logger.addFilter(filt)
