"""Saliency methods, post-processing and the HDF5 cache (docs/saliency.md)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam

from saliency_trust.models.registry import build_model, get_architecture, get_submodule
from saliency_trust.saliency.compute import compute_saliency
from saliency_trust.saliency.methods import (
    METHODS,
    TargetOutput,
    get_method,
    resolve_params,
)
from saliency_trust.saliency.postprocess import abs_sum_percentile, min_max
from saliency_trust.storage.maps import read_maps, write_maps


def _model(arch="simple_cnn", seed=0, classes=1):
    torch.manual_seed(seed)
    model = build_model(arch, classes).eval()
    # Non-trivial BatchNorm statistics so that eval mode is not the identity.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def _images(n=3, size=32, seed=0):
    return np.random.default_rng(seed).random((n, size, size), dtype=np.float32)


@pytest.mark.parametrize("arch", ["simple_cnn", "tiny_resnet"])
def test_integrated_gradients_completeness_within_one_percent(arch, trained_models, tiny_dataset):
    # Sundararajan et al.: attributions sum to f(x) - f(baseline). With the papers' 25 steps the
    # quadrature error on these small ReLU networks is 1-15 %; 256 steps bring it under 1 %.
    model = trained_models[arch]
    images = tiny_dataset.images[tiny_dataset.positive_indices("test", "abnormal")[:6]]
    params = resolve_params("IG", {"n_steps": 256})
    raw, _ = compute_saliency(model, arch, images, "IG", params, target=0)
    x = torch.from_numpy(images).unsqueeze(1)
    with torch.no_grad():
        delta = (model(x) - model(torch.zeros_like(x)))[:, 0].numpy()
    sums = raw.reshape(len(raw), -1).sum(axis=1)
    scale = np.abs(delta).mean()
    assert scale > 0.1  # a meaningful output change, so 1 % is a real bound
    np.testing.assert_allclose(sums, delta, rtol=0.01, atol=0.01 * scale)


def test_grad_equals_autograd_gradient_of_the_logit():
    model = _model(classes=2)
    images = _images()
    raw, maps = compute_saliency(model, "simple_cnn", images, "GRAD", {}, target=1)
    x = torch.from_numpy(images).unsqueeze(1).requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[:, 1].sum(), x)
    np.testing.assert_allclose(raw, g.numpy(), rtol=1e-5, atol=1e-7)
    assert maps.shape == (3, 32, 32) and maps.min() >= 0 and maps.max() <= 1


def _reference_gradcam(model, layer, x, target):
    """Grad-CAM by hand (Selvaraju et al. 2017): ReLU(sum_k mean(dy/dA_k) A_k), bilinear upsampling."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    y = model(x)[:, target].sum()
    handle.remove()
    (grads,) = torch.autograd.grad(y, store["a"])
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * store["a"]).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False).detach()


@pytest.mark.parametrize("arch", ["simple_cnn", "tiny_resnet"])
def test_gradcam_equals_hand_computed_and_captum_reference(arch):
    model = _model(arch)
    images = _images(4)
    raw, maps = compute_saliency(model, arch, images, "GCAM", resolve_params("GCAM", {}), target=0)
    layer = get_submodule(model, get_architecture(arch).gradcam_layer)
    x = torch.from_numpy(images).unsqueeze(1)
    ref = _reference_gradcam(model, layer, x, 0).numpy()
    np.testing.assert_allclose(raw, ref, rtol=1e-4, atol=1e-6)
    captum = LayerGradCam(model, layer).attribute(x, target=0, relu_attributions=True)
    captum = LayerAttribution.interpolate(captum, (32, 32), interpolate_mode="bilinear").detach().numpy()
    np.testing.assert_allclose(raw, captum, rtol=1e-5, atol=1e-7)
    assert raw.min() >= 0  # ReLU'd


def test_probability_output_scales_gradients_by_sigmoid_derivative():
    model = _model()
    images = _images(2)
    raw_logit, _ = compute_saliency(model, "simple_cnn", images, "GRAD", {}, target=0, output="logit")
    raw_prob, _ = compute_saliency(model, "simple_cnn", images, "GRAD", {}, target=0, output="probability")
    with torch.no_grad():
        p = torch.sigmoid(model(torch.from_numpy(images).unsqueeze(1)))[:, 0].numpy()
    np.testing.assert_allclose(raw_prob, raw_logit * (p * (1 - p))[:, None, None, None], rtol=1e-4, atol=1e-8)
    with pytest.raises(ValueError, match="saliency.output"):
        TargetOutput(model, "softmax")


def test_batching_does_not_change_maps():
    model = _model()
    images = _images(5)
    a, _ = compute_saliency(model, "simple_cnn", images, "IG", resolve_params("IG", {"n_steps": 8}), 0, batch_size=2)
    b, _ = compute_saliency(model, "simple_cnn", images, "IG", resolve_params("IG", {"n_steps": 8}), 0, batch_size=5)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_registry_and_params():
    assert {"GRAD", "IG", "GCAM"} <= set(METHODS)
    assert resolve_params("IG", {"n_steps": 10})["n_steps"] == 10
    assert resolve_params("IG", {})["baseline"] == "black"
    with pytest.raises(KeyError, match="saliency.params.IG"):
        resolve_params("IG", {"steps": 10})
    with pytest.raises(KeyError, match="unknown saliency method 'FOO'"):
        get_method("FOO")


def _pair_visualize_grayscale(image_3d, percentile=99):
    """The PAIR `saliency` package's VisualizeImageGrayscale, written out for reference (H x W x C)."""
    image_2d = np.sum(np.abs(image_3d), axis=2)
    vmax = np.percentile(image_2d, percentile)
    vmin = np.min(image_2d)
    return np.clip((image_2d - vmin) / (vmax - vmin), 0, 1)


def test_postprocessing_matches_the_papers_visualisation():
    raw = np.random.default_rng(1).normal(size=(3, 2, 16, 16)).astype(np.float32)
    out = abs_sum_percentile(raw)
    for i in range(3):
        np.testing.assert_allclose(out[i], _pair_visualize_grayscale(raw[i].transpose(1, 2, 0)), rtol=1e-5, atol=1e-6)
    # hand case: |values| 0..99 on a 10x10 map; p99 = 98.01, so 99 and 98.5 clip to 1
    ramp = np.arange(100, dtype=np.float32).reshape(1, 1, 10, 10)
    np.testing.assert_allclose(abs_sum_percentile(ramp)[0].ravel()[:3], [0, 1 / 98.01, 2 / 98.01], rtol=1e-5)
    assert abs_sum_percentile(ramp)[0].max() == 1.0
    # a constant map is defined: all zeros, no NaN
    assert np.array_equal(abs_sum_percentile(np.ones((1, 1, 4, 4), np.float32)), np.zeros((1, 4, 4), np.float32))
    mm = min_max(np.array([[[[2.0, 4.0], [6.0, 10.0]]]], np.float32))
    np.testing.assert_allclose(mm[0], [[0, 0.25], [0.5, 1.0]])


def test_sparse_maps_are_not_zeroed_and_do_not_look_identical():
    """Under 1 % non-minimal pixels: p99 equals the minimum. Such a map keeps its salient pixels (scaled by its
    maximum); two different sparse maps must not both become all-zero (which would give SSIM 1)."""
    from saliency_trust.metrics.similarity import ssim

    a = np.zeros((1, 1, 20, 20), np.float32)
    b = np.zeros((1, 1, 20, 20), np.float32)
    a[0, 0, 2, 3], a[0, 0, 2, 4] = 4.0, 2.0  # 2 of 400 pixels (0.5 %)
    b[0, 0, 15, 16] = 7.0
    pa, pb = abs_sum_percentile(a), abs_sum_percentile(b)
    assert pa[0, 2, 3] == 1.0 and pa[0, 2, 4] == 0.5 and pa.sum() == 1.5
    assert pb[0, 15, 16] == 1.0 and pb.sum() == 1.0
    assert ssim(pa, pb)[0] < 0.99


def test_cache_round_trip_and_mismatch_detection(tmp_path):
    path = tmp_path / "IG.h5"
    maps = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
    raw = np.random.default_rng(1).normal(size=(3, 1, 8, 8)).astype(np.float32)
    params = {"n_steps": 25, "baseline": "black"}
    write_maps(path, ["a", "b", "c"], maps, raw, "IG", params, "abc123", {"label": "abnormal", "output": "logit"})
    got = read_maps(path, method="IG", params=params, model_sha256="abc123", with_raw=True)
    assert got.image_ids == ["a", "b", "c"]
    np.testing.assert_array_equal(got.maps, maps)
    np.testing.assert_array_equal(got.raw, raw)
    with h5py.File(path) as h5:  # the documented layout, read with plain h5py
        assert h5["map"].chunks == (1, 8, 8) and h5["map"].compression == "gzip"
        assert json.loads(h5.attrs["params"]) == params
        assert "torch" in json.loads(h5.attrs["versions"])
        assert h5.attrs["model_sha256"] == "abc123" and h5.attrs["created"]
    with pytest.raises(ValueError, match="params"):
        read_maps(path, params={"n_steps": 50, "baseline": "black"})
    with pytest.raises(ValueError, match="another model checkpoint"):
        read_maps(path, model_sha256="other")
    with pytest.raises(ValueError, match="expected 'GRAD'"):
        read_maps(path, method="GRAD")


def test_cache_refuses_nan_maps_and_leaves_no_file(tmp_path):
    path = tmp_path / "GRAD.h5"
    maps = np.zeros((2, 4, 4), np.float32)
    maps[1, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="image 'b'"):
        write_maps(path, ["a", "b"], maps, maps[:, None], "GRAD", {}, "x", {})
    assert list(tmp_path.iterdir()) == []


def _compute_counter(maps, raw):
    """compute(rows) of compute_maps over fixed maps; records the rows asked for."""
    calls = []

    def compute(rows):
        calls.append(list(rows))
        return maps[rows], raw[rows]

    return compute, calls


def test_maps_are_reused_only_when_method_params_model_target_and_versions_match(tmp_path, monkeypatch):
    from saliency_trust.storage import maps as cache

    path = tmp_path / "SG.h5"
    ids = ["a", "b"]
    keys = [f"key-{i}" for i in ids]
    maps = np.random.default_rng(0).random((2, 8, 8), dtype=np.float32)
    raw = maps[:, None].copy()
    compute, calls = _compute_counter(maps, raw)
    params, target = {"n_samples": 25}, {"label": "abnormal", "output": "logit", "seed": 1}

    def run(method="SG", params=params, model_sha256="m1", target=target):
        path.unlink(missing_ok=True)  # Snakemake removes a rerun job's outputs: reuse is through the store
        store = cache.MapStore(tmp_path / "store", method, params, model_sha256, target)
        return cache.compute_maps(path, method, params, model_sha256, target, ids, keys, compute, store)

    assert run() == 2
    assert run() == 0  # reused
    assert calls == [[0, 1]]
    cached = read_maps(path, "SG", params, "m1", with_raw=True)
    np.testing.assert_array_equal(cached.maps, maps)
    np.testing.assert_array_equal(cached.raw, raw)
    assert json.loads(cached.attrs["target"]) == target
    for changed in (
        dict(method="GRAD"),
        dict(params={"n_samples": 10}),
        dict(model_sha256="m2"),
        dict(target={**target, "seed": 2}),
    ):
        assert run(**changed) == 2, changed
        assert json.loads(read_maps(path).attrs["params"]) == changed.get("params", params)
        assert run() == 0  # back to the original: still in the store
    n = len(calls)
    monkeypatch.setattr(cache, "package_versions", lambda: {"torch": "0.0-other"})
    assert run() == 2
    assert len(calls) == n + 1
    assert len(list((tmp_path / "store").iterdir())) == 6  # one store file per combination


def test_cache_write_is_atomic_when_the_computation_fails(tmp_path):
    from saliency_trust.storage.maps import MapStore, compute_maps

    path = tmp_path / "IG.h5"
    maps = np.zeros((1, 4, 4), np.float32)
    good, _ = _compute_counter(maps, maps[:, None])
    compute_maps(path, "IG", {}, "m1", {}, ["a"], ["ka"], good)
    before = path.read_bytes()

    def boom(rows):
        raise RuntimeError("killed mid-way")

    store = MapStore(tmp_path / "store", "IG", {"n_steps": 5}, "m1", {})
    with pytest.raises(RuntimeError):
        compute_maps(path, "IG", {"n_steps": 5}, "m1", {}, ["a"], ["ka"], boom, store)
    assert path.read_bytes() == before  # the old file is untouched, no temporary file is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IG.h5"]  # nothing stored either
    path.unlink()
    with pytest.raises(RuntimeError):
        compute_maps(path, "IG", {"n_steps": 5}, "m1", {}, ["a"], ["ka"], boom, store)
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"truncated")  # whatever is at the output path, the file is written from scratch
    assert compute_maps(path, "IG", {}, "m1", {}, ["a"], ["ka"], good) == 1
    np.testing.assert_array_equal(read_maps(path, "IG", {}, "m1").maps, maps)


def test_segments_round_trip_and_missing_image(tmp_path):
    from saliency_trust.storage.maps import read_segments, write_segments

    labels = np.arange(2 * 6 * 4 * 4, dtype=np.int32).reshape(2, 6, 4, 4)
    write_segments(tmp_path / "seg.h5", ["x", "y"], labels)
    np.testing.assert_array_equal(read_segments(tmp_path / "seg.h5", ["y", "x"]), labels[::-1])
    with pytest.raises(KeyError, match="image 'z'"):
        read_segments(tmp_path / "seg.h5", ["z"])
