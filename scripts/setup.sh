#!/usr/bin/env bash
# Create .venv at the repository root and install LlamaForge with its pinned training and
# evaluation stack. Idempotent: it re-installs only when pyproject.toml or this script changed.
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
