"""Tests of saliency_trust.models.detector (the RetinaNet high baseline for box datasets).

References: hand-computed heat maps (max over overlapping boxes, the 0.01
threshold, the pixel-centre rule for fractional boxes), the adapters'
independent box rasterizer, torchvision's own transform and output contract,
the AP of a constant map (the mask's prevalence) as the chance level, and
repeated runs for determinism.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch

from saliency_trust.data.canonical import CanonicalDataset, write_dataset
from saliency_trust.data.geometry import rasterize_box
from saliency_trust.metrics.utility import average_precision
from saliency_trust.models.detector import (
    DetectorSettings,
    SmallFPNBackbone,
    boxes_to_heatmap,
    build_detector,
    detector_targets,
    load_detector,
    mean_pixel_ap,
    run_train_detector,
    train_detector,
)
from saliency_trust.saliency.baselines import run_detector_map
from saliency_trust.storage.maps import read_maps

CPU = torch.device("cpu")
TINY = DetectorSettings(epochs=2, patience=5, lr=3e-3, batch_size=8, width=4, fpn_channels=8, levels=3)

# ---------------------------------------------------------------- heat maps


def test_single_integer_box_covers_its_pixels():
    heat = boxes_to_heatmap([[1, 2, 4, 5]], [0.5], (6, 6))
    expected = np.zeros((6, 6), np.float32)
    expected[2:5, 1:4] = 0.5  # x1 = 1, x2 = 4: columns 1, 2, 3 (column c spans [c, c + 1))
    assert heat.dtype == np.float32
    assert np.array_equal(heat, expected)


def test_overlapping_boxes_take_the_highest_score_in_any_order():
    boxes, scores = [[0, 0, 4, 4], [2, 2, 6, 6], [3, 3, 5, 5]], [0.3, 0.7, 0.5]
    expected = np.zeros((6, 6), np.float32)
    expected[0:4, 0:4] = 0.3
    expected[2:6, 2:6] = 0.7  # the 0.5 box lies inside the 0.7 box: never the maximum
    assert np.array_equal(boxes_to_heatmap(boxes, scores, (6, 6)), expected)
    assert np.array_equal(boxes_to_heatmap(boxes[::-1], scores[::-1], (6, 6)), expected)


def test_score_threshold_is_exclusive_at_001():
    box = [[0, 0, 2, 2]]
    assert not boxes_to_heatmap(box, [0.01], (3, 3)).any()  # exactly 0.01: not above it
    assert not boxes_to_heatmap(box, [0.005], (3, 3)).any()
    heat = boxes_to_heatmap(box, [0.0101], (3, 3))
    assert heat[0, 0] == np.float32(0.0101) and heat[2, 2] == 0
    assert boxes_to_heatmap(box, [0.005], (3, 3), min_score=0.001)[1, 1] == np.float32(0.005)


def test_fractional_boxes_cover_pixels_whose_centre_lies_inside_half_open():
    # columns: centres 0.5, 1.5, 2.5 lie in [0.4, 2.6); rows: only 1.5 lies in [0.6, 2.4)
    heat = boxes_to_heatmap([[0.4, 0.6, 2.6, 2.4]], [0.9], (4, 4))
    expected = np.zeros((4, 4), np.float32)
    expected[1, 0:3] = 0.9
    assert np.array_equal(heat, expected)
    # half-open: a centre on the right/bottom edge (2.5) is outside, on the left/top edge (1.5) inside
    heat = boxes_to_heatmap([[1.5, 1.5, 2.5, 2.5]], [0.9], (4, 4))
    assert np.argwhere(heat > 0).tolist() == [[1, 1]]


def test_boxes_thinner_than_a_pixel_mark_the_pixel_holding_their_centre():
    heat = boxes_to_heatmap([[2.2, 0.0, 2.4, 3.0]], [0.8], (4, 4))  # holds no column centre; centre x = 2.3
    expected = np.zeros((4, 4), np.float32)
    expected[0:3, 2] = 0.8
    assert np.array_equal(heat, expected)


def test_boxes_are_clipped_to_the_image():
    heat = boxes_to_heatmap([[-3, -3, 2, 2], [10, 10, 12, 12], [5.2, -1, 9, 0.8]], [0.4, 0.9, 0.6], (6, 6))
    expected = np.zeros((6, 6), np.float32)
    expected[0:2, 0:2] = 0.4
    expected[0, 5] = 0.6  # columns 5..8 clipped to 5; rows -1..0 clipped to 0
    assert np.array_equal(heat, expected)


def test_heatmap_coverage_equals_the_adapters_box_rasterizer():
    """The same pixel rule as saliency_trust.data.geometry.rasterize_box, on random fractional boxes.

    Boxes wholly above or left of the image are left out: rasterize_box slices
    with a negative end index there (it marks rows/columns it should not), a case
    test_boxes_are_clipped_to_the_image covers for the heat map.
    """
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(400):
        x, y = rng.uniform(-2, 14, 2)
        w, h = rng.uniform(0.05, 0.9, 2) if rng.random() < 0.3 else rng.uniform(0.9, 9, 2)
        if x + w <= 0.5 or y + h <= 0.5 or x + w / 2 < 0 or y + h / 2 < 0:
            continue
        checked += 1
        heat = boxes_to_heatmap([[x, y, x + w, y + h]], [0.5], (12, 12))
        assert np.array_equal(heat > 0, rasterize_box((x, y, w, h), 12) > 0), (x, y, w, h)
    assert checked > 300


def test_model_selection_ap_is_the_utility_metrics_ap():
    rng = np.random.default_rng(3)
    heat = rng.random((4, 12, 12)).astype(np.float32)
    masks = np.zeros((4, 12, 12), np.uint8)
    for k in range(4):
        masks[k, k : k + 4, 2 : 2 + k + 2] = 1
    expected = np.mean([average_precision(h, m) for h, m in zip(heat, masks)])
    assert mean_pixel_ap(heat, masks) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(mean_pixel_ap(heat[:0], masks[:0]))


def test_heatmap_input_checks():
    assert not boxes_to_heatmap(np.zeros((0, 4)), np.zeros(0), (5, 7)).any()
    assert boxes_to_heatmap(np.zeros((0, 4)), np.zeros(0), (5, 7)).shape == (5, 7)
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        boxes_to_heatmap([[0, 0, 1, 1], [0, 0, 2, 2]], [0.5], (3, 3))
    with pytest.raises(ValueError, match="NaN"):
        boxes_to_heatmap([[0, 0, np.nan, 1]], [0.5], (3, 3))


# ---------------------------------------------------------------- training boxes


def test_detector_targets_prefer_truth_then_consensus_then_raters():
    rows = [
        ("a", "lesion", "truth", 1, 2, 3, 4),
        ("a", "lesion", "1", 0, 0, 9, 9),
        ("a", "other", "truth", 0, 0, 1, 1),
        ("b", "lesion", "1", 0, 0, 9, 9),
        ("b", "lesion", "consensus", 2.5, 1, 2, 2),
        ("c", "lesion", "1", 1, 1, 2, 2),
        ("c", "lesion", "2", 2, 2, 2, 2),
        ("d", "other", "truth", 0, 0, 1, 1),
    ]
    boxes = pd.DataFrame(rows, columns=["image_id", "label", "rater", "x", "y", "width", "height"])
    t = detector_targets(boxes, "lesion")
    assert sorted(t) == ["a", "b", "c"]
    assert t["a"].tolist() == [[1, 2, 4, 6]]
    assert t["b"].tolist() == [[2.5, 1, 4.5, 3]]
    assert t["c"].tolist() == [[1, 1, 3, 3], [2, 2, 4, 4]]
    assert t["a"].dtype == np.float32
    bad = pd.DataFrame([("e", "lesion", "truth", 1, 1, 0, 2)], columns=boxes.columns)
    with pytest.raises(ValueError, match="image 'e'"):
        detector_targets(bad, "lesion")


# ---------------------------------------------------------------- model


def test_backbone_levels_have_the_documented_strides():
    bb = SmallFPNBackbone(1, width=4, levels=4, fpn_channels=8)
    feats = bb(torch.zeros(1, 1, 64, 64))
    assert [tuple(f.shape) for f in feats.values()] == [(1, 8, 16, 16), (1, 8, 8, 8), (1, 8, 4, 4), (1, 8, 2, 2)]
    assert bb.out_channels == 8


def test_transform_keeps_the_resolution_and_only_normalizes_and_pads():
    model = build_detector((36, 36), TINY, image_mean=0.3, image_std=0.2).eval()
    x = [torch.rand(1, 36, 36), torch.rand(1, 36, 36)]
    batch, _ = model.transform(x)
    assert batch.image_sizes == [(36, 36), (36, 36)]
    assert tuple(batch.tensors.shape) == (2, 1, 48, 48)  # zero-padded to a multiple of the largest stride, 16
    assert torch.allclose(batch.tensors[0, :, :36, :36], (x[0] - 0.3) / 0.2)
    assert (batch.tensors[:, :, 36:, :] == 0).all() and (batch.tensors[:, :, :, 36:] == 0).all()


def test_model_runs_forward_in_eval_mode_on_two_images():
    torch.manual_seed(0)
    model = build_detector((32, 32), TINY).eval()
    # scores just above the threshold, so that detections exist: raise the classification prior a little
    torch.nn.init.constant_(model.head.classification_head.cls_logits.bias, -2.0)
    with torch.no_grad():
        out = model([torch.rand(1, 32, 32), torch.rand(1, 32, 32)])
    assert len(out) == 2
    for det in out:
        assert set(det) == {"boxes", "scores", "labels"}
        n = len(det["scores"])
        assert 0 < n <= TINY.detections_per_img
        assert det["boxes"].shape == (n, 4) and (det["labels"] == 0).all()
        assert (det["scores"] > 0.01).all() and (det["scores"] <= 1).all()
        b = det["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 32).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= 32).all()
        assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="levels"):
        DetectorSettings(levels=0)
    with pytest.raises(ValueError, match="min_score"):
        DetectorSettings(min_score=1.0)


# ---------------------------------------------------------------- training


def _square_dataset(n: int = 30, size: int = 32, seed: int = 0) -> tuple[CanonicalDataset, pd.DataFrame]:
    """n images; two thirds carry one bright square (mask and 'truth' box of label 'lesion').

    Splits interleave (train, train, train, val, test).
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size), np.float32)
    masks = np.zeros((n, 1, size, size), np.uint8)
    labels = np.zeros(n, int)
    rows = []
    for i in range(n):
        img = 0.2 + 0.05 * rng.standard_normal((size, size))
        if i % 3 != 2:
            s = int(rng.integers(5, 10))
            r, c = (int(v) for v in rng.integers(0, size - s, 2))
            img[r : r + s, c : c + s] += 0.6
            masks[i, 0, r : r + s, c : c + s] = 1
            labels[i] = 1
            rows.append((f"sq{i:03d}", "lesion", "truth", c, r, s, s))
        images[i] = np.clip(img, 0, 1)
    split = np.array(["train", "train", "train", "val", "test"])[np.arange(n) % 5]
    manifest = pd.DataFrame({"image_id": [f"sq{i:03d}" for i in range(n)], "split": split, "lesion": labels})
    boxes = pd.DataFrame(rows, columns=["image_id", "label", "rater", "x", "y", "width", "height"])
    return CanonicalDataset(manifest, images, masks, ["lesion"]), boxes


@pytest.fixture(scope="module")
def squares():
    return _square_dataset()


@pytest.fixture(scope="module")
def two_runs(squares):
    data, boxes = squares
    return [train_detector(data, boxes, "lesion", TINY, seed=5, device=CPU) for _ in range(2)]


def test_training_is_deterministic_with_a_fixed_seed(two_runs):
    (m1, h1, x1), (m2, h2, x2) = two_runs
    pd.testing.assert_frame_equal(h1.drop(columns="seconds"), h2.drop(columns="seconds"))
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert x1 == x2


def test_training_losses_are_finite_and_metrics_consistent(two_runs, squares):
    _, history, metrics = two_runs[0]
    assert len(history) == TINY.epochs
    cols = ["train_loss", "train_cls_loss", "train_box_loss", "val_ap"]
    assert np.isfinite(history[cols].to_numpy()).all()
    assert np.allclose(history["train_loss"], history["train_cls_loss"] + history["train_box_loss"])
    assert metrics["val_ap"] == history["val_ap"].max()
    assert metrics["best_epoch"] == int(history["val_ap"].idxmax()) + 1
    data, _ = squares
    n_pos_train = len(data.positive_indices("train", "lesion"))
    assert metrics["n_train_images"] == metrics["n_train_boxes"] == n_pos_train
    assert 0 <= metrics["test_ap"] <= 1


def test_other_seed_gives_other_weights(two_runs, squares):
    data, boxes = squares
    m_other, _, _ = train_detector(data, boxes, "lesion", TINY, seed=6, device=CPU)
    s1, s3 = two_runs[0][0].state_dict(), m_other.state_dict()
    assert any(not torch.equal(s1[k], s3[k]) for k in s1 if s1[k].is_floating_point())


def test_training_learns_better_than_a_constant_map():
    """After a few epochs the validation heat maps rank lesion pixels above chance (AP of a constant map)."""
    data, boxes = _square_dataset(n=60, seed=1)
    settings = DetectorSettings(epochs=5, patience=5, lr=3e-3, batch_size=8, width=4, fpn_channels=8, levels=3)
    _, _, metrics = train_detector(data, boxes, "lesion", settings, seed=2, device=CPU)
    va = data.positive_indices("val", "lesion")
    chance = float(data.masks[va, 0].mean())  # AP of a constant map = the fraction of positive pixels
    assert metrics["val_ap"] > 3 * chance


def test_training_without_boxes_of_the_label_raises(squares):
    data, boxes = squares
    with pytest.raises(ValueError, match="no positive training image has boxes of label 'lesion'"):
        train_detector(data, boxes.assign(label="other"), "lesion", TINY, seed=0, device=CPU)


# ---------------------------------------------------------------- stage entries


def test_stage_entries_write_model_and_maps_that_read_back(tmp_path, squares):
    data, boxes = squares
    files = [tmp_path / "manifest.csv", tmp_path / "images.h5", tmp_path / "boxes.csv"]
    write_dataset(data.manifest, data.images, data.masks, boxes, ["lesion"], *files, source="test")
    out = tmp_path / "det"
    run_train_detector(
        *files, None, asdict(TINY), 5, "cpu", 1, out / "model.pt", out / "history.csv", out / "metrics.json"
    )
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "metrics.json", "model.pt"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label"] == "lesion" and metrics["seed"] == 5
    assert len(pd.read_csv(out / "history.csv")) == metrics["epochs_run"]
    model, settings = load_detector(out / "model.pt")
    assert settings == TINY and not model.training

    maps_path = tmp_path / "maps" / "DETECTOR-r1.h5"
    run_detector_map(files[0], files[1], out / "model.pt", "lesion", "cpu", 1, maps_path)
    sha = hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()
    m = read_maps(maps_path, method="DETECTOR", params=asdict(TINY), model_sha256=sha, with_raw=True)
    te = data.positive_indices("test", "lesion")
    assert m.image_ids == data.manifest["image_id"].iloc[te].tolist()
    assert m.maps.shape == (len(te), 32, 32) and m.raw.shape == (len(te), 1, 32, 32)
    assert np.array_equal(m.raw[:, 0], m.maps)
    assert ((m.maps == 0) | ((m.maps > 0.01) & (m.maps <= 1))).all()  # 0 or a score above the threshold
    assert json.loads(m.attrs["target"]) == {"label": "lesion", "output": "max box score"}
    assert sorted(p.name for p in maps_path.parent.iterdir()) == ["DETECTOR-r1.h5"]  # no temp files left
