"""`python tests/run/fake_launch.py ARGS...` = `llamaforge ARGS...` with the training child replaced by
tests/run/fake_trainer.py: the real CLI, planner, lock, watcher, signal handling and report, no
Axolotl. Used by the tests of signals and run-folder locks."""

import sys
from pathlib import Path

import llamaforge.run.runner as runner

FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")


def fake_launch_command(recipe, stage_recipe, hardware):
    return [sys.executable, str(FAKE_TRAINER), str(stage_recipe)], "accelerate", {"PYTHONUNBUFFERED": "1"}


runner.launch_command = fake_launch_command

if __name__ == "__main__":
    from llamaforge.cli import main

    main(sys.argv[1:])
