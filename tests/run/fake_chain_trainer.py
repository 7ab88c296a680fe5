"""A stand-in trainer for the chain test (tests/run/test_chain_plumbing.py): reads the stage recipe,
writes an adapter (config naming base_model; weights whose bytes name the stage, the adapter it
continued and its datasets) into output_dir, prints one Axolotl-like metric line and exits 0."""

import hashlib
import json
import struct
import sys
from pathlib import Path

import yaml

config = yaml.safe_load(Path(sys.argv[1]).read_text())
out = Path(config["output_dir"])
out.mkdir(parents=True, exist_ok=True)
(out / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": config["base_model"]}))
start = config.get("lora_model_dir")
before = hashlib.sha256((Path(start) / "adapter_model.safetensors").read_bytes()).hexdigest() if start else ""
meta = json.dumps({"__metadata__": {"from": before, "data": config["datasets"][0]["path"], "out": str(out)}}).encode()
(out / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(meta)) + meta)
print("{'loss': 2.5, 'grad_norm': 1.0, 'learning_rate': 0.001, 'epoch': 0.1}", flush=True)
