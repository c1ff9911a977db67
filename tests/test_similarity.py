"""Tests of saliency_trust.metrics.similarity (batched SSIM, Otsu masks, IoU/Dice, pair tables).

Every SSIM value is checked against scikit-image's ``structural_similarity``
(default 7 x 7 uniform window, sample covariance) computed pair by pair; Otsu
foregrounds against ``map > skimage.filters.threshold_otsu(map)``; IoU and Dice
against hand-computed values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.filters import threshold_otsu
from skimage.metrics import structural_similarity

from saliency_trust.metrics.similarity import (
    SIMILARITY_COLUMNS,
    dice,
    iou,
    otsu_iou,
    otsu_mask,
    pair_similarity,
    run_similarity,
    ssim,
)

TOL = 1e-5


def _sk(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Reference: scikit-image on float64 copies, defaults (win_size 7, uniform, sample covariance)."""
    return float(structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), data_range=data_range))


def _blobs(rng: np.random.Generator, h: int, w: int, n: int = 3) -> np.ndarray:
    """A smooth saliency-like map: a sum of Gaussian blobs, scaled to [0, 1]."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((h, w))
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        sd = rng.uniform(1.5, max(h, w) / 4)
        out += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sd**2))
    out -= out.min()
    return out / out.max()


# ---------------------------------------------------------------- SSIM against scikit-image


@pytest.mark.parametrize("shape", [(7, 7), (7, 12), (8, 13), (32, 32), (45, 30), (64, 50)])
def test_ssim_equals_skimage_on_random_maps(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.random((5, *shape))
    # the second map of each pair is partly related to the first, so values span a range
    y = np.clip(0.6 * x + 0.4 * rng.random((5, *shape)), 0, 1)
    got = ssim(x, y, data_range=1.0)
    assert got.shape == (5,) and got.dtype == np.float64
    np.testing.assert_allclose(got, [_sk(a, b) for a, b in zip(x, y)], atol=TOL, rtol=0)


def test_ssim_equals_skimage_on_smooth_thresholded_and_clipped_maps():
    rng = np.random.default_rng(3)
    pairs = []
    for h, w in [(32, 32), (40, 28), (64, 64)]:
        a, b = _blobs(rng, h, w), _blobs(rng, h, w)
        pairs.append((a, b))  # two unrelated smooth maps
        pairs.append((a, np.clip(a + 0.05 * rng.standard_normal((h, w)), 0, 1)))  # a noisy copy
        pairs.append(((a > 0.5).astype(float), (b > 0.5).astype(float)))  # thresholded (binary) maps
        pairs.append((np.clip(1.6 * a - 0.3, 0, 1), np.clip(1.6 * b - 0.3, 0, 1)))  # clipped: flat 0 and 1 areas
        pairs.append(((a > 0.5).astype(float), a))  # a binary map against a smooth one
    for a, b in pairs:
        assert ssim(a, b, 1.0)[0] == pytest.approx(_sk(a, b), abs=TOL)


def test_ssim_float32_and_torch_inputs_equal_skimage_in_float64():
    rng = np.random.default_rng(4)
    x = np.stack([_blobs(rng, 30, 30) for _ in range(3)]).astype(np.float32)
    y = np.stack([_blobs(rng, 30, 30) for _ in range(3)]).astype(np.float32)
    ref = [_sk(a, b) for a, b in zip(x, y)]
    np.testing.assert_allclose(ssim(x, y), ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(ssim(torch.from_numpy(x), torch.from_numpy(y)), ref, atol=TOL, rtol=0)


def test_ssim_single_pair_2d_input_returns_one_value():
    rng = np.random.default_rng(5)
    a, b = rng.random((16, 20)), rng.random((16, 20))
    out = ssim(a, b)
    assert out.shape == (1,)
    assert out[0] == pytest.approx(_sk(a, b), abs=TOL)


@pytest.mark.parametrize("data_range", [0.5, 2.0, 255.0])
def test_ssim_other_data_ranges_equal_skimage(data_range):
    rng = np.random.default_rng(6)
    x = rng.random((3, 20, 24)) * data_range
    y = np.clip(x + 0.2 * data_range * rng.standard_normal(x.shape), 0, data_range)
    np.testing.assert_allclose(ssim(x, y, data_range), [_sk(a, b, data_range) for a, b in zip(x, y)], atol=TOL, rtol=0)


def test_ssim_uint8_maps_with_data_range_255_equal_skimage():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (2, 16, 16), dtype=np.uint8)
    y = rng.integers(0, 256, (2, 16, 16), dtype=np.uint8)
    np.testing.assert_allclose(ssim(x, y, 255.0), [_sk(a, b, 255.0) for a, b in zip(x, y)], atol=TOL, rtol=0)


@pytest.mark.parametrize("shape", [(7, 7), (25, 31)])
def test_ssim_identical_maps_is_one(shape):
    rng = np.random.default_rng(8)
    x = rng.random((4, *shape))
    np.testing.assert_allclose(ssim(x, x.copy()), 1.0, atol=1e-12)


@pytest.mark.parametrize("c", [0.0, 0.3, 1.0])
def test_ssim_equal_constant_maps_is_one(c):
    x = np.full((2, 12, 15), c)
    out = ssim(x, x.copy())
    np.testing.assert_allclose(out, 1.0, atol=1e-12)
    assert out[0] == pytest.approx(_sk(x[0], x[1]), abs=TOL)


def test_ssim_constant_against_structured_is_finite_and_equals_skimage():
    rng = np.random.default_rng(9)
    structured = [rng.random((20, 20)), _blobs(rng, 20, 20), np.full((20, 20), 0.7)]
    for c in (0.0, 0.5, 1.0):
        const = np.full((20, 20), c)
        for s in structured:
            for a, b in ((const, s), (s, const)):
                v = ssim(a, b)[0]
                assert np.isfinite(v)
                assert v == pytest.approx(_sk(a, b), abs=TOL)
    # Hand value, two different constants on a 7 x 7 map (one window, zero variances):
    # (2*0*0.5 + C1) * C2 / ((0 + 0.25 + C1) * C2) = C1 / (0.25 + C1), C1 = 0.01**2
    c1 = 0.01**2
    assert ssim(np.zeros((7, 7)), np.full((7, 7), 0.5))[0] == pytest.approx(c1 / (0.25 + c1), abs=1e-12)


def test_ssim_batch_equals_loop_and_is_independent_of_batch_pairs():
    rng = np.random.default_rng(10)
    x, y = rng.random((11, 18, 22)), rng.random((11, 18, 22))
    loop = np.array([_sk(a, b) for a, b in zip(x, y)])
    np.testing.assert_allclose(ssim(x, y), loop, atol=TOL, rtol=0)
    for bp in (1, 2, 4, 11, 100):
        np.testing.assert_allclose(ssim(x, y, batch_pairs=bp), loop, atol=TOL, rtol=0)


def test_ssim_is_symmetric():
    rng = np.random.default_rng(11)
    x, y = rng.random((3, 15, 15)), rng.random((3, 15, 15))
    np.testing.assert_allclose(ssim(x, y), ssim(y, x), atol=1e-12)


def test_ssim_non_contiguous_views_equal_skimage():
    rng = np.random.default_rng(17)
    x = rng.random((2, 20, 24))
    a, b = x[:, ::2, :], x[:, 1::2, :]  # strided views
    np.testing.assert_allclose(ssim(a, b), [_sk(p, q) for p, q in zip(a, b)], atol=TOL, rtol=0)
    f = np.asfortranarray(x[0])
    assert ssim(f, x[1])[0] == pytest.approx(_sk(f, x[1]), abs=TOL)


def test_ssim_flipped_views_equal_skimage():
    rng = np.random.default_rng(18)
    x = rng.random((2, 16, 16))
    flipped = x[:, ::-1, :]  # np.flip(x, axis=1) is the same view
    np.testing.assert_allclose(ssim(flipped, x), [_sk(p, q) for p, q in zip(flipped, x)], atol=TOL, rtol=0)


def test_ssim_empty_batch_gives_no_values():
    assert ssim(np.zeros((0, 8, 8)), np.zeros((0, 8, 8))).shape == (0,)


def test_ssim_shape_mismatch_raises():
    with pytest.raises(ValueError, match="different shapes"):
        ssim(np.zeros((2, 10, 10)), np.zeros((2, 10, 11)))
    with pytest.raises(ValueError, match="different shapes"):
        ssim(np.zeros((2, 10, 10)), np.zeros((3, 10, 10)))


@pytest.mark.parametrize("shape", [(6, 6), (6, 20), (20, 6), (3, 3)])
def test_ssim_too_small_maps_raise(shape):
    with pytest.raises(ValueError, match="at least 7 x 7"):
        ssim(np.zeros(shape), np.zeros(shape))


def test_ssim_wrong_number_of_dimensions_raises():
    with pytest.raises(ValueError, match="N x H x W"):
        ssim(np.zeros((2, 1, 10, 10)), np.zeros((2, 1, 10, 10)))


@pytest.mark.parametrize("data_range", [0.0, -1.0])
def test_ssim_non_positive_data_range_raises(data_range):
    with pytest.raises(ValueError, match="data_range must be positive"):
        ssim(np.zeros((10, 10)), np.zeros((10, 10)), data_range=data_range)


# ---------------------------------------------------------------- Otsu masks, IoU and Dice


@pytest.mark.parametrize("seed", range(4))
def test_otsu_mask_equals_skimage_threshold(seed):
    rng = np.random.default_rng(seed)
    for m in (rng.random((20, 30)), _blobs(rng, 32, 32), rng.random((16, 16)).astype(np.float32) ** 3):
        np.testing.assert_array_equal(otsu_mask(m), m > threshold_otsu(m))


def test_otsu_mask_two_valued_map_is_the_high_value():
    m = np.array([[0.1, 0.9, 0.9], [0.1, 0.1, 0.9]])
    np.testing.assert_array_equal(otsu_mask(m), m == 0.9)


@pytest.mark.parametrize("c", [0.0, 0.5, 1.0])
def test_otsu_mask_constant_map_is_empty(c):
    out = otsu_mask(np.full((8, 9), c))
    assert out.dtype == bool and out.shape == (8, 9) and not out.any()


def test_otsu_mask_rejects_nan():
    m = np.zeros((5, 5))
    m[2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        otsu_mask(m)


def test_iou_and_dice_hand_computed():
    a = np.array([[1, 1, 0], [1, 0, 0]], bool)  # 3 pixels
    b = np.array([[0, 1, 1], [1, 0, 0]], bool)  # 3 pixels, 2 shared
    # intersection 2, union 4 -> IoU 1/2; Dice 2*2/(3+3) = 2/3
    assert iou(a, b) == pytest.approx(0.5, abs=1e-15)
    assert dice(a, b) == pytest.approx(2 / 3, abs=1e-15)
    # disjoint
    assert iou(a, ~a) == 0.0 and dice(a, ~a) == 0.0
    # identical
    assert iou(a, a) == 1.0 and dice(a, a) == 1.0
    # one empty, one not -> 0
    assert iou(np.zeros((2, 3), bool), a) == 0.0 and dice(np.zeros((2, 3), bool), a) == 0.0


def test_iou_and_dice_of_two_empty_masks_is_one():
    """Documented convention: two empty foregrounds are identical."""
    z = np.zeros((4, 4), bool)
    assert iou(z, z) == 1.0
    assert dice(z, z) == 1.0


def test_iou_and_dice_accept_non_boolean_masks():
    a = np.array([[2, 0], [0, 7]])  # non-zero = foreground
    b = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert iou(a, b) == pytest.approx(1 / 3)
    assert dice(a, b) == pytest.approx(2 * 1 / 4)


@pytest.mark.parametrize("seed", range(5))
def test_dice_equals_2iou_over_1_plus_iou_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    for p in (0.05, 0.3, 0.7):
        a, b = rng.random((20, 20)) < p, rng.random((20, 20)) < p
        j = iou(a, b)
        assert dice(a, b) == pytest.approx(2 * j / (1 + j), abs=1e-12)


def test_otsu_iou_hand_computed():
    x = np.array([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])  # foreground {(0,1), (0,2), (1,2)}
    y = np.array([[0.2, 0.2, 0.8], [0.2, 0.8, 0.8]])  # foreground {(0,2), (1,1), (1,2)}
    # intersection {(0,2), (1,2)} = 2, union 4 -> 1/2
    assert otsu_iou(x, y) == pytest.approx(0.5)
    assert otsu_iou(x, x) == 1.0


def test_otsu_iou_constant_maps():
    const = np.full((6, 6), 0.4)
    assert otsu_iou(const, np.full((6, 6), 0.9)) == 1.0  # two empty foregrounds
    structured = np.zeros((6, 6))
    structured[:2] = 1.0
    assert otsu_iou(const, structured) == 0.0


def test_otsu_iou_equals_skimage_reference_on_random_maps():
    rng = np.random.default_rng(12)
    for _ in range(5):
        x, y = _blobs(rng, 24, 24), _blobs(rng, 24, 24)
        mx, my = x > threshold_otsu(x), y > threshold_otsu(y)
        ref = (mx & my).sum() / (mx | my).sum()
        assert otsu_iou(x, y) == pytest.approx(ref, abs=1e-12)


# ---------------------------------------------------------------- pair tables


def _maps(rng, ids, shape=(16, 16)):
    return {i: _blobs(rng, *shape).astype(np.float32) for i in ids}


def test_pair_similarity_table_matches_references():
    rng = np.random.default_rng(13)
    ids = ["img3", "img1", "img2"]
    a, b = _maps(rng, ids), _maps(rng, ids)
    table = pair_similarity(a, b, "repeatability", "m_r0", "m_r1", "gradcam")
    assert list(table.columns) == SIMILARITY_COLUMNS
    assert len(table) == 2 * len(ids)
    assert set(table["metric"]) == {"ssim", "iou"}
    assert (table["criterion"] == "repeatability").all()
    assert (table["model_a"] == "m_r0").all() and (table["model_b"] == "m_r1").all()
    assert (table["method"] == "gradcam").all()
    for _, row in table.iterrows():
        x, y = a[row["image_id"]], b[row["image_id"]]
        if row["metric"] == "ssim":
            assert row["value"] == pytest.approx(_sk(x, y), abs=TOL)
        else:
            mx, my = x > threshold_otsu(x), y > threshold_otsu(y)
            assert row["value"] == pytest.approx((mx & my).sum() / (mx | my).sum(), abs=1e-12)
    assert sorted(table.loc[table["metric"] == "ssim", "image_id"]) == sorted(ids)


def test_pair_similarity_image_in_only_one_model_raises_naming_it():
    rng = np.random.default_rng(14)
    a = _maps(rng, ["x1", "x2", "x3"])
    b = {k: v for k, v in a.items() if k != "x2"}
    with pytest.raises(KeyError, match="x2"):
        pair_similarity(a, b, "repeatability", "a", "b", "gradcam")


def test_run_similarity_from_cache_files(tmp_path):
    from saliency_trust.storage.maps import write_maps

    rng = np.random.default_rng(15)
    ids = ["i0", "i1", "i2", "i3"]
    models, methods, paths, store = [], [], [], {}
    for model in ("cnn_r0", "cnn_r1", "resnet_r0"):
        for method in ("gradcam", "ig"):
            maps = np.stack([_blobs(rng, 16, 16) for _ in ids]).astype(np.float32)
            path = tmp_path / model / f"{method}.h5"
            write_maps(path, ids, maps, maps[:, None], method, {}, "sha", {"label": "abnormal"})
            models.append(model)
            methods.append(method)
            paths.append(str(path))
            store[model, method] = dict(zip(ids, maps))
    pairs = [["repeatability", "cnn_r0", "cnn_r1"], ["reproducibility", "cnn_r0", "resnet_r0"]]
    out = tmp_path / "similarity.csv"
    run_similarity(paths, models, methods, pairs, 1.0, out)
    table = pd.read_csv(out, dtype={"image_id": str})
    assert list(table.columns) == SIMILARITY_COLUMNS
    assert len(table) == 2 * 2 * len(ids) * 2  # pairs x methods x images x metrics
    for _, row in table[table["metric"] == "ssim"].iterrows():
        x = store[row["model_a"], row["method"]][row["image_id"]]
        y = store[row["model_b"], row["method"]][row["image_id"]]
        assert row["value"] == pytest.approx(_sk(x, y), abs=TOL)


def test_run_similarity_without_any_pair_raises(tmp_path):
    from saliency_trust.storage.maps import write_maps

    maps = np.random.default_rng(16).random((2, 8, 8)).astype(np.float32)
    path = tmp_path / "a.h5"
    write_maps(path, ["i0", "i1"], maps, maps[:, None], "gradcam", {}, "sha", {})
    with pytest.raises(ValueError, match="no pair"):
        run_similarity([str(path)], ["a"], ["gradcam"], [["repeatability", "a", "b"]], 1.0, tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


def test_torch_path_used_on_gpus_equals_skimage_on_the_cpu():
    """The torch implementation (taken for CUDA tensors) computed on CPU tensors equals scikit-image."""
    import torch

    from saliency_trust.metrics.similarity import _ssim_batch_torch

    rng = np.random.default_rng(5)
    a, b = rng.random((6, 20, 31)), rng.random((6, 20, 31))
    b[0] = a[0]
    b[1] = 0.25  # constant map
    ours = _ssim_batch_torch(torch.from_numpy(a), torch.from_numpy(b), 1.0).numpy()
    ref = [structural_similarity(p, q, data_range=1.0) for p, q in zip(a, b)]
    np.testing.assert_allclose(ours, ref, atol=1e-10, rtol=0)


# ---------------------------------------------------------------- the CPU path (flat window sums, batches, strips)


def _smooth(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Smooth random maps in [0, 1], as benchmarks/ssim_speed.py makes them (blurred noise, clipped)."""
    from scipy.ndimage import gaussian_filter

    raw = np.abs(gaussian_filter(rng.standard_normal((n, h, w)), sigma=(0, 2, 2)))
    return np.clip(raw / np.percentile(raw.reshape(n, -1), 99, axis=1)[:, None, None], 0, 1)


def test_window_sums_flat_equals_direct_sums():
    from saliency_trust.metrics.similarity import _window_sums_flat

    rng = np.random.default_rng(30)
    src = rng.random(200)
    for step in (1, 3, 20):
        tmp, out = np.full(200, np.nan), np.full(200, np.nan)
        got = _window_sums_flat(src, step, tmp, out)
        want = [src[i : i + 7 * step : step].sum() for i in range(200 - 6 * step)]
        assert got.shape == (200 - 6 * step,)
        np.testing.assert_allclose(got, want, rtol=1e-14)


@pytest.mark.parametrize(
    "shape", [(32, 32), (64, 64), (128, 128), (224, 224), (299, 299), (512, 512), (33, 47), (7, 300), (301, 9)]
)
def test_ssim_cpu_path_equals_skimage_at_map_sizes(shape):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    n = 2 if shape[0] * shape[1] > 50000 else 5
    x = _smooth(rng, n, *shape)
    y = np.clip(0.5 * x + 0.5 * _smooth(rng, n, *shape), 0, 1)
    y[0] = _smooth(rng, 1, *shape)[0]  # an unrelated pair too
    np.testing.assert_allclose(ssim(x, y), [_sk(a, b) for a, b in zip(x, y)], atol=1e-10, rtol=0)


@pytest.mark.parametrize("shape", [(32, 32), (224, 224), (61, 45)])
def test_ssim_float32_maps_within_1e6_of_skimage_on_the_same_float32_maps(shape):
    """float32 maps are computed in float64: they equal scikit-image on float64 copies, and scikit-image on
    the float32 maps themselves (which it keeps in float32) within its own rounding."""
    rng = np.random.default_rng(31)
    x = _smooth(rng, 3, *shape).astype(np.float32)
    y = _smooth(rng, 3, *shape).astype(np.float32)
    got = ssim(x, y)
    np.testing.assert_allclose(got, [_sk(a, b) for a, b in zip(x, y)], atol=1e-10, rtol=0)
    np.testing.assert_allclose(got, [structural_similarity(a, b, data_range=1.0) for a, b in zip(x, y)], atol=1e-6)


@pytest.mark.parametrize("pixels", [60, 200, 1000, 5000])
def test_ssim_cpu_batches_and_row_strips_equal_skimage(monkeypatch, pixels):
    """Small working sets force one pair at a time and large maps into strips of rows (overlapping by 6)."""
    import saliency_trust.metrics.similarity as similarity

    rng = np.random.default_rng(32)
    x = _smooth(rng, 7, 53, 37)
    y = np.clip(0.7 * x + 0.3 * rng.random(x.shape), 0, 1)
    y[3] = 0.4  # a constant map in the middle of a batch
    x[5] = y[5] = 0.8  # two equal constant maps
    ranges = np.linspace(0.8, 2.0, 7)
    ref = [_sk(a, b) for a, b in zip(x, y)]
    ref_ranges = [_sk(a, b, r) for a, b, r in zip(x, y, ranges)]
    unpatched = ssim(x, y)
    monkeypatch.setattr(similarity, "_SSIM_CPU_PIXELS", pixels)
    for bp in (1, 2, 3, 64):
        np.testing.assert_allclose(ssim(x, y, batch_pairs=bp), ref, atol=1e-10, rtol=0)
        np.testing.assert_allclose(ssim(x, y, ranges, batch_pairs=bp), ref_ranges, atol=1e-10, rtol=0)
        np.testing.assert_allclose(ssim(x, y, batch_pairs=bp), unpatched, atol=1e-12, rtol=0)
    assert ssim(x, y)[5] == pytest.approx(1.0, abs=1e-12)


def test_ssim_large_constant_maps_go_through_strips_unchanged():
    rng = np.random.default_rng(33)
    const, other = np.full((300, 310), 0.3), _smooth(rng, 1, 300, 310)[0]
    out = ssim(np.stack([const, const, other]), np.stack([const.copy(), other, const]))
    assert out[0] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(out[1:], [_sk(const, other), _sk(other, const)], atol=1e-10, rtol=0)


def test_ssim_nan_in_one_pair_leaves_the_other_pairs_unchanged():
    """Pairs share the flat working buffers; a window sum never reads another pair's pixels."""
    rng = np.random.default_rng(34)
    x, y = rng.random((4, 12, 14)), rng.random((4, 12, 14))
    x[1, 5, 6] = np.nan
    out = ssim(x, y)
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2, 3]], [_sk(x[i], y[i]) for i in (0, 2, 3)], atol=1e-10, rtol=0)


def test_ssim_batch_pairs_must_be_positive():
    with pytest.raises(ValueError, match="batch_pairs"):
        ssim(np.zeros((2, 10, 10)), np.zeros((2, 10, 10)), batch_pairs=0)


@pytest.mark.parametrize("shape", [(7, 7), (32, 32), (45, 30), (224, 224)])
def test_torch_path_equals_skimage_at_map_sizes_with_one_data_range_per_pair(shape):
    """The batched torch implementation (CUDA tensors), on CPU tensors: one range and one range per pair."""
    from saliency_trust.metrics.similarity import _ssim_batch_torch

    rng = np.random.default_rng(35)
    a = _smooth(rng, 3, *shape).astype(np.float32)
    b = np.clip(0.6 * a + 0.4 * _smooth(rng, 3, *shape), 0, 1).astype(np.float32)
    b[2] = 0.5
    ranges = np.array([1.0, 0.7, 2.5])
    got = _ssim_batch_torch(torch.from_numpy(a), torch.from_numpy(b), 1.0).numpy()
    np.testing.assert_allclose(got, [_sk(p, q) for p, q in zip(a, b)], atol=1e-10, rtol=0)
    per_pair = torch.from_numpy(ranges[:, None, None])
    got = _ssim_batch_torch(torch.from_numpy(a), torch.from_numpy(b), per_pair).numpy()
    np.testing.assert_allclose(got, [_sk(p, q, r) for p, q, r in zip(a, b, ranges)], atol=1e-10, rtol=0)


# ---------------------------------------------------------------- raw maps (metrics.similarity_maps: raw)


def test_ssim_with_one_data_range_per_pair_equals_skimage_per_pair():
    from skimage.metrics import structural_similarity

    from saliency_trust.metrics.similarity import pair_data_range, ssim

    rng = np.random.default_rng(21)
    x = rng.normal(0, 3, (5, 16, 16))
    y = x + rng.normal(0, 1, (5, 16, 16))
    ranges = pair_data_range(x, y)
    ref = [structural_similarity(x[i], y[i], data_range=ranges[i]) for i in range(5)]
    np.testing.assert_allclose(ssim(x, y, ranges), ref, rtol=1e-10)
    assert ranges[0] == pytest.approx(max(x[0].max(), y[0].max()) - min(x[0].min(), y[0].min()))
    with pytest.raises(ValueError, match="data ranges for 5 pairs"):
        ssim(x, y, ranges[:3])


def test_raw_comparison_keeps_signs_and_is_scale_free():
    from saliency_trust.metrics.similarity import compare_maps, signed_raw

    rng = np.random.default_rng(22)
    raw = rng.normal(0, 1, (3, 2, 16, 16))
    summed = signed_raw(raw)
    np.testing.assert_allclose(summed, raw.sum(axis=1), atol=1e-5)  # no absolute values
    # a map and its sign flip: identical after abs-post-processing, dissimilar as raw maps
    assert compare_maps(summed, -summed, "raw").max() < 0.9
    # raw SSIM does not depend on the attribution scale (each pair's own range); processed SSIM would
    np.testing.assert_allclose(
        compare_maps(summed, summed + 0.1, "raw"), compare_maps(1000 * summed, 1000 * (summed + 0.1), "raw"), rtol=1e-6
    )
    with pytest.raises(ValueError, match="metrics.similarity_maps"):
        compare_maps(summed, summed, "abs")
