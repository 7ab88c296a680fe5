"""LlamaForge: Axolotl recipes for Llama-family fine-tuning, and the tools that plan, render,
check, run and gate them. Heavy libraries (torch, axolotl, lm_eval, datasets) are imported lazily
inside the functions that need them, so the CLI and the pure planners stay fast."""

__version__ = "0.1.0"
AXOLOTL_VERSION = "0.19.0"
