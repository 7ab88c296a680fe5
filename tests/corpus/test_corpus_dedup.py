import numpy as np

from llamaforge.corpus.dedup import (
    MinHasher, band_keys, exact_duplicates, lsh_bands, mix64, mix64_array, near_duplicates, repeat_keys,
)


def test_mix64_python_and_numpy_agree():
    values = [0, 1, 2**63, 2**64 - 1, 123456789]
    assert mix64_array(np.array(values, dtype=np.uint64)).tolist() == [mix64(v) for v in values]


def test_repeat_keys_differ_per_repeat():
    keys = np.arange(1, 1001, dtype=np.uint64)
    one, two = repeat_keys(keys, np.ones(1000, np.uint16)), repeat_keys(keys, np.full(1000, 2, np.uint16))
    assert len(set(one.tolist()) | set(two.tolist()) | set(keys.tolist())) == 3000


def test_exact_duplicates_keep_the_first():
    h1 = np.array([5, 7, 5, 5, 9, 7], dtype=np.uint64)
    h2 = np.array([1, 2, 1, 3, 4, 2], dtype=np.uint64)
    eligible = np.array([True, True, True, True, True, False])
    assert exact_duplicates(h1, h2, eligible).tolist() == [False, False, True, False, False, False]


def _texts():
    base = ("The moonlight burst into the room as if it had been waiting at the window for a long time. "
            "He opened the casement; the night was fresh, bright and quite still.")
    return [base, base.replace("quite still", "very still"), base.upper(),
            "Write a Python function that adds two numbers and returns the sum of them both."]


def test_minhash_similar_texts_score_high_different_low():
    mh = MinHasher(128, shingle_sample=1)
    s = [mh.signature(t) for t in _texts()]
    sim = lambda a, b: float((s[a] == s[b]).mean())  # noqa: E731
    assert sim(0, 2) == 1.0  # case and whitespace are normalized
    assert sim(0, 1) > 0.7
    assert sim(0, 3) < 0.1


def test_lsh_bands_cover_num_perm():
    bands, rows = lsh_bands(64, 0.85)
    assert bands * rows == 64 and rows > 1


def test_near_duplicates_keep_the_first_of_each_group():
    mh = MinHasher(64, shingle_sample=1)
    sigs = np.stack([mh.signature(t) for t in _texts()])
    bands, _ = lsh_bands(64, 0.7)
    keys = band_keys(sigs, bands)
    columns = [lambda i=i: keys[:, i] for i in range(bands)]
    sim = lambda a, b: (sigs[a] == sigs[b]).mean(axis=1)  # noqa: E731
    dup = near_duplicates(columns, np.ones(4, bool), sim, 0.7)
    assert dup.tolist() == [False, True, True, False]
    # an ineligible first row does not count: the next one stays
    dup = near_duplicates(columns, np.array([False, True, True, True]), sim, 0.7)
    assert dup.tolist() == [False, False, True, False]
