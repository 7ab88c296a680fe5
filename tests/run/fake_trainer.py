"""A stand-in for `accelerate launch -m axolotl.cli.train STAGE.yaml` (tests/run/fake_launch.py puts
it in place of the real launch command): it prints Axolotl-like log lines, saves an adapter config
into the stage's output_dir, starts a grandchild in its process group, writes the pids of both to
$FAKE_TRAINER_PIDS, then waits. On SIGTERM or SIGINT it notes the signal in $FAKE_TRAINER_PIDS.got
and exits as a trainer would. FAKE_TRAINER_MODE=exit makes it finish at once (exit 0)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

config = yaml.safe_load(Path(sys.argv[1]).read_text())
out = Path(config["output_dir"])
out.mkdir(parents=True, exist_ok=True)
(out / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
print("{'loss': 2.5, 'grad_norm': 1.0, 'learning_rate': 0.001, 'epoch': 0.1}", flush=True)
if os.environ.get("FAKE_TRAINER_MODE") == "exit":
    sys.exit(0)

pids = Path(os.environ["FAKE_TRAINER_PIDS"])


def stop(signum, frame):
    pids.with_suffix(".got").write_text(signal.Signals(signum).name)
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
pids.write_text(f"{os.getpid()} {grandchild.pid}")
while True:
    time.sleep(0.1)
