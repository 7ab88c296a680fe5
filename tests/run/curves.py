"""Synthetic curves shared by the health and report tests."""

from __future__ import annotations

import math

from llamaforge.run.metrics import Curve, EvalPoint, TrainPoint


def curve_of(losses, *, every=10, steps_per_epoch=None, evals=(), total=None, epochs=None) -> Curve:
    """Train losses logged every `every` steps; evals as (step, loss); epochs from steps_per_epoch."""
    def epoch(step):
        return None if steps_per_epoch is None else step / steps_per_epoch

    train = [TrainPoint(step=(i + 1) * every, epoch=epoch((i + 1) * every), loss=float(v), grad_norm=1.0,
                        learning_rate=2e-4) for i, v in enumerate(losses)]
    ev = [EvalPoint(step=s, epoch=epoch(s), loss=float(v), perplexity=math.exp(v)) for s, v in evals]
    return Curve(train=train, eval=ev, total_steps=total or len(losses) * every, epochs=epochs)


def healthy_curve() -> Curve:
    """Shaped after the guide's healthy table: 2.83 -> ~0.9 over 2000 steps, 2 epochs, eval a bit above."""
    losses = [0.88 + 1.95 * math.exp(-i / 40) + 0.02 * ((-1) ** i) for i in range(200)]
    evals = [(s, 1.0 + 1.95 * math.exp(-(s / 10) / 40) + 0.05) for s in (0, 500, 1000, 1500, 2000)]
    return curve_of(losses, steps_per_epoch=1000, evals=evals, epochs=2.0)
