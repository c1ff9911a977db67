"""Tests of saliency_trust.data.splits (deterministic, stable train/val/test splits)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from saliency_trust.data.splits import SPLITS, assign_splits, check_splits, split_uniform

N_BIG = 20000


def _ids(n: int, start: int = 0) -> list[str]:
    return [f"img{i:06d}" for i in range(start, start + n)]


@pytest.fixture(scope="module")
def big():
    ids = _ids(N_BIG)
    return ids, assign_splits(ids, seed=0)


def _within_binomial(count: int, n: int, p: float, z: float = 4.5) -> bool:
    return abs(count / n - p) <= z * np.sqrt(p * (1 - p) / n)


# ---------------------------------------------------------------- stability


def test_adding_images_keeps_existing_assignments():
    first = _ids(1000)
    before = assign_splits(first, seed=3)
    # 1200 ids that include the first 1000, in a different order, with the new ones interleaved
    grown = first + _ids(200, start=1000)
    order = np.random.default_rng(0).permutation(len(grown))
    shuffled = [grown[i] for i in order]
    after = dict(zip(shuffled, assign_splits(shuffled, seed=3)))
    assert [after[i] for i in first] == before.tolist()


def test_assignment_depends_only_on_id_not_on_position():
    ids = _ids(300)
    a = dict(zip(ids, assign_splits(ids, seed=1)))
    single = {i: assign_splits([i], seed=1)[0] for i in ids[:50]}
    assert all(single[i] == a[i] for i in single)


def test_returns_one_known_split_per_id(big):
    ids, split = big
    assert len(split) == len(ids)
    assert set(np.unique(split)) == set(SPLITS)


def test_accepts_pandas_index_and_integer_ids():
    ids = pd.Index(["a", "b", "c", "d"])
    np.testing.assert_array_equal(assign_splits(ids, seed=2), assign_splits(list(ids), seed=2))
    # integer ids are hashed as their string form
    np.testing.assert_array_equal(assign_splits([1, 2, 3], seed=2), assign_splits(["1", "2", "3"], seed=2))


# ---------------------------------------------------------------- proportions


def test_default_proportions_are_10_9_81_percent(big):
    """Default: 10 % test, then 10 % of the remaining 90 % (= 9 %) val, 81 % train."""
    _, split = big
    for name, p in (("test", 0.10), ("val", 0.09), ("train", 0.81)):
        assert _within_binomial(int((split == name).sum()), N_BIG, p), name


def test_custom_fractions():
    """test 0.2, then 25 % of the remaining 80 % -> val 0.2, train 0.6."""
    ids = _ids(8000)
    split = assign_splits(ids, seed=5, test_fraction=0.2, val_fraction=0.25)
    for name, p in (("test", 0.2), ("val", 0.2), ("train", 0.6)):
        assert _within_binomial(int((split == name).sum()), len(ids), p), name


def test_split_uniform_is_uniform_on_unit_interval():
    u = np.array([split_uniform(i, 0) for i in _ids(5000)])
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 0.001


def test_proportions_within_each_label_stratum(big):
    """The hash ignores labels, so each stratum gets the same expected proportions."""
    ids, split = big
    label = np.random.default_rng(123).random(len(ids)) < 0.3  # 30 % positives
    for stratum in (label, ~label):
        n = int(stratum.sum())
        for name, p in (("test", 0.10), ("val", 0.09), ("train", 0.81)):
            assert _within_binomial(int((split[stratum] == name).sum()), n, p), name
    # and the two strata agree with each other (chi-square test of independence)
    table = np.array([[np.sum(split[s] == name) for name in SPLITS] for s in (label, ~label)])
    assert stats.chi2_contingency(table).pvalue > 0.001


def test_seed_changes_the_assignment(big):
    ids, split0 = big
    ids = ids[:5000]
    split0 = split0[:5000]
    split1 = assign_splits(ids, seed=1)
    # independent draws agree with probability 0.1^2 + 0.09^2 + 0.81^2 = 0.6742
    agree = float(np.mean(split0 == split1))
    assert _within_binomial(int(agree * len(ids)), len(ids), 0.6742)
    np.testing.assert_array_equal(split0, assign_splits(ids, seed=0))  # same seed -> same


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "test_fraction, val_fraction",
    [(0.0, 0.1), (1.0, 0.1), (-0.1, 0.1), (1.5, 0.1), (0.1, 0.0), (0.1, 1.0), (0.1, -0.5), (0.1, 2.0)],
)
def test_invalid_fractions_raise(test_fraction, val_fraction):
    with pytest.raises(ValueError, match="fraction"):
        assign_splits(_ids(10), seed=0, test_fraction=test_fraction, val_fraction=val_fraction)


def _manifest(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    """rows of (split, abnormal, effusion)."""
    return pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(len(rows))],
            "split": [r[0] for r in rows],
            "abnormal": [r[1] for r in rows],
            "effusion": [r[2] for r in rows],
        }
    )


GOOD = [(s, a, e) for s in SPLITS for a, e in ((0, 0), (1, 1), (0, 1), (1, 0))]


def test_check_splits_accepts_balanced_manifest():
    check_splits(_manifest(GOOD), ["abnormal", "effusion"])  # no exception


def test_check_splits_names_split_and_label_without_positives():
    rows = [r for r in GOOD if not (r[0] == "val" and r[2] == 1)]
    with pytest.raises(ValueError, match=r"split 'val' has no positive images for label 'effusion'"):
        check_splits(_manifest(rows), ["abnormal", "effusion"])
    # the other label alone is fine
    check_splits(_manifest(rows), ["abnormal"])


def test_check_splits_names_split_and_label_without_negatives():
    rows = [r for r in GOOD if not (r[0] == "test" and r[1] == 0)]
    with pytest.raises(ValueError, match=r"split 'test' has no negative images for label 'abnormal'"):
        check_splits(_manifest(rows), ["abnormal", "effusion"])


def test_check_splits_rejects_empty_split():
    rows = [r for r in GOOD if r[0] != "train"]
    with pytest.raises(ValueError, match=r"split 'train' has no images"):
        check_splits(_manifest(rows), ["abnormal"])


def test_check_splits_on_real_assignment():
    """A large random manifest passes; a tiny one where val has only negatives fails."""
    ids = _ids(2000)
    rng = np.random.default_rng(4)
    man = pd.DataFrame(
        {
            "image_id": ids,
            "split": assign_splits(ids, 0),
            "abnormal": rng.integers(0, 2, 2000),
            "effusion": rng.integers(0, 2, 2000),
        }
    )
    check_splits(man, ["abnormal", "effusion"])
    man.loc[man["split"] == "val", "abnormal"] = 0
    with pytest.raises(ValueError, match="'val'.*positive.*'abnormal'"):
        check_splits(man, ["abnormal", "effusion"])
