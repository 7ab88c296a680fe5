"""After training: `llamaforge export` (merge and verify, NF4, Ollama Modelfile, vLLM serve script,
model card, Hub upload). source.py reads and judges the run folder, serving.py renders the
serving files and the card, nf4.py and hub.py are the GPU and network edges, runner.py puts them
together. Heavy imports (torch, transformers, peft, huggingface_hub) happen inside functions."""

from .runner import ExportFailed, ExportOptions, ExportResult, export_run

__all__ = ["ExportFailed", "ExportOptions", "ExportResult", "export_run"]
