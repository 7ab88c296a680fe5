"""Which rows go where (pure, numpy): categories the spec does not keep -> exact dedup -> QC drops ->
length drops -> near dedup -> per category eval hold-out, mix and limit. Every valid row ends in
exactly one state, so the counts reconcile: read = kept + duplicates + quarantined + filtered
(quarantined rows never get this far)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .dedup import exact_duplicates
from .mix import MixResult, resolve_targets
from .qc import FLAG_BITS
from .split import CategorySplit, limit_quotas, split_category

# Row states. Kept rows are TRAIN (at least one train copy) or EVAL.
TRAIN, EVAL, DUP_EXACT, DUP_NEAR = 0, 1, 2, 3
FILTER_REASONS = tuple(f"qc:{flag}" for flag in FLAG_BITS) + ("over_sequence_len", "mix", "limit", "category")
FILTERED = {reason: 4 + i for i, reason in enumerate(FILTER_REASONS)}
STATE_COUNT = 4 + len(FILTER_REASONS)
UNSET = 255


@dataclass
class Selection:
    state: np.ndarray  # uint8 per row
    splits: dict[str, CategorySplit]
    mix: MixResult
    quotas: dict[str, int]
    warnings: list[str] = field(default_factory=list)


def select_rows(
    *,
    h1: np.ndarray,
    h2: np.ndarray,
    key: np.ndarray,
    cat: np.ndarray,
    flags: np.ndarray,
    tokens: np.ndarray,
    categories: list[str],
    spec,
    limit: int | None,
    general_advice: tuple[float, float] | None = None,
    near_duplicates: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Selection:
    """Decide the state of every valid row and split each category (see the module docstring).
    `near_duplicates(eligible_mask)` returns the near-duplicate mask when near dedup is on."""
    n = len(h1)
    state = np.full(n, UNSET, dtype=np.uint8)
    live = np.ones(n, dtype=bool)
    if spec.keep_categories is not None:
        # first, so a kept row is never a duplicate of a row that is not kept
        kept_codes = [code for code, name in enumerate(categories) if name in spec.keep_categories]
        hit = ~np.isin(cat, np.array(kept_codes, dtype=cat.dtype))
        state[hit] = FILTERED["category"]
        live &= ~hit
    if spec.dedup.exact:
        dup = exact_duplicates(h1, h2, live)
        state[dup] = DUP_EXACT
        live &= ~dup
    for flag in spec.qc.drop:
        hit = live & ((flags & np.uint8(FLAG_BITS[flag])) != 0)
        state[hit] = FILTERED[f"qc:{flag}"]
        live &= ~hit
    if spec.lengths.drop_over_sequence_len:
        hit = live & (tokens > spec.lengths.sequence_len)
        state[hit] = FILTERED["over_sequence_len"]
        live &= ~hit
    if near_duplicates is not None:
        near = near_duplicates(live) & live
        state[near] = DUP_NEAR
        live &= ~near

    # Each category's distinct rows in seeded order (keys are distinct hashes, so no ties).
    index_type = np.uint32 if n < 2**32 else np.int64
    live_idx = np.flatnonzero(live).astype(index_type)
    del live
    order = live_idx[np.argsort(key[live_idx], kind="stable")]
    del live_idx
    order = order[np.argsort(cat[order], kind="stable")]
    cats_sorted = cat[order]
    ordered: dict[str, np.ndarray] = {}
    for code, name in enumerate(categories):
        lo, hi = np.searchsorted(cats_sorted, [code, code + 1])
        if hi > lo:
            ordered[name] = order[lo:hi]
    available = {}
    for name, rows in sorted(ordered.items()):
        held = int(np.floor(len(rows) * spec.eval_fraction + 0.5))
        available[name] = len(rows) - held
    mix = resolve_targets(available, spec.mix, general_advice)
    quotas = limit_quotas(mix.targets, limit)
    warnings = list(mix.warnings)
    splits: dict[str, CategorySplit] = {}
    for name, rows in sorted(ordered.items()):
        sp = split_category(rows, spec.eval_fraction, mix.targets[name], quotas[name], spec.sample_fraction)
        splits[name] = sp
        state[sp.eval_rows] = EVAL
        state[sp.train_rows] = TRAIN
        state[sp.mix_filtered] = FILTERED["mix"]
        state[sp.limit_filtered] = FILTERED["limit"]
        rule = spec.mix.categories.get(name)
        if rule is not None and rule.min_unique is not None and len(rows) < rule.min_unique:
            warnings.append(f"category {name!r} has {len(rows):,} distinct rows after dedup and QC, fewer than "
                            f"its min_unique {rule.min_unique:,}")
    for name, rule in spec.mix.categories.items():
        if rule.min_unique and name not in ordered:
            warnings.append(f"category {name!r} has no rows, fewer than its min_unique {rule.min_unique:,}")
    if (state == UNSET).any():
        raise AssertionError("a row was left without a state")  # a bug, never a user error
    return Selection(state=state, splits=splits, mix=mix, quotas=quotas, warnings=warnings)
