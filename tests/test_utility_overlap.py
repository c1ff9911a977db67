"""Tests of the overlap utility metrics of saliency_trust.metrics.utility (docs/criteria.md).

``iou`` / ``dice`` (Otsu foreground vs ground truth), ``iou_box`` / ``dice_box``
(MURA box mode: each 8-connected component of the foreground replaced by its
filled bounding box) and ``topk`` (fraction of the k most salient pixels inside
the ground truth), against hand-computed values and scikit-image's Otsu
threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from saliency_trust.metrics.utility import (
    METRIC_FUNCTIONS,
    UTILITY_COLUMNS,
    UTILITY_METRICS,
    box_dice_gt,
    box_iou_gt,
    boxed,
    otsu_dice_gt,
    otsu_iou_gt,
    top_k_overlap,
    utility_table,
)

OVERLAP = ["iou", "dice", "iou_box", "dice_box", "topk"]


def _two_blob_map() -> np.ndarray:
    """8 x 8 map, 1 on two separate blobs, 0 elsewhere.

    L-shape: (1,1) (2,1) (3,1) (3,2) (3,3)  -> bounding box rows 1-3, cols 1-3 (9 pixels)
    diagonal: (5,5) (6,6) (7,7)             -> one 8-connected component, box rows 5-7, cols 5-7 (9 pixels)
    """
    m = np.zeros((8, 8))
    for r, c in [(1, 1), (2, 1), (3, 1), (3, 2), (3, 3), (5, 5), (6, 6), (7, 7)]:
        m[r, c] = 1.0
    return m


def _gt_top_left() -> np.ndarray:
    """Ground truth: rows 0-3, cols 0-3 (16 pixels)."""
    g = np.zeros((8, 8), np.uint8)
    g[:4, :4] = 1
    return g


# ---------------------------------------------------------------- box mode


def test_boxed_fills_each_component_bounding_box():
    mask = _two_blob_map() > 0
    expected = np.zeros((8, 8), bool)
    expected[1:4, 1:4] = True
    expected[5:8, 5:8] = True
    np.testing.assert_array_equal(boxed(mask), expected)


def test_boxed_uses_8_connectivity():
    # a diagonal alone is one component under 8-connectivity (three 1-pixel boxes under 4-connectivity)
    diag = np.eye(4, dtype=bool)
    np.testing.assert_array_equal(boxed(diag), np.ones((4, 4), bool))
    # two blobs touching only at a corner merge into one box
    m = np.zeros((6, 6), bool)
    m[0:2, 0:2] = True
    m[2:4, 2:5] = True
    expected = np.zeros((6, 6), bool)
    expected[0:4, 0:5] = True
    np.testing.assert_array_equal(boxed(m), expected)
    # one empty pixel of separation keeps them apart
    m2 = np.zeros((6, 6), bool)
    m2[0, 0] = True
    m2[2, 2] = True
    np.testing.assert_array_equal(boxed(m2), m2)


def test_boxed_empty_and_full_masks():
    assert not boxed(np.zeros((5, 7), bool)).any()
    assert boxed(np.ones((5, 7), bool)).all()


def test_boxed_overlapping_boxes_union():
    # an L and a single pixel inside the L's box but not 8-connected to it: the boxes overlap
    m = np.zeros((7, 7), bool)
    m[0, 0:6] = True
    m[0:6, 0] = True
    m[3, 3] = True
    expected = np.zeros((7, 7), bool)
    expected[0:6, 0:6] = True
    np.testing.assert_array_equal(boxed(m), expected)


def test_box_iou_and_dice_hand_computed():
    score, gt = _two_blob_map(), _gt_top_left()
    # boxes: 3x3 at rows/cols 1-3 (inside the ground truth) and 3x3 at rows/cols 5-7 (outside)
    # intersection 9, union 16 + 9 = 25 -> IoU 9/25; Dice 2*9 / (16 + 18) = 9/17
    assert box_iou_gt(score, gt, "img") == pytest.approx(9 / 25, abs=1e-15)
    assert box_dice_gt(score, gt, "img") == pytest.approx(9 / 17, abs=1e-15)
    # without boxes: foreground 8 pixels, 5 inside -> IoU 5 / (16 + 3) = 5/19; Dice 2*5 / (16 + 8) = 5/12
    assert otsu_iou_gt(score, gt, "img") == pytest.approx(5 / 19, abs=1e-15)
    assert otsu_dice_gt(score, gt, "img") == pytest.approx(5 / 12, abs=1e-15)


def test_box_mode_on_a_smooth_map_uses_the_otsu_foreground():
    yy, xx = np.mgrid[0:20, 0:20]
    score = np.exp(-((yy - 6) ** 2 + (xx - 7) ** 2) / 8.0)  # one round blob
    gt = np.zeros((20, 20), np.uint8)
    gt[3:10, 4:11] = 1
    fg = score > threshold_otsu(score)
    rows, cols = np.nonzero(fg)
    box = np.zeros((20, 20), bool)
    box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True  # one component: its bounding box
    g = gt > 0
    assert box_iou_gt(score, gt) == pytest.approx((box & g).sum() / (box | g).sum(), abs=1e-15)
    assert box_dice_gt(score, gt) == pytest.approx(2 * (box & g).sum() / (box.sum() + g.sum()), abs=1e-15)


# ---------------------------------------------------------------- Otsu IoU / Dice against the ground truth


def test_otsu_iou_gt_hand_computed_non_binary_map():
    score = np.array([[0.1, 0.2, 0.8], [0.9, 0.15, 0.85]])  # Otsu separates {0.1, 0.15, 0.2} from {0.8, 0.85, 0.9}
    gt = np.array([[0, 1, 1], [1, 0, 0]])
    # foreground {(0,2), (1,0), (1,2)}; truth {(0,1), (0,2), (1,0)}; intersection 2, union 4
    assert otsu_iou_gt(score, gt) == pytest.approx(0.5)
    assert otsu_dice_gt(score, gt) == pytest.approx(2 * 2 / 6)


@pytest.mark.parametrize("seed", range(5))
def test_otsu_iou_gt_equals_skimage_reference(seed):
    rng = np.random.default_rng(seed)
    score = rng.random((24, 20)) ** 2
    gt = np.zeros((24, 20), np.uint8)
    gt[5:15, 3:12] = 1
    fg, g = score > threshold_otsu(score), gt > 0
    assert otsu_iou_gt(score, gt) == pytest.approx((fg & g).sum() / (fg | g).sum(), abs=1e-15)
    assert otsu_dice_gt(score, gt) == pytest.approx(2 * (fg & g).sum() / (fg.sum() + g.sum()), abs=1e-15)
    j = otsu_iou_gt(score, gt)
    assert otsu_dice_gt(score, gt) == pytest.approx(2 * j / (1 + j), abs=1e-12)
    jb = box_iou_gt(score, gt)
    assert box_dice_gt(score, gt) == pytest.approx(2 * jb / (1 + jb), abs=1e-12)


def test_constant_map_has_empty_foreground_so_overlap_is_zero():
    gt = _gt_top_left()
    const = np.full((8, 8), 0.3)
    for f in (otsu_iou_gt, otsu_dice_gt, box_iou_gt, box_dice_gt):
        assert f(const, gt, "flat") == 0.0


def test_perfect_map_scores_one():
    gt = _gt_top_left()
    score = gt.astype(float) * 0.8 + 0.1
    for name in OVERLAP:
        assert METRIC_FUNCTIONS[name](score, gt, "perfect") == pytest.approx(1.0)


# ---------------------------------------------------------------- top-k


def test_top_k_hand_computed():
    score = np.array([[0.9, 0.1, 0.8], [0.7, 0.2, 0.3]])  # flat: 0.9 0.1 0.8 0.7 0.2 0.3
    gt = np.array([[1, 0, 0], [1, 1, 0]])  # area 3
    # the 3 highest: 0.9 (in), 0.8 (out), 0.7 (in) -> 2/3
    assert top_k_overlap(score, gt, "img") == pytest.approx(2 / 3)
    assert top_k_overlap(score, gt, "img", k=1) == 1.0
    assert top_k_overlap(score, gt, "img", k=2) == pytest.approx(1 / 2)
    assert top_k_overlap(score, gt, "img", k=6) == pytest.approx(3 / 6)  # k = all pixels: the prevalence


def test_top_k_default_k_is_ground_truth_area():
    rng = np.random.default_rng(0)
    score = rng.random((10, 12))
    gt = np.zeros((10, 12), np.uint8)
    gt[2:5, 3:9] = 1  # area 18
    assert top_k_overlap(score, gt) == top_k_overlap(score, gt, k=18)
    # independent reference: the 18 highest scores (no ties in random floats)
    thr = np.sort(score.ravel())[::-1][17]
    assert top_k_overlap(score, gt) == pytest.approx(((score >= thr) & (gt > 0)).sum() / 18)


def test_top_k_perfect_map_is_one():
    gt = np.zeros((9, 9), np.uint8)
    gt[3:6, 2:7] = 1
    rng = np.random.default_rng(1)
    score = gt * (1 + rng.random((9, 9))) + 0.5 * rng.random((9, 9))  # every inside pixel beats every outside one
    assert top_k_overlap(score, gt) == 1.0


def test_top_k_ties_broken_by_pixel_order():
    """Expected convention: among equal scores, the pixel earlier in row-major (C) order ranks first."""
    const = np.full((2, 2), 0.5)
    # k = 2 on a constant map: the top pixels are (0,0) and (0,1)
    assert top_k_overlap(const, np.array([[1, 1], [0, 0]])) == 1.0
    assert top_k_overlap(const, np.array([[0, 0], [1, 1]])) == 0.0
    assert top_k_overlap(const, np.array([[0, 1], [1, 0]])) == 0.5
    # a strict maximum first, then the tie at 0.5 resolved by order: (0,1) 0.9, then (0,0)
    score = np.array([[0.5, 0.9], [0.5, 0.5]])
    assert top_k_overlap(score, np.array([[0, 1], [1, 0]])) == 0.5  # picks (0,1) in, (0,0) out
    assert top_k_overlap(score, np.array([[1, 1], [0, 0]])) == 1.0  # picks (0,1) in, (0,0) in
    # the tie order holds for float32 maps and zeros (-0.0 == 0.0) too
    zeros = np.zeros((3, 3), np.float32)
    gt = np.zeros((3, 3), np.uint8)
    gt[0, :2] = 1
    assert top_k_overlap(zeros, gt) == 1.0


@pytest.mark.parametrize("k", [0, -1, 17])
def test_top_k_invalid_k_raises_naming_image(k):
    gt = np.zeros((4, 4), np.uint8)
    gt[0, 0] = 1
    with pytest.raises(ValueError, match="img_007"):
        top_k_overlap(np.random.default_rng(0).random((4, 4)), gt, "img_007", k=k)


# ---------------------------------------------------------------- input checks and the table


@pytest.mark.parametrize("name", OVERLAP)
def test_overlap_metrics_reject_bad_input_naming_image(name):
    f = METRIC_FUNCTIONS[name]
    gt = _gt_top_left()
    with pytest.raises(ValueError, match="img_x.*empty"):
        f(np.random.default_rng(0).random((8, 8)), np.zeros((8, 8)), "img_x")
    with pytest.raises(ValueError, match="img_y.*shape"):
        f(np.zeros((8, 7)), gt, "img_y")
    bad = np.zeros((8, 8))
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="img_z.*NaN"):
        f(bad, gt, "img_z")


def test_overlap_metrics_registered():
    assert set(OVERLAP) <= set(UTILITY_METRICS)
    assert set(UTILITY_METRICS) == set(METRIC_FUNCTIONS)


def test_utility_table_with_overlap_metrics_and_weights_column():
    score, gt = _two_blob_map(), _gt_top_left()
    table = utility_table(
        {"a": score, "b": gt.astype(float)},
        {"a": gt, "b": gt},
        "cnn",
        "gradcam",
        metrics=tuple(OVERLAP),
        weights="randomized",
    )
    assert list(table.columns) == UTILITY_COLUMNS
    assert len(table) == 2 * len(OVERLAP)
    assert (table["weights"] == "randomized").all()
    got = table.set_index(["image_id", "metric"])["value"]
    assert got["a", "iou"] == pytest.approx(5 / 19)
    assert got["a", "dice"] == pytest.approx(5 / 12)
    assert got["a", "iou_box"] == pytest.approx(9 / 25)
    assert got["a", "dice_box"] == pytest.approx(9 / 17)
    # top-k, k = 16: the 8 blob pixels (5 inside), then ties at 0 in row-major order:
    # rows 0 (8 pixels, 4 inside cols 0-3) -> the 8 first zeros are (0,0)..(0,7): 4 inside -> (5 + 4) / 16
    assert got["a", "topk"] == pytest.approx(9 / 16)
    for m in OVERLAP:
        assert got["b", m] == pytest.approx(1.0)
    assert (utility_table({"a": score}, {"a": gt}, "cnn", "gradcam", metrics=("iou",))["weights"] == "trained").all()
