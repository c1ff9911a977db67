"""Tests of saliency_trust.models.unet (the U-Net high baseline; Arun et al., methods "U-Net").

Shapes for sizes the poolings do not divide; the soft Dice, focal and uint8
output against hand-computed or torchvision values; balanced sampling; early
stopping on the validation loss with the learning rate reduced on a plateau;
and training on a tiny synthetic dataset (bright squares as the masks):
deterministic per seed, the best epoch's weights kept, resumable from its
epoch checkpoint, and two seeds giving nearly the same maps.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from saliency_trust.data.canonical import CanonicalDataset
from saliency_trust.metrics.similarity import ssim
from saliency_trust.models.train import EpochCheckpoint, fit_epochs
from saliency_trust.models.unet import (
    PlateauStopping,
    UNet,
    UNetSettings,
    balanced_loader,
    dice_at_half,
    focal_dice_loss,
    load_unet,
    logits_to_map,
    predict_masks,
    run_train_unet,
    soft_dice_loss,
    train_unet,
    validation_loss,
)

CPU = torch.device("cpu")
FAST = UNetSettings(epochs=3, patience=5, lr=3e-3, batch_size=8, width=4, depth=2, init_prior=0.01)


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


def test_settings_defaults_are_the_schema_defaults():
    """The dataclass and the config schema agree on every default (the paper's recipe); ``output`` is the
    maps rule's and not a training setting."""
    import dataclasses

    import yaml
    from conftest import REPO

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]["baselines"]["properties"]["unet"]["properties"]
    defaults = {k: v["default"] for k, v in props.items()}
    assert defaults.pop("output") == "uint8"
    assert defaults == dataclasses.asdict(UNetSettings())
    assert all(v.get("description") for v in props.values())  # every option is documented
    paper = UNetSettings()
    assert (
        paper.epochs,
        paper.patience,
        paper.lr,
        paper.batch_size,
        paper.lr_factor,
        paper.lr_patience,
        paper.positives_only,
    ) == (75, 15, 1e-4, 4, 0.1, 3, False)


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
    assert soft_dice_loss(torch.full((1, 1, 2, 2), -100.0), torch.zeros(1, 1, 2, 2)).item() == pytest.approx(
        0, abs=1e-6
    )
    # the batch value is the mean of the per-image losses: (0.5 + 0) / 2
    both = soft_dice_loss(torch.cat([half, perfect]), torch.cat([t1, t2]))
    assert both.item() == pytest.approx(0.25, abs=1e-6)
    # eps = 0: plain soft Dice, 1 - 2 * 0.5 / 3
    assert soft_dice_loss(half, t1, eps=0.0).item() == pytest.approx(1 - 1 / 3, abs=1e-6)


def _focal_numpy(logits: np.ndarray, target: np.ndarray, alpha: float, gamma: float) -> float:
    """Focal loss of Lin et al. (2017), mean over pixels: alpha_t (1 - p_t)^gamma x cross-entropy."""
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    ce = -(target * np.log(p) + (1 - target) * np.log(1 - p))
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target) if alpha >= 0 else 1.0
    return float(np.mean(alpha_t * (1 - p_t) ** gamma * ce))


def test_focal_term_hand_computed_and_equal_to_torchvision():
    from torchvision.ops import sigmoid_focal_loss

    ln3 = math.log(3.0)
    logits = torch.tensor([[[[ln3, -ln3], [0.0, 0.0]]]], dtype=torch.float64)  # p = 0.75, 0.25, 0.5, 0.5
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]], dtype=torch.float64)
    only_focal = UNetSettings(dice_weight=0.0)  # alpha 0.25, gamma 2 (the defaults)
    # p_t = 0.75, 0.75, 0.5, 0.5; alpha_t = 0.25, 0.75, 0.25, 0.75
    hand = (
        0.25 * 0.0625 * math.log(4 / 3)
        + 0.75 * 0.0625 * math.log(4 / 3)
        + 0.25 * 0.25 * math.log(2)
        + 0.75 * 0.25 * math.log(2)
    ) / 4
    assert focal_dice_loss(logits, target, only_focal).item() == pytest.approx(hand, abs=1e-12)
    # the full loss adds the Dice term: 0.3 (see test_soft_dice_loss_hand_computed)
    assert focal_dice_loss(logits, target, UNetSettings()).item() == pytest.approx(hand + 0.3, abs=1e-12)

    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (3, 1, 6, 5))
    t = (rng.random((3, 1, 6, 5)) < 0.3).astype(np.float64)
    for alpha, gamma in [(0.25, 2.0), (0.6, 0.0), (-1.0, 1.5)]:
        s = UNetSettings(focal_alpha=alpha, focal_gamma=gamma, dice_weight=0.0)
        got = focal_dice_loss(torch.from_numpy(z), torch.from_numpy(t), s).item()
        assert got == pytest.approx(_focal_numpy(z, t, alpha, gamma), rel=1e-10)
        ref = sigmoid_focal_loss(torch.from_numpy(z), torch.from_numpy(t), alpha=alpha, gamma=gamma, reduction="mean")
        assert got == pytest.approx(ref.item(), rel=1e-12)


def test_batch_dice_is_one_dice_over_the_batch_and_finite_on_negatives():
    half = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    t1 = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    empty_pred, empty = torch.full((1, 1, 2, 2), -100.0), torch.zeros(1, 1, 2, 2)
    # per image: (0.5 + 0) / 2; over the batch: inter 0.5, sum p 2, sum t 1 -> 1 - (1 + 1) / (3 + 1) = 0.5
    assert soft_dice_loss(torch.cat([half, empty_pred]), torch.cat([t1, empty])).item() == pytest.approx(0.25, abs=1e-6)
    assert soft_dice_loss(torch.cat([half, empty_pred]), torch.cat([t1, empty]), batch=True).item() == pytest.approx(
        0.5, abs=1e-6
    )
    # a batch of negatives only: 1 - 1 / (sum p + 1), finite, with a finite gradient towards p = 0
    logits = torch.zeros(2, 1, 2, 2, requires_grad=True)
    loss = focal_dice_loss(logits, torch.zeros(2, 1, 2, 2), UNetSettings(dice_weight=1.0))
    dice = 1 - 1 / (8 * 0.5 + 1)
    focal = 0.75 * 0.25 * math.log(2)
    assert loss.item() == pytest.approx(focal + dice, abs=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad > 0).all()


def test_validation_loss_is_the_training_loss_over_the_whole_set():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (4, 6, 6)).astype(np.float32)
    masks = (rng.random((4, 6, 6)) < 0.2).astype(np.float32)
    masks[2] = 0  # a negative
    s = UNetSettings()
    ref = _focal_numpy(logits, masks, 0.25, 2.0)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    ref += 1 - (2 * (p * masks).sum() + 1) / (p.sum() + masks.sum() + 1)
    assert validation_loss(logits, masks, s) == pytest.approx(ref, rel=1e-10)


def test_uint8_output_is_rounded_255_sigmoid():
    from scipy.special import expit

    ln3 = math.log(3.0)
    hand = logits_to_map(np.array([[0.0, ln3, -40.0, 40.0]]), "uint8")
    np.testing.assert_array_equal(hand, np.array([[128, 191, 0, 255]], np.float32) / np.float32(255))
    rng = np.random.default_rng(2)
    logits = (rng.normal(0, 4, (3, 16, 16))).astype(np.float32)
    got = logits_to_map(logits, "uint8")
    assert got.dtype == np.float32 and got.shape == logits.shape
    np.testing.assert_array_equal(got, (np.round(255 * expit(logits.astype(np.float64))) / 255).astype(np.float32))
    k = got.astype(np.float64) * 255
    np.testing.assert_allclose(k, np.round(k), atol=1e-4)  # values k / 255
    prob = logits_to_map(logits, "probability")
    np.testing.assert_allclose(prob, expit(logits.astype(np.float64)), rtol=1e-6)
    assert np.abs(got - prob).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ValueError, match="output"):
        logits_to_map(logits, "uint16")


def test_balanced_loader_draws_positives_and_negatives_equally_and_is_seeded():
    n, size = 40, 4
    positive = np.arange(n) < 4  # 10 % positives
    images = np.arange(n, dtype=np.float32)[:, None, None] * np.ones((1, size, size), np.float32)
    masks = np.zeros((n, size, size), np.float32)
    masks[positive, 1:3, 1:3] = 1

    def draws(seed, epochs=25):
        """Indices of the images drawn in ``epochs`` epochs; each batch's masks belong to its images."""
        loader = balanced_loader(images, masks, positive, 8, seed)
        ids = []
        for _ in range(epochs):
            for x, y in loader:
                assert x.shape[1:] == y.shape[1:] == (1, size, size)
                idx = x[:, 0, 0, 0].long()
                np.testing.assert_array_equal(y.numpy()[:, 0], masks[idx.numpy()])
                ids.append(idx)
        return torch.cat(ids).numpy()

    a = draws(0)
    assert len(a) == 25 * n
    frac = positive[a].mean()
    assert 0.44 < frac < 0.56  # 1000 draws: +-3.8 standard deviations around 0.5 (uniform sampling: 0.1)
    assert set(a[positive[a]]) == set(range(4))  # every positive is drawn
    np.testing.assert_array_equal(a, draws(0))
    assert not np.array_equal(a, draws(1))


def _fake_epochs(losses):
    """A model whose single weight is the epoch number, an SGD optimizer and a run_epoch reporting ``losses``."""
    model = torch.nn.Linear(1, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)

    def run_epoch(epoch: int) -> dict:
        with torch.no_grad():
            model.weight.fill_(epoch)
        return {"epoch": epoch, "val_loss": losses[epoch - 1], "lr": opt.param_groups[0]["lr"]}

    return model, opt, run_epoch


LOSSES = [0.5, 0.4, float("nan"), 0.41, 0.42, 0.3]


def test_early_stopping_on_val_loss_keeps_the_best_epoch_and_reduces_the_lr():
    """Patience 3, lr patience 1: epoch 2 is the lowest loss; epochs 3 (NaN), 4 and 5 are not lower, so the
    learning rate drops x0.1 after epoch 4 (more than 1 epoch without improvement) and training stops after
    epoch 5; the weights are epoch 2's."""
    model, opt, run_epoch = _fake_epochs(LOSSES)
    stopper = PlateauStopping(3, opt, lr_factor=0.1, lr_patience=1)
    history = fit_epochs(model, opt, stopper, 10, run_epoch, "val_loss", [])
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert [h["lr"] for h in history] == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.1])
    assert stopper.best_epoch == 2 and -stopper.best == pytest.approx(0.4)
    assert model.weight.item() == 2.0


def test_early_stopping_resumes_the_lr_schedule_from_the_checkpoint(tmp_path):
    """Killed after epoch 3 (one epoch without improvement), the resumed run reduces the learning rate after
    epoch 4 exactly like an uninterrupted one: the scheduler's count travels in the checkpoint."""
    ref_model, ref_opt, run_epoch = _fake_epochs(LOSSES)
    reference = fit_epochs(ref_model, ref_opt, PlateauStopping(3, ref_opt, 0.1, 1), 10, run_epoch, "val_loss", [])

    ck = EpochCheckpoint(tmp_path / "m.pt", {"test": 1})
    model, opt, run_epoch = _fake_epochs(LOSSES)
    fit_epochs(model, opt, PlateauStopping(3, opt, 0.1, 1), 3, run_epoch, "val_loss", [], ck)  # "killed"
    saved = torch.load(ck.path, weights_only=True)
    assert saved["epoch"] == 3 and saved["stopper"]["scheduler"]["num_bad_epochs"] == 1
    model, opt, run_epoch = _fake_epochs(LOSSES)  # a fresh process
    resumed = fit_epochs(model, opt, PlateauStopping(3, opt, 0.1, 1), 10, run_epoch, "val_loss", [], ck)
    assert [h["epoch"] for h in resumed] == [h["epoch"] for h in reference] == [1, 2, 3, 4, 5]
    assert [h["lr"] for h in resumed] == [h["lr"] for h in reference]
    np.testing.assert_array_equal([h["val_loss"] for h in resumed], [h["val_loss"] for h in reference])
    assert model.weight.item() == ref_model.weight.item() == 2.0


def test_dice_at_half_hand_computed():
    logits = np.array(
        [
            [[1.0, -1.0], [0.0, 2.0]],  # pred {(0,0), (1,1)}; a logit of exactly 0 (p = 0.5) is not > 0.5
            [[-1.0, -1.0], [-1.0, -1.0]],  # pred empty
            [[3.0, -1.0], [-1.0, -1.0]],  # pred {(0,0)}
        ]
    )
    masks = np.array(
        [
            [[1, 1], [0, 0]],  # inter 1, total 2 + 2 -> 2/4 = 0.5
            [[0, 0], [0, 0]],  # both empty -> 1
            [[0, 0], [0, 0]],  # prediction but no truth -> 0
        ],
        np.uint8,
    )
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

    assert list(h1.columns) == ["epoch", "train_loss", "val_dice", "val_loss", "lr", "seconds"]
    assert len(h1) == met1["epochs_run"] <= FAST.epochs
    assert 1 <= met1["best_epoch"] <= met1["epochs_run"]
    assert 0.0 <= met1["val_dice"] <= 1.0 and 0.0 <= met1["test_dice"] <= 1.0
    assert h1["val_dice"].between(0, 1).all()
    assert np.isfinite(h1["train_loss"]).all() and np.isfinite(h1["val_loss"]).all()
    assert met1["val_loss"] == h1["val_loss"].min()  # early stopping on the validation loss
    assert met1["best_epoch"] == int(h1.loc[h1["val_loss"].idxmin(), "epoch"])
    assert met1["val_dice"] == h1.loc[h1["epoch"] == met1["best_epoch"], "val_dice"].item()
    assert met1["seed"] == 3 and met1["label"] == "lesion"
    assert met1["settings"]["width"] == FAST.width
    train = squares.indices("train")
    assert met1["n_train"] == len(train) and met1["n_train_positive"] == int(squares.labels()[train, 0].sum())

    # the returned weights are the best epoch's: its loss on all validation images, its Dice on the positives
    va_all = squares.indices("val")
    va = squares.positive_indices("val", "lesion")
    te = squares.positive_indices("test", "lesion")
    loss = validation_loss(
        predict_masks(m1, squares.images[va_all], CPU), squares.masks[va_all, 0].astype(np.float32), FAST
    )
    assert loss == pytest.approx(met1["val_loss"], abs=1e-12)
    logits = predict_masks(m1, squares.images[va], CPU)
    assert _numpy_dice(logits, squares.masks[va, 0]) == pytest.approx(met1["val_dice"], abs=1e-12)
    logits = predict_masks(m1, squares.images[te], CPU)
    assert _numpy_dice(logits, squares.masks[te, 0]) == pytest.approx(met1["test_dice"], abs=1e-12)


def test_train_unet_other_seed_gives_other_weights(squares):
    one = UNetSettings(epochs=1, patience=5, lr=3e-3, batch_size=8, width=4, depth=2)
    a = train_unet(squares, "lesion", one, seed=1, device=CPU)[0].state_dict()
    b = train_unet(squares, "lesion", one, seed=2, device=CPU)[0].state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def _expected_stop(val_loss: list[float], patience: int) -> int:
    """Epochs run under 'stop after ``patience`` epochs in a row without a strictly lower loss'."""
    best, stale = np.inf, 0
    for epoch, v in enumerate(val_loss, start=1):
        if v < best:
            best, stale = v, 0
        else:
            stale += 1
            if stale >= patience:
                return epoch
    return len(val_loss)


def test_train_unet_early_stopping_keeps_best_val_loss_weights(squares):
    """A large learning rate makes the validation loss jump about; patience 2 stops before the last epoch and
    the returned weights are those of the lowest validation loss, not the last ones."""
    settings = UNetSettings(epochs=10, patience=2, lr=0.05, batch_size=8, width=4, depth=2, lr_patience=5)
    model, history, metrics = train_unet(squares, "lesion", settings, seed=2, device=CPU)
    assert metrics["epochs_run"] == len(history) == _expected_stop(history["val_loss"].tolist(), 2)
    assert len(history) < settings.epochs  # it did stop early on this data and seed
    best = int(history["val_loss"].idxmin())
    assert metrics["best_epoch"] == best + 1 < len(history)
    va = squares.indices("val")
    loss_now = validation_loss(
        predict_masks(model, squares.images[va], CPU), squares.masks[va, 0].astype(np.float32), settings
    )
    assert loss_now == pytest.approx(history["val_loss"].iloc[best], abs=1e-12)
    assert loss_now != pytest.approx(history["val_loss"].iloc[-1], abs=1e-6)


def test_train_unet_lr_drops_x_lr_factor_after_a_plateau(squares):
    """lr_patience 0: every epoch without a lower validation loss multiplies the learning rate by lr_factor."""
    settings = UNetSettings(epochs=6, patience=6, lr=0.05, batch_size=8, width=4, depth=2, lr_factor=0.5, lr_patience=0)
    _, history, _ = train_unet(squares, "lesion", settings, seed=0, device=CPU)
    expected, lr, best = [], settings.lr, np.inf
    for v in history["val_loss"]:
        expected.append(lr)
        if v < best * (1 - 1e-4):  # ReduceLROnPlateau's default relative threshold
            best = v
        else:
            lr *= settings.lr_factor
    assert history["lr"].tolist() == pytest.approx(expected)
    assert history["lr"].nunique() > 1  # the schedule did act on this data and seed


def test_train_unet_resumes_from_its_epoch_checkpoint(tmp_path, squares):
    """Killed after epoch 2 (simulated: a run of 2 epochs leaves its checkpoint), training resumes at epoch 3
    and ends with the weights, history and learning rates of an uninterrupted run."""
    settings = UNetSettings(epochs=5, patience=5, lr=0.05, batch_size=8, width=4, depth=2, lr_factor=0.5, lr_patience=0)
    ref, ref_hist, ref_met = train_unet(squares, "lesion", settings, seed=4, device=CPU)
    assert (ref_hist["lr"].iloc[3:] != settings.lr).any()  # the schedule acts after the resume
    ck = EpochCheckpoint(tmp_path / "model.pt", {"arch": "unet", "test": True})
    short = UNetSettings(**{**settings.__dict__, "epochs": 2})
    train_unet(squares, "lesion", short, seed=4, device=CPU, checkpoint=ck)
    assert ck.path.exists()
    model, hist, met = train_unet(squares, "lesion", settings, seed=4, device=CPU, checkpoint=ck)
    pd.testing.assert_frame_equal(hist.drop(columns="seconds"), ref_hist.drop(columns="seconds"))
    s1, s2 = model.state_dict(), ref.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert met["best_epoch"] == ref_met["best_epoch"] and met["val_loss"] == ref_met["val_loss"]


def test_two_seeds_give_nearly_the_same_maps_on_easy_data():
    """The high baseline of repeatability: on bright squares two U-Nets trained with different seeds give
    uint8 maps with a mean SSIM (data range 1) above 0.9, and they localize the squares (PR-AUC)."""
    from saliency_trust.metrics.utility import pr_auc

    data = _square_dataset(n=100, size=32, seed=1)
    settings = UNetSettings(epochs=12, patience=12, lr=3e-3, batch_size=8, width=4, depth=2, init_prior=0.01)
    te = data.positive_indices("test", "lesion")
    maps = [
        logits_to_map(predict_masks(train_unet(data, "lesion", settings, seed, CPU)[0], data.images[te], CPU), "uint8")
        for seed in (11, 12)
    ]
    assert ssim(maps[0], maps[1], data_range=1.0).mean() > 0.9
    assert min(np.mean([pr_auc(m, g) for m, g in zip(mm, data.masks[te, 0])]) for mm in maps) > 0.9


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
    write_dataset(
        squares.manifest,
        squares.images,
        squares.masks,
        pd.DataFrame(columns=BOX_COLUMNS),
        ["lesion"],
        manifest,
        images,
        tmp_path / "boxes.csv",
        "test",
    )
    # the config section as the rule passes it; ``output`` concerns the maps only
    settings = {"epochs": 1, "patience": 2, "lr": 3e-3, "batch_size": 8, "width": 4, "depth": 2, "output": "uint8"}
    out = tmp_path / "unet"
    run_train_unet(
        manifest, images, None, settings, 5, "cpu", 1, out / "model.pt", out / "history.csv", out / "metrics.json"
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label"] == "lesion" and metrics["epochs_run"] == 1
    assert "output" not in metrics["settings"]
    assert len(pd.read_csv(out / "history.csv")) == 1
    assert not (out / "model.resume.pt").exists()
    model = load_unet(out / "model.pt")
    va = squares.positive_indices("val", "lesion")
    logits = predict_masks(model, squares.images[va], CPU)
    assert _numpy_dice(logits, squares.masks[va, 0]) == pytest.approx(metrics["val_dice"], abs=1e-12)


@pytest.mark.parametrize("output", ["uint8", "probability"])
def test_run_unet_map_writes_the_requested_output(tmp_path, squares, output):
    from saliency_trust.data.canonical import BOX_COLUMNS, load_dataset, write_dataset
    from saliency_trust.saliency.baselines import run_unet_map
    from saliency_trust.storage.maps import read_maps

    manifest, images = tmp_path / "manifest.csv", tmp_path / "images.h5"
    write_dataset(
        squares.manifest,
        squares.images,
        squares.masks,
        pd.DataFrame(columns=BOX_COLUMNS),
        ["lesion"],
        manifest,
        images,
        tmp_path / "boxes.csv",
        "test",
    )
    torch.manual_seed(0)
    model = UNet(1, 4, 2)
    torch.save(
        {"arch": "unet", "settings": {"width": 4, "depth": 2}, "label": "lesion", "state_dict": model.state_dict()},
        tmp_path / "model.pt",
    )
    run_unet_map(manifest, images, tmp_path / "model.pt", None, "cpu", 1, tmp_path / "UNET-r1.h5", output=output)
    cache = read_maps(tmp_path / "UNET-r1.h5", with_raw=True)
    te = squares.positive_indices("test", "lesion")
    assert list(cache.image_ids) == squares.manifest["image_id"].iloc[te].tolist()
    stored = load_dataset(manifest, images).images[te]  # the images as the canonical store holds them
    logits = predict_masks(model, stored, CPU)
    np.testing.assert_array_equal(cache.raw[:, 0], logits)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = np.round(255 * p) / 255 if output == "uint8" else p
    np.testing.assert_allclose(cache.maps, expected, rtol=0, atol=1e-7)
    assert json.loads(cache.attrs["target"])["output"] == output
