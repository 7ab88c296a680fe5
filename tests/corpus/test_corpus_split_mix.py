import numpy as np
import pytest

from llamaforge.corpus.mix import resolve_targets
from llamaforge.corpus.spec import CategoryMix, MixSpec, PhaseSpec
from llamaforge.corpus.split import limit_quotas, phase_of_categories, split_category, systematic_mask
from llamaforge.errors import UserError


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.25, 0.5, 0.37])
def test_systematic_mask_every_prefix_holds_round_share(fraction):
    mask = systematic_mask(2000, fraction)
    counts = np.cumsum(mask)
    for m in range(1, 2001):
        assert abs(counts[m - 1] - m * fraction) <= 0.5 + 1e-9


def test_limit_quotas_are_nested_and_keep_shares():
    targets = {"general": 150, "identity": 400, "code": 450}
    previous = {c: 0 for c in targets}
    for limit in range(0, 1001, 37):
        q = limit_quotas(targets, limit)
        assert sum(q.values()) == min(limit, 1000)
        for c in targets:
            assert q[c] >= previous[c]  # a larger limit extends a smaller one
            assert abs(q[c] - limit * targets[c] / 1000) <= 1.0
        previous = q
    assert limit_quotas(targets, None) == targets


def test_split_category_partitions_and_nests():
    rows = np.arange(100, 200)
    full = split_category(rows, 0.1, target=60, quota=60, sample_fraction=0.1)
    # every row lands in exactly one of eval, train, mix-filtered, limit-filtered
    parts = [full.eval_rows, np.unique(full.train_rows), full.mix_filtered, full.limit_filtered]
    assert sorted(np.concatenate(parts).tolist()) == rows.tolist()
    assert len(full.train_rows) == 60 and len(full.limit_filtered) == 0
    assert full.sample.sum() == 6
    small = split_category(rows, 0.1, target=60, quota=20, sample_fraction=0.1)
    assert set(small.train_rows) <= set(full.train_rows)
    assert set(small.eval_rows) <= set(full.eval_rows)
    assert set(small.train_rows[small.sample]) <= set(full.train_rows[full.sample])


def test_split_category_upsamples_every_row_before_repeating():
    rows = np.arange(10)
    sp = split_category(rows, 0.0, target=25, quota=25, sample_fraction=0.2)
    assert len(sp.train_rows) == 25
    counts = np.bincount(sp.train_rows, minlength=10)
    assert counts.min() == 2 and counts.max() == 3
    assert sorted(sp.train_repeat.tolist()) == [0] * 10 + [1] * 10 + [2] * 5
    assert sp.sample.sum() == 5


def _mix(**kw):
    cats = {k: CategoryMix(**v) for k, v in kw.pop("categories", {}).items()}
    return MixSpec(categories=cats, **kw)


def test_targets_count_share_weight():
    res = resolve_targets({"general": 1000, "identity": 50, "code": 300, "esoteric": 100},
                          _mix(categories={"identity": {"count": 120}, "code": {"share": 0.2}, "esoteric": {"weight": 0.5}}))
    t = res.targets
    assert t["identity"] == 120 and t["esoteric"] == 50 and t["general"] == 1000
    assert t["code"] == pytest.approx(0.2 * sum(t.values()), abs=1)


def test_general_share_is_first_class_and_warns_outside_advice():
    res = resolve_targets({"general": 10_000, "identity": 800, "code": 1200},
                          _mix(general_share=0.15), general_advice=(0.10, 0.20))
    share = res.targets["general"] / res.train_total
    assert share == pytest.approx(0.15, abs=0.001) and not res.warnings
    res = resolve_targets({"general": 10_000, "identity": 800}, _mix(), general_advice=(0.10, 0.20))
    assert any("general instruction data" in w for w in res.warnings)


def test_all_shares_use_the_largest_size_without_repeats():
    res = resolve_targets({"a": 100, "b": 1000}, _mix(categories={"a": {"share": 0.5}, "b": {"share": 0.5}}))
    assert res.targets == {"a": 100, "b": 100}


def test_total_fixes_train_size():
    res = resolve_targets({"a": 100, "b": 300, "c": 50},
                          _mix(total=1000, categories={"c": {"count": 100}, "a": {"share": 0.3}}))
    assert res.targets["c"] == 100 and res.targets["a"] == 300 and res.targets["b"] == 600


def test_shares_of_one_with_other_categories_is_an_error():
    with pytest.raises(UserError, match="shares add up"):
        resolve_targets({"a": 10, "g": 10, "b": 10},
                        _mix(categories={"a": {"share": 0.5}}, general_share=0.5, general_categories=("g",)))


def test_missing_category_of_a_target_warns():
    res = resolve_targets({"a": 10}, _mix(categories={"identity": {"count": 5}}))
    assert any("identity" in w for w in res.warnings)


def test_phases_need_every_category():
    phases = (PhaseSpec("one", ("a",)), PhaseSpec("two", ("b",)))
    assert phase_of_categories(["a", "b"], phases) == {"a": 0, "b": 1}
    with pytest.raises(UserError, match="in no phase"):
        phase_of_categories(["a", "b", "c"], phases)
    rest = (PhaseSpec("one", ("a",)), PhaseSpec("two", ("*",)))
    assert phase_of_categories(["a", "b", "c"], rest) == {"a": 0, "b": 1, "c": 1}
