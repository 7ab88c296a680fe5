"""Staged training runs: derive the stage recipe, launch Axolotl, watch it, judge its health, report."""
