"""Duplicate detection (pure, numpy).

Exact: two rows are duplicates when their normalized conversations are byte-identical (compared by
a 128-bit content hash); the first in read order (sources in spec order, rows in file order) stays.

Near (optional, `dedup.near: true`): MinHash over hashed character shingles of the lower-cased,
whitespace-collapsed text of all turns, with LSH banding to find candidates; a candidate pair is
a near-duplicate when the share of equal MinHash values (an estimate of their Jaccard similarity)
reaches `near_threshold`. Near-duplicates form groups (connected pairs); the first row of each
group in read order stays. Only one in `shingle_sample` shingles (chosen by hash value, so the same
text always gives the same choice) enters the MinHash: its cost is bounded on long rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


# ---- seeded 64-bit mixing (the same numbers in Python and numpy) -----------------------------

def mix64(z: int) -> int:
    """splitmix64 finalizer of a 64-bit integer (Python ints)."""
    z = (z + _GOLDEN) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def mix64_array(z: np.ndarray) -> np.ndarray:
    """mix64 of every element of a uint64 array (wrapping arithmetic, equal to mix64)."""
    with np.errstate(over="ignore"):
        z = z.astype(np.uint64) + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def repeat_keys(keys: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    """Keys of the k-th repeat of rows (k >= 1): a fresh, deterministic position for each copy."""
    with np.errstate(over="ignore"):
        return mix64_array(keys ^ (repeats.astype(np.uint64) * np.uint64(_GOLDEN)))


# ---- exact -----------------------------------------------------------------------------------

def exact_duplicates(h1: np.ndarray, h2: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Mask of the rows that repeat an earlier eligible row with the same 128-bit hash (h1, h2).
    Sorts the first 64 bits only (stable, so equal values stay in read order) and compares the
    second 64 bits within the rare groups of equal first halves: memory ~17 bytes per row."""
    idx = np.flatnonzero(eligible).astype(np.uint32 if len(h1) < 2**32 else np.int64)
    dup = np.zeros(len(h1), dtype=bool)
    if len(idx) < 2:
        return dup
    order = idx[np.argsort(h1[idx], kind="stable")]
    sorted_h1 = h1[order]
    same = np.flatnonzero(sorted_h1[1:] == sorted_h1[:-1])  # position i+1 equals position i
    del sorted_h1
    if not len(same):
        return dup
    # Rows in groups of equal h1 (few): sort them by (h1, h2, row) and mark the repeats.
    in_group = np.zeros(len(order), dtype=bool)
    in_group[same] = True
    in_group[same + 1] = True
    cand = order[in_group]
    cand = cand[np.lexsort((cand, h2[cand], h1[cand]))]
    a, b = h1[cand], h2[cand]
    repeat = (a[1:] == a[:-1]) & (b[1:] == b[:-1])
    dup[cand[1:][repeat]] = True
    return dup


# ---- near: MinHash + LSH ---------------------------------------------------------------------

class MinHasher:
    """MinHash signatures of texts: `num_perm` uint32 values per text."""

    def __init__(self, num_perm: int, shingle_bytes: int = 8, shingle_sample: int = 4, seed: int = 1):
        if shingle_bytes != 8:
            raise ValueError("shingles are 8-byte windows")
        if shingle_sample & (shingle_sample - 1):
            raise ValueError("shingle_sample must be a power of two")
        rng = np.random.Generator(np.random.PCG64(seed))
        self.num_perm = num_perm
        self.a = rng.integers(1, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
        self.sample_mask = np.uint64(shingle_sample - 1)

    def shingles(self, text: str) -> np.ndarray:
        data = " ".join(text.lower().split()).encode("utf-8")
        if len(data) < 8:
            data = data.ljust(8, b"\0")
        n = len(data) - 7
        parts = []
        for o in range(8):
            count = (n - o + 7) // 8
            if count > 0:
                parts.append(np.frombuffer(data, dtype="<u8", count=count, offset=o))
        windows = np.concatenate(parts)
        hashed = mix64_array(windows)
        kept = hashed[(hashed & self.sample_mask) == 0]
        return kept if len(kept) else hashed[[int(np.argmin(hashed))]]

    def signature(self, text: str) -> np.ndarray:
        s = self.shingles(text)
        with np.errstate(over="ignore"):
            values = (self.a[:, None] * s[None, :] + self.b[:, None]) >> np.uint64(32)
        return values.min(axis=1).astype(np.uint32)


def lsh_bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows) with bands*rows == num_perm minimizing false positives + false negatives
    around `threshold` (probability a pair of similarity s becomes a candidate: 1-(1-s^r)^b)."""
    s = np.linspace(0, 1, 1001)
    best, best_err = (1, num_perm), float("inf")
    for rows in range(1, num_perm + 1):
        if num_perm % rows:
            continue
        bands = num_perm // rows
        p = 1 - (1 - s**rows) ** bands
        fp = np.trapezoid(np.where(s < threshold, p, 0), s)
        fn = np.trapezoid(np.where(s >= threshold, 1 - p, 0), s)
        if fp + fn < best_err:
            best, best_err = (bands, rows), fp + fn
    return best


def band_keys(signatures: np.ndarray, bands: int) -> np.ndarray:
    """(n, bands) uint64: one hash per band of each signature row."""
    n, num_perm = signatures.shape
    rows = num_perm // bands
    sig = signatures[:, : bands * rows].astype(np.uint64).reshape(n, bands, rows)
    acc = np.zeros((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(rows):
            acc = mix64_array(acc ^ sig[:, :, k])
    return acc


def near_duplicates(
    band_columns: Sequence[Callable[[], np.ndarray]],
    eligible: np.ndarray,
    similarity: Callable[[np.ndarray, np.ndarray], np.ndarray],
    threshold: float,
) -> np.ndarray:
    """Mask of rows that are near-duplicates of an earlier eligible row.

    `band_columns[i]()` returns band i's key of every row (uint64, length n); `similarity(a, b)`
    returns the estimated Jaccard similarity of row pairs. Candidates are rows sharing a band key;
    each is compared with the first row (in read order) of its group; pairs at or above the
    threshold are joined, and every group keeps its first row."""
    n = len(eligible)
    idx = np.flatnonzero(eligible)
    parent = np.arange(n, dtype=np.int64)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for load in band_columns:
        keys = load()[idx]
        order = np.lexsort((idx, keys))
        sk = keys[order]
        starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        sizes = np.diff(np.r_[starts, len(sk)])
        multi = sizes > 1
        if not multi.any():
            continue
        group_of = np.repeat(np.arange(len(starts)), sizes)
        first = idx[order[starts[group_of]]]
        member = idx[order]
        pick = multi[group_of] & (member != first)
        a, b = first[pick], member[pick]
        for lo in range(0, len(a), 65536):
            sa, sb = a[lo:lo + 65536], b[lo:lo + 65536]
            close = similarity(sa, sb) >= threshold
            for x, y in zip(sa[close].tolist(), sb[close].tolist()):
                rx, ry = find(x), find(y)
                if rx != ry:
                    parent[max(rx, ry)] = min(rx, ry)
    # A union always hangs the later root under the earlier one: every row that is not a root has
    # an earlier row in its group.
    dup = np.zeros(n, dtype=bool)
    dup[idx] = parent[idx] != idx
    return dup
