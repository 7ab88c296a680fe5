# The two commands of the README. Both do all set-up on a fresh machine first.
#   make demo   the end-to-end demo on SmolLM2-135M-Instruct (CPU, offline after set-up)
#   make test   the whole test suite, slow end-to-end tests included (what CI runs)
SHELL := /bin/bash
export AXOLOTL_DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup demo test test-fast render-check
setup:
	@scripts/setup.sh

demo: setup
	llamaforge demo

test: setup
	python -m pytest --durations=15

test-fast: setup
	python -m pytest -m "not slow"
