"""Splits (pure): the eval hold-out, the train copies after the mix and `--limit`, the validation
sample and the curriculum phases. Everything is deterministic from the seed and nested:

* Each category's distinct rows are ordered by their seeded key (a random order fixed by the seed).
* Eval: systematic sampling over that order — position i is held out when
  floor((i+1)*f + 1/2) > floor(i*f + 1/2), so any prefix of m rows holds round(m*f) eval rows.
* Train: the remaining rows in order; the j-th train copy is pool[j mod t] with repeat j div t, so
  down-sampling keeps a prefix and up-sampling cycles through every row before repeating any.
* Limit: the categories' train sequences are interleaved by (j + 1/2) / target and the first N are
  taken, so every limit keeps each category's share (±1) and a larger limit extends a smaller one.
  Eval rows are those among the distinct rows the train copies consumed.
* Sample: systematic sampling over each category's train copies: round(fraction x rows) of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError


def systematic_mask(n: int, fraction: float) -> np.ndarray:
    """Positions 0..n-1 picked by systematic sampling; any prefix of m holds round(m*fraction)."""
    if n <= 0:
        return np.zeros(0, dtype=bool)
    if fraction <= 0:
        return np.zeros(n, dtype=bool)
    marks = np.floor(np.arange(n + 1, dtype=np.float64) * fraction + 0.5)
    return np.diff(marks) > 0


def limit_quotas(targets: dict[str, int], limit: int | None) -> dict[str, int]:
    """Train copies per category when only the first `limit` of the interleaved train sequence are
    kept. A larger limit keeps every copy a smaller one kept."""
    total = sum(targets.values())
    if limit is None or limit >= total:
        return dict(targets)
    cats = sorted(targets)
    keys, owners = [], []
    for ci, cat in enumerate(cats):
        m = min(targets[cat], limit)
        if m:
            keys.append((np.arange(m, dtype=np.float64) + 0.5) / targets[cat])
            owners.append(np.full(m, ci, dtype=np.int32))
    if not keys:
        return {c: 0 for c in cats}
    k, o = np.concatenate(keys), np.concatenate(owners)
    first = np.lexsort((o, k))[:limit]
    counts = np.bincount(o[first], minlength=len(cats))
    return {cat: int(counts[ci]) for ci, cat in enumerate(cats)}


@dataclass
class CategorySplit:
    """Row indices (into the build's row table) of one category's outputs."""

    eval_rows: np.ndarray
    train_rows: np.ndarray  # one entry per train copy, in train-sequence order
    train_repeat: np.ndarray  # 0 for the first copy of a row, k for its k-th repeat
    sample: np.ndarray  # mask over the train copies
    mix_filtered: np.ndarray  # rows the mix leaves out (down-sampling)
    limit_filtered: np.ndarray  # rows only --limit leaves out
    available: int  # rows the train split could use without repeats


def split_category(ordered_rows: np.ndarray, eval_fraction: float, target: int, quota: int,
                   sample_fraction: float) -> CategorySplit:
    """Split one category whose distinct rows, in seeded order, are `ordered_rows`."""
    n = len(ordered_rows)
    held = systematic_mask(n, eval_fraction)
    pool_pos = np.flatnonzero(~held)
    t = len(pool_pos)
    quota = min(quota, target) if t else 0

    def consumed(q: int) -> int:
        if q >= t:
            return n
        return int(pool_pos[q - 1]) + 1 if q > 0 else 0

    full, used = consumed(target if t else 0), consumed(quota)
    j = np.arange(quota, dtype=np.int64)
    train_rows = ordered_rows[pool_pos[j % t]] if quota else np.zeros(0, dtype=ordered_rows.dtype)
    repeat = (j // t).astype(np.uint16) if quota else np.zeros(0, dtype=np.uint16)
    if quota and int(repeat.max()) >= 0xFFFF:
        raise UserError(f"a category would repeat its rows {int(repeat.max())} times; lower its count or share")
    return CategorySplit(
        eval_rows=ordered_rows[:used][held[:used]],
        train_rows=train_rows,
        train_repeat=repeat,
        sample=systematic_mask(quota, sample_fraction),
        mix_filtered=ordered_rows[full:],
        limit_filtered=ordered_rows[used:full],
        available=t,
    )


def phase_of_categories(categories: list[str], phases) -> dict[str, int]:
    """The phase index of every category (a spec's `phases`; none: all in phase 0). A category no
    phase names goes to the phase listing "*"; without one it is a UserError."""
    if not phases:
        return {c: 0 for c in categories}
    named = {cat: i for i, p in enumerate(phases) for cat in p.categories if cat != "*"}
    rest = next((i for i, p in enumerate(phases) if "*" in p.categories), None)
    out, missing = {}, []
    for cat in categories:
        if cat in named:
            out[cat] = named[cat]
        elif rest is not None:
            out[cat] = rest
        else:
            missing.append(cat)
    if missing:
        raise UserError(f"categories {', '.join(sorted(missing))} are in no phase; add them to a phase "
                        "or add \"*\" to one phase's categories")
    return out
