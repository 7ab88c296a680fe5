"""Run a module (normally `axolotl.cli.train`) as one rank of a multi-process CPU job.

    torchrun --nproc_per_node 2 -m llamaforge.run.cpu_distributed axolotl.cli.train STAGE.yaml

Why this exists: on a host without CUDA, accelerate 1.13's `PartialState` picks no communication
backend when DeepSpeed is requested (`_prepare_backend` only knows GPU backends unless `cpu=True`,
and the HF Trainer passes `cpu=True` only with `use_cpu`, which in turn disables DeepSpeed). The
state then reports ONE process while DeepSpeed's own process group has two, so the Trainer fills
DeepSpeed's `"auto"` batch fields for a world of 1 and DeepSpeed's batch check fails:
`train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size 8 != 8 * 1 * 2`.
Giving accelerate the gloo backend on such hosts makes every layer agree on the world size.
Nothing changes where CUDA is available: this module is only ever used for CPU runs."""

from __future__ import annotations

import os
import runpy
import sys


def patch_accelerate_backend_for_cpu() -> bool:
    """Make accelerate choose gloo (MULTI_CPU) when launched as a rank on a host without CUDA.
    Returns True when the patch was applied."""
    import torch
    from accelerate import state
    from accelerate.utils import DistributedType

    if torch.cuda.is_available():
        return False
    original = state.PartialState._prepare_backend
    if getattr(original, "_llamaforge_cpu_patch", False):
        return True

    def prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        chosen, distributed_type = original(self, cpu, sagemaker_dp, backend)
        if chosen is None and int(os.environ.get("LOCAL_RANK", -1)) != -1:
            return "gloo", DistributedType.MULTI_CPU
        return chosen, distributed_type

    prepare_backend._llamaforge_cpu_patch = True
    state.PartialState._prepare_backend = prepare_backend
    return True


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        raise SystemExit("usage: python -m llamaforge.run.cpu_distributed MODULE [ARGS...]")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    patch_accelerate_backend_for_cpu()
    module = argv[0]
    sys.argv = [module] + argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
