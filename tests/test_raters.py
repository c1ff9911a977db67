"""Tests of the simulated raters (saliency_trust.data.synthetic) and the human reference (metrics.raters).

References: a snapshot of the generator's boxes taken before the rater option
existed; hand-computed masks, consensus, IoU/Dice, AP and PR-AUC of tiny
grids; a Monte-Carlo estimate of the tie-broken top-k overlap with the utility
module's own top-k function.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from saliency_trust.data.canonical import CanonicalDataset, write_dataset
from saliency_trust.data.synthetic import ShortcutSpec, SyntheticSpec, generate_dataset, jitter_box
from saliency_trust.metrics.raters import (
    PER_RATER_COLUMNS,
    box_mask,
    consensus_mask,
    consensus_threshold,
    expected_topk,
    rater_reference,
    rater_scores,
    run_rater_reference,
    score_rater,
)
from saliency_trust.metrics.utility import UTILITY_COLUMNS, top_k_overlap

# ---------------------------------------------------------------- synthetic raters

# boxes.csv of SyntheticSpec(n_images=24, image_size=32, prevalence=0.6), seed 3, recorded before raters existed
SNAPSHOT_SINGLE = [
    ("syn000001", 19, 16, 5, 5),
    ("syn000001", 6, 9, 8, 7),
    ("syn000003", 8, 15, 6, 7),
    ("syn000005", 19, 17, 7, 6),
    ("syn000006", 20, 18, 5, 5),
    ("syn000008", 22, 11, 3, 3),
    ("syn000008", 8, 14, 5, 5),
    ("syn000009", 5, 7, 8, 9),
    ("syn000010", 19, 15, 5, 5),
    ("syn000011", 18, 14, 7, 6),
    ("syn000013", 18, 11, 3, 3),
    ("syn000014", 18, 15, 6, 7),
    ("syn000018", 19, 16, 7, 7),
    ("syn000019", 8, 10, 6, 7),
    ("syn000022", 9, 16, 5, 5),
    ("syn000023", 7, 11, 8, 9),
]
SNAPSHOT_SINGLE_MASKS_SHA = "6606a3a85e6b61bc732702eea62e93cf1ae7737a73900deabf612267a198139c"
# sha256 of boxes.to_csv(index=False) for the multi-label spec with a shortcut, seed 5 (27 boxes)
SNAPSHOT_MULTI_BOXES_SHA = "1394ee19b882bf4f3ac7dcaa7f52459dc8c24c01bc1ba8233b92fd67e8c9864b"

SINGLE = SyntheticSpec(n_images=24, image_size=32, prevalence=0.6)
MULTI = SyntheticSpec(n_images=24, image_size=32, multi_label=True, shortcut=ShortcutSpec(enabled=True))


def test_raters_off_by_default_and_output_equals_the_snapshot():
    assert SyntheticSpec().raters == 0
    _, _, masks, boxes = generate_dataset(SINGLE, 3)
    assert list(boxes.columns) == ["image_id", "label", "rater", "x", "y", "width", "height"]
    assert set(boxes["rater"]) == {"truth"} and set(boxes["label"]) == {"abnormal"}
    assert [(r.image_id, r.x, r.y, r.width, r.height) for r in boxes.itertuples()] == SNAPSHOT_SINGLE
    assert hashlib.sha256(masks.tobytes()).hexdigest() == SNAPSHOT_SINGLE_MASKS_SHA
    _, _, _, multi_boxes = generate_dataset(MULTI, 5)
    assert hashlib.sha256(multi_boxes.to_csv(index=False).encode()).hexdigest() == SNAPSHOT_MULTI_BOXES_SHA


@pytest.fixture(scope="module")
def with_raters():
    spec = SyntheticSpec(n_images=60, image_size=32, prevalence=0.6, raters=3, rater_jitter=0.2)
    return (
        spec,
        generate_dataset(spec, 3),
        generate_dataset(SyntheticSpec(n_images=60, image_size=32, prevalence=0.6), 3),
    )


def test_raters_change_no_image_mask_manifest_or_truth_box(with_raters):
    _, (man_on, img_on, mask_on, boxes_on), (man_off, img_off, mask_off, boxes_off) = with_raters
    pd.testing.assert_frame_equal(man_on, man_off)
    assert np.array_equal(img_on, img_off) and np.array_equal(mask_on, mask_off)
    truth = boxes_on[boxes_on["rater"] == "truth"].reset_index(drop=True)
    pd.testing.assert_frame_equal(truth, boxes_off)


def test_one_box_per_rater_and_lesion_with_the_lesion_label(with_raters):
    spec, (_, _, _, boxes), _ = with_raters
    for _, rows in boxes.groupby("image_id"):
        truth = rows[rows["rater"] == "truth"]
        assert sorted(set(rows["rater"]) - {"truth"}) == ["1", "2", "3"]
        for r in ("1", "2", "3"):
            mine = rows[rows["rater"] == r]
            assert len(mine) == len(truth)
            assert list(mine["label"]) == list(truth["label"])


def test_rater_boxes_inside_the_image_and_within_the_jitter_of_the_truth(with_raters):
    spec, (_, _, _, boxes), _ = with_raters
    size, j = spec.image_size, spec.rater_jitter
    moved = 0
    for _, rows in boxes.groupby("image_id"):
        truth = rows[rows["rater"] == "truth"][["x", "y", "width", "height"]].to_numpy()
        for r in ("1", "2", "3"):
            mine = rows[rows["rater"] == r][["x", "y", "width", "height"]].to_numpy()
            assert (mine[:, :2] >= 0).all() and (mine[:, 2:] >= 1).all()
            assert (mine[:, 0] + mine[:, 2] <= size).all() and (mine[:, 1] + mine[:, 3] <= size).all()
            for (x, y, w, h), (x2, y2, w2, h2) in zip(truth, mine):
                # each side moves at most jitter x box size, plus half a pixel of rounding
                assert abs(x2 - x) <= j * w + 0.5 and abs((x2 + w2) - (x + w)) <= j * w + 0.5
                assert abs(y2 - y) <= j * h + 0.5 and abs((y2 + h2) - (y + h)) <= j * h + 0.5
                moved += (x2, y2, w2, h2) != (x, y, w, h)
    assert moved > 10  # the jitter actually moved boxes


def test_raters_are_deterministic_per_seed_and_independent_of_their_number(with_raters):
    spec, (_, _, _, boxes), _ = with_raters
    pd.testing.assert_frame_equal(generate_dataset(spec, 3)[3], boxes)
    other_seed = generate_dataset(spec, 4)[3]
    assert not other_seed.equals(boxes)
    two = generate_dataset(SyntheticSpec(n_images=60, image_size=32, prevalence=0.6, raters=2, rater_jitter=0.2), 3)[3]
    pd.testing.assert_frame_equal(two.reset_index(drop=True), boxes[boxes["rater"] != "3"].reset_index(drop=True))


def test_zero_jitter_gives_the_true_box_for_every_rater():
    spec = SyntheticSpec(n_images=30, image_size=32, multi_label=True, raters=4, rater_jitter=0.0)
    _, _, _, boxes = generate_dataset(spec, 8)
    truth = boxes[boxes["rater"] == "truth"]
    assert len(truth) > 5
    for r in ("1", "2", "3", "4"):
        mine = boxes[boxes["rater"] == r]
        assert np.array_equal(
            mine[["image_id", "label", "x", "y", "width", "height"]].to_numpy(),
            truth[["image_id", "label", "x", "y", "width", "height"]].to_numpy(),
        )


def test_jitter_box_hand_computed_rounding_clipping_and_minimum_size():
    # left 10 - 0.25*4 = 9; top 10 + 0.5*6 = 13; right 14 + 0.125*4 = 14.5 -> 15 (half away from zero);
    # bottom 16 - 0.5*6 = 13 <= top -> one pixel row kept at the top
    assert jitter_box((10, 10, 4, 6), np.array([-0.25, 0.5, 0.125, -0.5]), 32) == (9, 13, 6, 1)
    # sides pushed past the border are clipped to the image
    assert jitter_box((0, 1, 4, 4), np.array([-0.5, -0.5, 0.5, 0.5]), 5) == (0, 0, 5, 5)
    # a box collapsed against the right border keeps the last pixel column
    assert jitter_box((4, 0, 1, 2), np.array([0.5, 0.0, 0.5, 0.0]), 5) == (4, 0, 1, 2)


@pytest.mark.parametrize("kwargs", [{"raters": -1}, {"raters": 1.5}, {"rater_jitter": -0.1}, {"rater_jitter": 0.6}])
def test_invalid_rater_options_raise(kwargs):
    with pytest.raises(ValueError, match="rater"):
        SyntheticSpec(**kwargs)


def test_rater_options_from_config():
    spec = SyntheticSpec.from_config({"raters": 3, "rater_jitter": 0.1})
    assert (spec.raters, spec.rater_jitter) == (3, 0.1)


# ---------------------------------------------------------------- masks and consensus


def test_box_mask_pixel_centre_rule_hand_computed():
    rows = pd.DataFrame({"x": [1, 0.4], "y": [2, 4.6], "width": [3, 1.2], "height": [2, 0.3]})
    expected = np.zeros((6, 6), bool)
    expected[2:4, 1:4] = True  # integer box: rows 2-3, columns 1-3
    expected[4, 0:2] = True  # centres 0.5, 1.5 lie in [0.4, 1.6); height 0.3 holds no centre -> row of its centre 4.75
    assert np.array_equal(box_mask(rows, (6, 6)), expected)
    assert not box_mask(rows.iloc[:0], (6, 6)).any()


def test_box_mask_equals_the_adapters_rasterizer_and_drops_what_lies_outside():
    from saliency_trust.data.geometry import rasterize_box

    rng = np.random.default_rng(1)
    for _ in range(200):
        x, y = rng.uniform(0, 9, 2)
        w, h = rng.uniform(0.05, 0.9, 2) if rng.random() < 0.3 else rng.uniform(0.9, 12 - max(x, y), 2)
        rows = pd.DataFrame({"x": [x], "y": [y], "width": [w], "height": [h]})
        assert np.array_equal(box_mask(rows, (12, 12)), rasterize_box((x, y, w, h), 12) > 0), (x, y, w, h)
    outside = pd.DataFrame({"x": [-5.0, 2.0], "y": [-5.0, 10.0], "width": [3.0, 2.0], "height": [3.0, 4.0]})
    expected = np.zeros((12, 12), bool)
    expected[10:12, 2:4] = True  # the first box lies wholly above-left of the image; the second is clipped
    assert np.array_equal(box_mask(outside, (12, 12)), expected)


@pytest.mark.parametrize("m, t", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3)])
def test_consensus_threshold_is_half_rounded_up(m, t):
    assert consensus_threshold(m) == t


def test_consensus_mask_hand_computed():
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[0, 1, 1, 0]], bool)
    c = np.array([[0, 1, 1, 1]], bool)
    assert np.array_equal(consensus_mask([a]), a)
    assert np.array_equal(consensus_mask([a, b]), np.array([[1, 1, 1, 0]], bool))  # 1 of 2: union
    assert np.array_equal(consensus_mask([a, b, c]), np.array([[0, 1, 1, 0]], bool))  # 2 of 3


# ---------------------------------------------------------------- scores of one rater


def _grid(pixels, shape=(4, 5)):
    m = np.zeros(shape, bool)
    for r, c in pixels:
        m[r, c] = True
    return m


def test_score_rater_hand_computed_on_an_l_shape():
    rater = _grid([(0, 1), (1, 1), (1, 2)])  # 3 pixels, bounding box rows 0-1, cols 1-2
    cons = _grid([(0, 0), (0, 1), (1, 0), (1, 1)])  # 4 pixels; overlap 2; 20 pixels in all
    s = score_rater(rater, cons, image_id="x")
    assert s["iou"] == pytest.approx(2 / 5)
    assert s["dice"] == pytest.approx(4 / 7)
    assert s["iou_box"] == pytest.approx(2 / 6)  # box 4 px, overlap 2, union 6
    assert s["dice_box"] == pytest.approx(4 / 8)
    # one operating point (recall 1/2, precision 2/3) besides (1, 4/20) and (0, 1)
    assert s["ap"] == pytest.approx(0.5 * 2 / 3 + 0.5 * 4 / 20)
    assert s["pr_auc"] == pytest.approx(0.5 * (1 + 2 / 3) / 2 + 0.5 * (2 / 3 + 0.2) / 2)
    assert s["topk"] == pytest.approx((2 + 1 * 2 / 17) / 4)  # k = 4 > 3 rater pixels; 1 more of 17 others, 2 in C


def test_expected_topk_when_the_rater_marks_more_than_k():
    rater = _grid([(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0)])  # 6 pixels
    cons = _grid([(0, 0), (0, 1), (1, 0), (3, 3)])  # k = 4, 3 of them marked by the rater
    assert expected_topk(rater, cons) == pytest.approx(3 / 6)


@pytest.mark.parametrize("rater_px", [[(0, 1), (1, 1), (1, 2)], [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0)]])
def test_expected_topk_equals_top_k_overlap_averaged_over_random_tie_orders(rater_px):
    rater, cons = _grid(rater_px), _grid([(0, 0), (0, 1), (1, 0), (3, 3)])
    rng = np.random.default_rng(0)
    values = []
    for _ in range(3000):
        perm = rng.permutation(rater.size)  # random pixel order = random tie-breaking of the binary map
        values.append(top_k_overlap(rater.reshape(-1)[perm].astype(float), cons.reshape(-1)[perm]))
    assert expected_topk(rater, cons) == pytest.approx(np.mean(values), abs=0.01)


def test_a_perfect_rater_scores_one():
    m = _grid([(1, 1), (1, 2), (2, 1), (2, 2)])  # a rectangle: box mode leaves it unchanged
    s = score_rater(m, m)
    assert all(v == pytest.approx(1.0) for v in s.values())


def test_score_rater_rejects_unknown_metric_and_empty_consensus():
    m = _grid([(1, 1)])
    with pytest.raises(ValueError, match="unknown rater metric"):
        score_rater(m, m, ("iou", "ssim"))
    with pytest.raises(ValueError, match="empty"):
        score_rater(m, np.zeros_like(m))


# ---------------------------------------------------------------- per image and stage entry


def _rater_dataset():
    """8 x 8 images: A (test, 3 raters), B (test, 1 rater), C (test negative, 2 raters), D (train, 2 raters),
    E (test, 2 raters), F (test, 4 raters, one of whom the others never agree with)."""
    ids = ["A", "B", "C", "D", "E", "F"]
    manifest = pd.DataFrame(
        {"image_id": ids, "split": ["test", "test", "test", "train", "test", "test"], "lesion": [1, 1, 0, 1, 1, 1]}
    )
    images = np.full((6, 8, 8), 0.5, np.float32)
    masks = np.zeros((6, 1, 8, 8), np.uint8)
    masks[manifest["lesion"].to_numpy() > 0, 0, 2:4, 2:4] = 1
    b = [
        ("A", "truth", 0, 0, 8, 8),
        ("A", "1", 0, 0, 4, 4),
        ("A", "2", 2, 0, 4, 4),
        ("A", "3", 0, 4, 4, 2),
        ("A", "consensus", 0, 0, 8, 8),
        ("B", "1", 0, 0, 4, 4),
        ("B", "truth", 0, 0, 4, 4),
        ("C", "1", 0, 0, 4, 4),
        ("C", "2", 0, 0, 4, 4),
        ("D", "1", 0, 0, 4, 4),
        ("D", "2", 0, 0, 4, 4),
        ("E", "a", 1, 1, 2, 2),
        ("E", "b", 1, 1, 2, 3),
        ("F", "1", 0, 0, 2, 2),
        ("F", "2", 4, 0, 2, 2),
        ("F", "3", 0, 4, 2, 2),
        ("F", "4", 0, 0, 8, 8),
    ]
    boxes = pd.DataFrame(
        [(i, "lesion", r, x, y, w, h) for i, r, x, y, w, h in b],
        columns=["image_id", "label", "rater", "x", "y", "width", "height"],
    )
    return manifest, images, masks, boxes


def test_rater_scores_hand_computed_per_rater_and_per_image():
    manifest, images, masks, boxes = _rater_dataset()
    data = CanonicalDataset(manifest, images, masks, ["lesion"])
    per = rater_scores(data, boxes, "lesion", ("iou", "dice"))
    assert list(per.columns) == PER_RATER_COLUMNS
    assert set(per["image_id"]) == {"A", "E", "F"}  # B: one rater; C: negative; D: train split
    assert set(per["model"]) == {"human"} and set(per["method"]) == {"RATER"} and set(per["weights"]) == {"human"}
    got = {(r.image_id, r.rater, r.metric): r.value for r in per.itertuples()}
    # A: R1 = rows 0-3 x cols 0-3, R2 = rows 0-3 x cols 2-5, R3 = rows 4-5 x cols 0-3; consensus of 2 others = union
    assert got[("A", "1", "iou")] == pytest.approx(8 / 32) and got[("A", "1", "dice")] == pytest.approx(16 / 40)
    assert got[("A", "2", "iou")] == pytest.approx(8 / 32) and got[("A", "2", "dice")] == pytest.approx(16 / 40)
    assert got[("A", "3", "iou")] == 0.0 and got[("A", "3", "dice")] == 0.0
    # E: two raters, each against the other: 4 px inside 6 px
    assert got[("E", "a", "iou")] == pytest.approx(4 / 6) and got[("E", "b", "iou")] == pytest.approx(4 / 6)
    # F: 4 raters, consensus = 2 of the 3 others; rater 4's others (1, 2, 3) are disjoint -> not scored;
    # rater 1's others: pixels of 2 and of 3 are also covered by 4 -> consensus = R2 | R3 (8 px), R1 disjoint
    assert sorted(per.loc[per["image_id"] == "F", "rater"].unique()) == ["1", "2", "3"]
    assert got[("F", "1", "iou")] == 0.0
    assert set(per.loc[per["image_id"] == "F", "n_raters"]) == {4}
    ref = rater_reference(per)
    assert list(ref.columns) == UTILITY_COLUMNS
    mean = {(r.image_id, r.metric): r.value for r in ref.itertuples()}
    assert mean[("A", "iou")] == pytest.approx(0.5 / 3)
    assert mean[("A", "dice")] == pytest.approx(0.8 / 3)
    assert mean[("E", "dice")] == pytest.approx(0.8)
    assert len(ref) == 3 * 2


def test_run_rater_reference_writes_the_table_and_the_per_rater_table(tmp_path):
    manifest, images, masks, boxes = _rater_dataset()
    paths = {k: tmp_path / f for k, f in (("m", "manifest.csv"), ("i", "images.h5"), ("b", "boxes.csv"))}
    write_dataset(manifest, images, masks, boxes, ["lesion"], paths["m"], paths["i"], paths["b"], source="test")
    out, per_out = tmp_path / "out" / "RATER.csv", tmp_path / "out" / "per_rater.csv"
    run_rater_reference(paths["m"], paths["i"], paths["b"], None, ["pr_auc", "iou"], out, per_rater_path=per_out)
    table = pd.read_csv(out, dtype={"image_id": str})
    assert list(table.columns) == UTILITY_COLUMNS
    assert sorted(table["metric"].unique()) == ["iou", "pr_auc"]
    iou = table[table["metric"] == "iou"].set_index("image_id")["value"]
    assert iou["A"] == pytest.approx(0.5 / 3) and iou["E"] == pytest.approx(4 / 6)
    per = pd.read_csv(per_out, dtype={"image_id": str, "rater": str})
    assert len(per) == (3 + 2 + 3) * 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["RATER.csv", "per_rater.csv"]  # no temp files left


def test_run_rater_reference_without_several_raters_names_the_boxes_file(tmp_path):
    manifest, images, masks, boxes = _rater_dataset()
    boxes = boxes[boxes["rater"].isin(["truth", "consensus", "a"])]  # at most one real rater per image
    paths = [tmp_path / "manifest.csv", tmp_path / "images.h5", tmp_path / "my_boxes.csv"]
    write_dataset(manifest, images, masks, boxes, ["lesion"], *paths, source="test")
    out = tmp_path / "RATER.csv"
    with pytest.raises(ValueError, match="my_boxes.csv.*2 or more raters"):
        run_rater_reference(*paths, "lesion", ["iou"], out)
    assert not out.exists()


def test_synthetic_raters_feed_the_human_reference():
    """End to end on the generator: three simulated raters give a reference below 1 and above chance."""
    from saliency_trust.data.splits import assign_splits

    spec = SyntheticSpec(n_images=80, image_size=32, prevalence=0.6, raters=3, rater_jitter=0.15)
    man, images, masks, boxes = generate_dataset(spec, 1)
    man.insert(1, "split", assign_splits(man["image_id"], 1, test_fraction=0.3, val_fraction=0.1))
    data = CanonicalDataset(man, images, masks, spec.label_names)
    ref = rater_reference(rater_scores(data, boxes, "abnormal", ("iou", "ap")))
    n_pos_test = int(((man["split"] == "test") & (man["abnormal"] == 1)).sum())
    assert ref["image_id"].nunique() == n_pos_test
    iou = ref.loc[ref["metric"] == "iou", "value"]
    assert 0.4 < iou.mean() < 1.0
