"""Tests of saliency_trust.metrics.utility (localization utility: PR-AUC and AP)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import auc, average_precision_score, precision_recall_curve

from saliency_trust.metrics.utility import (
    UTILITY_COLUMNS,
    average_precision,
    pr_auc,
    utility_table,
)
from saliency_trust.saliency.baselines import mean_mask


def _reference_curve(score: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Independent numpy PR curve: (trapezoidal area, step-wise AP).

    One operating point per distinct score (predict positive where score >= t), in
    decreasing threshold order, starting from (recall 0, precision 1).
    """
    s = score.ravel().astype(float)
    y = mask.ravel() > 0
    n_pos = y.sum()
    recall, precision = [0.0], [1.0]
    for t in np.unique(s)[::-1]:
        pred = s >= t
        tp = np.sum(pred & y)
        recall.append(tp / n_pos)
        precision.append(tp / pred.sum())
    r, p = np.array(recall), np.array(precision)
    area = float(np.sum(np.diff(r) * (p[1:] + p[:-1]) / 2))
    ap = float(np.sum(np.diff(r) * p[1:]))
    return area, ap


# ---------------------------------------------------------------- hand-computed cases


def test_hand_computed_1x4_map():
    score = np.array([[0.9, 0.8, 0.7, 0.1]])
    mask = np.array([[1, 0, 1, 0]])
    # Thresholds (predict score >= t), 2 positive pixels:
    #   t=0.9: TP=1 FP=0 -> P=1,   R=1/2
    #   t=0.8: TP=1 FP=1 -> P=1/2, R=1/2
    #   t=0.7: TP=2 FP=1 -> P=2/3, R=1
    #   t=0.1: TP=2 FP=2 -> P=1/2, R=1
    # Curve from (R=0, P=1): (0,1) (1/2,1) (1/2,1/2) (1,2/3) (1,1/2)
    # Trapezoids: 1/2*(1+1)/2 = 1/2; 0; 1/2*(1/2+2/3)/2 = 7/24; 0  -> area = 19/24
    # AP = sum dR * P = 1/2*1 + 0*1/2 + 1/2*2/3 + 0 = 5/6
    assert pr_auc(score, mask) == pytest.approx(19 / 24, abs=1e-12)
    assert average_precision(score, mask) == pytest.approx(5 / 6, abs=1e-12)


def test_hand_computed_2x2_map_with_ties():
    score = np.array([[0.5, 0.5], [0.2, 0.8]])
    mask = np.array([[1, 0], [0, 1]], dtype=np.uint8)
    # t=0.8: TP=1 FP=0 -> P=1,   R=1/2
    # t=0.5: TP=2 FP=1 -> P=2/3, R=1   (the tie enters as one operating point)
    # t=0.2: TP=2 FP=2 -> P=1/2, R=1
    # Curve: (0,1) (1/2,1) (1,2/3) (1,1/2)
    # Trapezoid: 1/2*1 + 1/2*(1+2/3)/2 = 1/2 + 5/12 = 11/12 (linear interpolation)
    # AP (step-wise): 1/2*1 + 1/2*2/3 = 5/6, lower than the trapezoid here
    assert pr_auc(score, mask) == pytest.approx(11 / 12, abs=1e-12)
    assert average_precision(score, mask) == pytest.approx(5 / 6, abs=1e-12)


def test_worst_ranking_hand_computed():
    # the one positive pixel has the lowest score among 4 pixels
    score = np.array([[0.4, 0.3], [0.2, 0.1]])
    mask = np.array([[0, 0], [0, 1]])
    # t=0.4,0.3,0.2: TP=0 -> P=0, R=0; t=0.1: TP=1, FP=3 -> P=1/4, R=1
    # Curve: (0,1) (0,0) (0,0) (0,0) (1,1/4); area = 1*(0+1/4)/2 = 1/8; AP = 1 * 1/4 = 1/4
    assert pr_auc(score, mask) == pytest.approx(1 / 8, abs=1e-12)
    assert average_precision(score, mask) == pytest.approx(1 / 4, abs=1e-12)


def test_constant_map_gives_prevalence_ap():
    mask = np.zeros((4, 5), dtype=np.uint8)
    mask[1:3, 1:3] = 1  # 4 of 20 pixels
    score = np.full(mask.shape, 0.3)
    # single operating point P = 4/20 at R = 1; AP = 1/5; trapezoid (0,1)-(1,1/5) = 3/5
    assert average_precision(score, mask) == pytest.approx(0.2)
    assert pr_auc(score, mask) == pytest.approx(0.6)


# ---------------------------------------------------------------- scikit-learn / independent reference


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_and_numpy_reference_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    shape = (16, 20)
    mask = (rng.random(shape) < 0.2).astype(np.uint8)
    mask[0, 0] = 1
    # correlated score, rounded so that ties occur
    score = np.round(mask * 0.6 + rng.random(shape), 1 if seed % 2 else 6).astype(np.float32)
    truth = mask.ravel() > 0
    p, r, _ = precision_recall_curve(truth, score.ravel().astype(np.float64))
    assert pr_auc(score, mask) == pytest.approx(auc(r, p), abs=1e-12)
    assert average_precision(score, mask) == pytest.approx(
        average_precision_score(truth, score.ravel().astype(np.float64)), abs=1e-12
    )
    ref_area, ref_ap = _reference_curve(score, mask)
    assert pr_auc(score, mask) == pytest.approx(ref_area, abs=1e-9)
    assert average_precision(score, mask) == pytest.approx(ref_ap, abs=1e-9)


def test_perfect_map_scores_one():
    rng = np.random.default_rng(1)
    mask = np.zeros((12, 12), dtype=np.uint8)
    mask[3:7, 4:9] = 1
    assert pr_auc(mask.astype(float), mask) == pytest.approx(1.0)
    assert average_precision(mask.astype(float), mask) == pytest.approx(1.0)
    # any map with every lesion pixel above every background pixel is perfect
    score = np.where(mask > 0, 2 + rng.random(mask.shape), rng.random(mask.shape))
    assert pr_auc(score, mask) == pytest.approx(1.0)
    assert average_precision(score, mask) == pytest.approx(1.0)


def test_informative_map_beats_random_map():
    rng = np.random.default_rng(2)
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[10:18, 8:20] = 1
    good = mask + 0.8 * rng.random(mask.shape)
    rand = rng.random(mask.shape)
    prevalence = mask.mean()
    assert average_precision(good, mask) > 0.9
    assert abs(average_precision(rand, mask) - prevalence) < 0.1


@pytest.mark.parametrize(
    "transform",
    [lambda x: np.exp(3 * x), lambda x: x**3 + 10, lambda x: 5 * x - 2, lambda x: np.arctan(x)],
    ids=["exp", "cube", "affine", "arctan"],
)
def test_invariant_to_strictly_increasing_transforms(transform):
    rng = np.random.default_rng(7)
    mask = (rng.random((20, 20)) < 0.15).astype(np.uint8)
    score = mask * 0.5 + rng.standard_normal((20, 20))
    assert pr_auc(transform(score), mask) == pytest.approx(pr_auc(score, mask), abs=1e-12)
    assert average_precision(transform(score), mask) == pytest.approx(average_precision(score, mask), abs=1e-12)


def test_reversing_the_map_changes_the_score():
    """Guard for the invariance test: a decreasing transform is *not* neutral."""
    rng = np.random.default_rng(7)
    mask = (rng.random((20, 20)) < 0.15).astype(np.uint8)
    score = mask * 0.5 + rng.standard_normal((20, 20))
    assert average_precision(-score, mask) < average_precision(score, mask) - 0.1


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("fn", [pr_auc, average_precision])
def test_empty_mask_error_names_image(fn):
    with pytest.raises(ValueError, match=r"image 'case42'.*empty"):
        fn(np.ones((4, 4)), np.zeros((4, 4)), "case42")


@pytest.mark.parametrize("fn", [pr_auc, average_precision])
def test_shape_mismatch_error_names_image(fn):
    with pytest.raises(ValueError, match=r"image 'img7'.*shape"):
        fn(np.ones((4, 4)), np.ones((4, 5)), "img7")
    with pytest.raises(ValueError, match="img7"):
        fn(np.ones(16), np.ones((4, 4)), "img7")  # same size, different shape


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn", [pr_auc, average_precision])
def test_nonfinite_map_error_names_image(fn, bad):
    score = np.ones((3, 3))
    score[1, 2] = bad
    mask = np.eye(3)
    with pytest.raises(ValueError, match=r"image 'x_1'.*(NaN|inf)"):
        fn(score, mask, "x_1")


# ---------------------------------------------------------------- utility_table


def _toy_set(n: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    masks, maps = {}, {}
    for k in range(n):
        m = np.zeros((10, 10), dtype=np.uint8)
        y, x = rng.integers(0, 6, size=2)
        m[y : y + 3, x : x + 4] = 1
        masks[f"id{k}"] = m
        maps[f"id{k}"] = m * 0.3 + rng.random((10, 10))
    return maps, masks


def test_utility_table_long_format():
    maps, masks = _toy_set(4)
    maps["extra"] = np.ones((10, 10))  # maps of unscored images are ignored
    table = utility_table(maps, masks, model="resnet", method="gradcam", metrics=("pr_auc", "ap"))
    assert list(table.columns) == UTILITY_COLUMNS == ["image_id", "model", "method", "weights", "metric", "value"]
    assert len(table) == 4 * 2
    assert set(table["image_id"]) == set(masks)
    assert (table["model"] == "resnet").all() and (table["method"] == "gradcam").all()
    assert all(sorted(g) == ["ap", "pr_auc"] for _, g in table.groupby("image_id")["metric"])
    assert not table.duplicated(["image_id", "metric"]).any()
    for r in table.itertuples():
        truth = masks[r.image_id].ravel() > 0
        s = maps[r.image_id].ravel()
        if r.metric == "ap":
            expected = average_precision_score(truth, s)
        else:
            p, rec, _ = precision_recall_curve(truth, s)
            expected = auc(rec, p)
        assert r.value == pytest.approx(expected, abs=1e-12)


def test_utility_table_single_metric_and_empty():
    maps, masks = _toy_set(3)
    table = utility_table(maps, masks, "m", "ig", metrics=("ap",))
    assert len(table) == 3 and (table["metric"] == "ap").all()
    empty = utility_table(maps, {}, "m", "ig")
    assert list(empty.columns) == UTILITY_COLUMNS and len(empty) == 0


def test_utility_table_missing_map_keyerror_names_image():
    maps, masks = _toy_set(3)
    del maps["id1"]
    with pytest.raises(KeyError, match="id1"):
        utility_table(maps, masks, "m", "gradcam")


def test_utility_table_propagates_errors_with_image_id():
    maps, masks = _toy_set(3)
    masks["id2"] = np.zeros((10, 10), dtype=np.uint8)
    with pytest.raises(ValueError, match="id2"):
        utility_table(maps, masks, "m", "gradcam")


# ---------------------------------------------------------------- mean_mask


def test_mean_mask_hand_computed():
    masks = np.array(
        [
            [[1, 0], [0, 0]],
            [[1, 1], [0, 0]],
            [[1, 0], [1, 0]],
            [[0, 0], [0, 0]],
        ],
        dtype=np.uint8,
    )
    expected = np.array([[3 / 4, 1 / 4], [1 / 4, 0]], dtype=np.float32)
    out = mean_mask(masks)
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-7)


def test_mean_mask_does_not_overflow_uint8():
    masks = np.full((300, 3, 3), 1, dtype=np.uint8)  # sum 300 > 255
    np.testing.assert_allclose(mean_mask(masks), np.ones((3, 3)))


def test_avg_baseline_scores_between_chance_and_perfect():
    """The AVG map (mean mask) localizes better than chance when lesions share a location."""
    rng = np.random.default_rng(3)
    stack = np.zeros((50, 16, 16), dtype=np.uint8)
    for k in range(50):
        y, x = 4 + rng.integers(0, 3, size=2)
        stack[k, y : y + 5, x : x + 5] = 1
    avg = mean_mask(stack[:40])
    values = [average_precision(avg, stack[k]) for k in range(40, 50)]
    prevalence = stack[40:].mean()
    assert prevalence < np.mean(values) < 1.0
