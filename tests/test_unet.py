"""Tests of saliency_trust.models.unet (the U-Net high baseline).

Shapes for sizes the poolings do not divide, the soft Dice loss and the Dice at
0.5 against hand-computed values, and training on a tiny synthetic dataset
(bright squares as the masks): deterministic per seed, metrics in range, the
best epoch's weights kept.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from saliency_trust.data.canonical import CanonicalDataset
from saliency_trust.models.unet import (
    UNet,
    UNetSettings,
    dice_at_half,
    load_unet,
    predict_masks,
    run_train_unet,
    soft_dice_loss,
    train_unet,
)

CPU = torch.device("cpu")
FAST = UNetSettings(epochs=3, patience=5, lr=3e-3, batch_size=8, width=4, depth=2)


def _square_dataset(n: int = 60, size: int = 32, seed: int = 0) -> CanonicalDataset:
    """n images of ``size`` px; two thirds carry a bright square, which is the mask of label 'lesion'.

    Splits interleave (train, train, train, val, test) so every split has positives and negatives.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size), np.float32)
    masks = np.zeros((n, 1, size, size), np.uint8)
    labels = np.zeros(n, int)
    for i in range(n):
        img = 0.2 + 0.05 * rng.standard_normal((size, size))
        if i % 3 != 2:
            s = int(rng.integers(6, 11))
            r, c = rng.integers(0, size - s, 2)
            img[r : r + s, c : c + s] += 0.6
            masks[i, 0, r : r + s, c : c + s] = 1
            labels[i] = 1
        images[i] = np.clip(img, 0, 1)
    split = np.array(["train", "train", "train", "val", "test"])[np.arange(n) % 5]
    manifest = pd.DataFrame({"image_id": [f"sq{i:03d}" for i in range(n)], "split": split, "lesion": labels})
    return CanonicalDataset(manifest, images, masks, ["lesion"])


@pytest.fixture(scope="module")
def squares() -> CanonicalDataset:
    return _square_dataset()


# ---------------------------------------------------------------- architecture


@pytest.mark.parametrize("h,w", [(30, 45), (32, 32), (17, 9), (8, 8), (33, 64)])
@pytest.mark.parametrize("depth", [2, 3])
def test_unet_output_shape_equals_input_for_any_size(h, w, depth):
    torch.manual_seed(0)
    model = UNet(1, width=4, depth=depth).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, h, w))
    assert out.shape == (2, 1, h, w)
    assert torch.isfinite(out).all()


def test_unet_multichannel_input():
    model = UNet(3, width=4, depth=3).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 30, 45)).shape == (1, 1, 30, 45)


def test_unet_output_depends_only_on_its_own_image():
    """Batch entries do not mix in eval mode (BatchNorm uses running statistics)."""
    torch.manual_seed(1)
    model = UNet(1, width=4, depth=2).eval()
    x = torch.rand(3, 1, 20, 28)
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- losses and metrics


def test_soft_dice_loss_hand_computed():
    ln3 = math.log(3.0)  # sigmoid(ln 3) = 3/4
    logits = torch.tensor([[[[ln3, -ln3], [0.0, 0.0]]]])  # p = 0.75, 0.25, 0.5, 0.5
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    # inter = 0.75 + 0.5 = 1.25; sum p = 2; sum t = 2; eps = 1
    # loss = 1 - (2 * 1.25 + 1) / (2 + 2 + 1) = 1 - 3.5 / 5 = 0.3
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.3, abs=1e-6)


def test_soft_dice_loss_batch_mean_and_smoothing():
    half = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    t1 = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # 1 - (2 * 0.5 + 1) / (2 + 1 + 1) = 0.5
    assert soft_dice_loss(half, t1).item() == pytest.approx(0.5, abs=1e-6)
    perfect = torch.tensor([[[[100.0, 100.0], [-100.0, -100.0]]]])
    t2 = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    assert soft_dice_loss(perfect, t2).item() == pytest.approx(0.0, abs=1e-6)
    # an empty target predicted empty: 1 - (0 + 1) / (0 + 0 + 1) = 0 thanks to eps
    assert soft_dice_loss(torch.full((1, 1, 2, 2), -100.0), torch.zeros(1, 1, 2, 2)).item() == pytest.approx(0, abs=1e-6)
    # the batch value is the mean of the per-image losses: (0.5 + 0) / 2
    both = soft_dice_loss(torch.cat([half, perfect]), torch.cat([t1, t2]))
    assert both.item() == pytest.approx(0.25, abs=1e-6)
    # eps = 0: plain soft Dice, 1 - 2 * 0.5 / 3
    assert soft_dice_loss(half, t1, eps=0.0).item() == pytest.approx(1 - 1 / 3, abs=1e-6)


def test_dice_at_half_hand_computed():
    logits = np.array([
        [[1.0, -1.0], [0.0, 2.0]],  # pred {(0,0), (1,1)}; a logit of exactly 0 (p = 0.5) is not > 0.5
        [[-1.0, -1.0], [-1.0, -1.0]],  # pred empty
        [[3.0, -1.0], [-1.0, -1.0]],  # pred {(0,0)}
    ])
    masks = np.array([
        [[1, 1], [0, 0]],  # inter 1, total 2 + 2 -> 2/4 = 0.5
        [[0, 0], [0, 0]],  # both empty -> 1
        [[0, 0], [0, 0]],  # prediction but no truth -> 0
    ], np.uint8)
    assert dice_at_half(logits, masks) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert dice_at_half(logits[:1], masks[:1]) == pytest.approx(0.5)
    assert math.isnan(dice_at_half(np.zeros((0, 2, 2)), np.zeros((0, 2, 2))))


def test_dice_at_half_matches_sigmoid_threshold():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 10, 10))
    masks = (rng.random((4, 10, 10)) < 0.3).astype(np.uint8)
    pred = 1 / (1 + np.exp(-logits)) > 0.5
    ref = np.mean([2 * (p & (m > 0)).sum() / (p.sum() + m.sum()) for p, m in zip(pred, masks)])
    assert dice_at_half(logits, masks) == pytest.approx(ref, abs=1e-12)


def test_predict_masks_shape_and_batches():
    torch.manual_seed(2)
    model = UNet(1, width=4, depth=2)
    images = np.random.default_rng(1).random((5, 18, 22)).astype(np.float32)
    a = predict_masks(model, images, CPU, batch_size=2)
    b = predict_masks(model, images, CPU, batch_size=5)
    assert a.shape == (5, 18, 22)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert predict_masks(model, images[:0], CPU).shape == (0, 18, 22)


# ---------------------------------------------------------------- training


def _numpy_dice(logits: np.ndarray, masks: np.ndarray) -> float:
    vals = []
    for lg, m in zip(logits, masks):
        p, t = lg > 0, m > 0
        vals.append(1.0 if p.sum() + t.sum() == 0 else 2 * (p & t).sum() / (p.sum() + t.sum()))
    return float(np.mean(vals))


def test_train_unet_is_deterministic_and_reports_sane_metrics(squares):
    m1, h1, met1 = train_unet(squares, "lesion", FAST, seed=3, device=CPU)
    m2, h2, met2 = train_unet(squares, "lesion", FAST, seed=3, device=CPU)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    pd.testing.assert_frame_equal(h1.drop(columns="seconds"), h2.drop(columns="seconds"))
    for k in ("val_dice", "test_dice", "best_epoch", "epochs_run"):
        assert met1[k] == met2[k]

    assert list(h1.columns) == ["epoch", "train_loss", "val_dice", "seconds"]
    assert len(h1) == met1["epochs_run"] <= FAST.epochs
    assert 1 <= met1["best_epoch"] <= met1["epochs_run"]
    assert 0.0 <= met1["val_dice"] <= 1.0 and 0.0 <= met1["test_dice"] <= 1.0
    assert h1["val_dice"].between(0, 1).all()
    assert np.isfinite(h1["train_loss"]).all()
    assert met1["val_dice"] == h1["val_dice"].max()
    assert met1["best_epoch"] == int(h1.loc[h1["val_dice"].idxmax(), "epoch"])
    assert met1["seed"] == 3 and met1["label"] == "lesion"
    assert met1["settings"]["width"] == FAST.width

    # the returned weights are the best epoch's: its Dice on the validation positives (numpy reference)
    va = squares.positive_indices("val", "lesion")
    te = squares.positive_indices("test", "lesion")
    logits = predict_masks(m1, squares.images[va], CPU)
    assert _numpy_dice(logits, squares.masks[va, 0]) == pytest.approx(met1["val_dice"], abs=1e-12)
    logits = predict_masks(m1, squares.images[te], CPU)
    assert _numpy_dice(logits, squares.masks[te, 0]) == pytest.approx(met1["test_dice"], abs=1e-12)


def test_train_unet_other_seed_gives_other_weights(squares):
    one = UNetSettings(epochs=1, patience=5, lr=3e-3, batch_size=8, width=4, depth=2)
    a = train_unet(squares, "lesion", one, seed=1, device=CPU)[0].state_dict()
    b = train_unet(squares, "lesion", one, seed=2, device=CPU)[0].state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def _expected_stop(val_dice: list[float], patience: int) -> int:
    """Epochs run under 'stop after ``patience`` epochs in a row without a strict improvement'."""
    best, stale = -np.inf, 0
    for epoch, v in enumerate(val_dice, start=1):
        if v > best:
            best, stale = v, 0
        else:
            stale += 1
            if stale >= patience:
                return epoch
    return len(val_dice)


def test_train_unet_early_stopping_keeps_best_epoch_weights(squares):
    """A large learning rate: epoch 1 is the best on the validation set and epoch 2 is worse, so patience 1
    stops after epoch 2 and the returned weights are epoch 1's, not the last ones."""
    settings = UNetSettings(epochs=6, patience=1, lr=0.05, batch_size=8, width=4, depth=2, positives_only=False)
    model, history, metrics = train_unet(squares, "lesion", settings, seed=0, device=CPU)
    assert metrics["epochs_run"] == len(history) == _expected_stop(history["val_dice"].tolist(), 1)
    assert len(history) < settings.epochs  # it did stop early on this data and seed
    assert metrics["best_epoch"] == 1
    assert history["val_dice"].iloc[-1] < history["val_dice"].iloc[0]
    va = squares.positive_indices("val", "lesion")
    dice_now = _numpy_dice(predict_masks(model, squares.images[va], CPU), squares.masks[va, 0])
    assert dice_now == pytest.approx(history["val_dice"].iloc[0], abs=1e-12)
    assert dice_now != pytest.approx(history["val_dice"].iloc[-1], abs=1e-6)


def test_train_unet_without_validation_positives_raises(squares):
    data = CanonicalDataset(squares.manifest.copy(), squares.images, squares.masks, ["lesion"])
    data.manifest.loc[data.manifest["split"] == "val", "lesion"] = 0
    with pytest.raises(ValueError, match="validation"):
        train_unet(data, "lesion", FAST, seed=0, device=CPU)


def test_train_unet_unknown_label_raises(squares):
    with pytest.raises(KeyError, match="nodule"):
        train_unet(squares, "nodule", FAST, seed=0, device=CPU)


def test_run_train_unet_writes_outputs_and_load_unet_round_trips(tmp_path, squares):
    from saliency_trust.data.canonical import BOX_COLUMNS, write_dataset

    manifest, images = tmp_path / "manifest.csv", tmp_path / "images.h5"
    write_dataset(squares.manifest, squares.images, squares.masks, pd.DataFrame(columns=BOX_COLUMNS),
                  ["lesion"], manifest, images, tmp_path / "boxes.csv", "test")
    settings = {"epochs": 1, "patience": 2, "lr": 3e-3, "batch_size": 8, "width": 4, "depth": 2}
    out = tmp_path / "unet"
    run_train_unet(manifest, images, None, settings, 5, "cpu", 1, out / "model.pt", out / "history.csv",
                   out / "metrics.json")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label"] == "lesion" and metrics["epochs_run"] == 1
    assert len(pd.read_csv(out / "history.csv")) == 1
    model = load_unet(out / "model.pt")
    va = squares.positive_indices("val", "lesion")
    logits = predict_masks(model, squares.images[va], CPU)
    assert _numpy_dice(logits, squares.masks[va, 0]) == pytest.approx(metrics["val_dice"], abs=1e-12)
