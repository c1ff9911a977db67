"""SmoothGrad, SIG, guided backprop, Guided Grad-CAM, Input x Gradient and LRP (docs/saliency.md).

References: closed forms on linear models, Captum's own implementations on
networks where they are correct, and the known traps of the issue (functional
ReLUs in torchvision's Inception v3 and DenseNet, unsupported LRP layers).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import GuidedBackprop, GuidedGradCam
from torch import nn

from saliency_trust.io import stable_seed
from saliency_trust.models.registry import build_model, get_architecture, get_submodule
from saliency_trust.saliency.compute import compute_saliency
from saliency_trust.saliency.methods import (
    ARUN_METHODS,
    METHODS,
    ExplainContext,
    TargetOutput,
    UnsupportedModelError,
    check_control,
    lrp,
    resolve_params,
    smoothgrad,
    unsupported_lrp_layers,
)


def _images(n=3, size=32, seed=0):
    return np.random.default_rng(seed).random((n, size, size), dtype=np.float32)


def _run(model, arch, images, key, target=0, **kw):
    return compute_saliency(model, arch, images, key, resolve_params(key, kw.pop("params", {})), target, **kw)


class Linear(nn.Module):
    """f(x) = <w, x> + b, so every gradient is w."""

    def __init__(self, size=16, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(1, 1, size, size, generator=g))

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1, keepdim=True) + 0.5


def test_registry_has_every_method_of_spec_5():
    assert set(ARUN_METHODS) | {"IXG", "LRP", "EDGE"} == set(METHODS)
    assert [k for k, m in METHODS.items() if m.control] == ["EDGE"]


def test_smoothgrad_on_a_linear_model_is_the_squared_weight():
    model = Linear()
    raw, _ = _run(model, "linear", _images(2, 16), "SG")
    w2 = (model.w.detach() ** 2).numpy()
    np.testing.assert_allclose(raw, np.broadcast_to(w2, raw.shape), rtol=1e-5)
    raw_plain, _ = _run(model, "linear", _images(2, 16), "SG", params={"squared": False})
    np.testing.assert_allclose(raw_plain, np.broadcast_to(model.w.detach().numpy(), raw.shape), rtol=1e-5)


def test_smoothgrad_noise_is_fifteen_percent_of_each_images_range():
    x = torch.rand(2, 1, 64, 64)
    x[0] = 0.2 + 0.5 * x[0] / x[0].max()  # range about 0.5
    x[1] = x[1] / x[1].max()  # range 1
    ctx = ExplainContext(TargetOutput(Linear(64)), "linear", noise_seeds=[1, 2])
    from saliency_trust.saliency.methods import _noisy_samples

    noisy = _noisy_samples(ctx, x, {"n_samples": 200, "noise_level": 0.15}).reshape(2, 200, 1, 64, 64)
    sd = (noisy - x.unsqueeze(1)).flatten(1).std(dim=1)
    span = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    np.testing.assert_allclose(sd.numpy(), 0.15 * span.numpy(), rtol=0.01)


def test_smoothgrad_matches_an_unbatched_reference_and_does_not_depend_on_batching():
    torch.manual_seed(0)
    model = build_model("simple_cnn", 1).eval()
    images = _images(3)
    ids = ["a", "b", "c"]
    raw1, _ = _run(model, "simple_cnn", images, "SG", image_ids=ids, seed=5, batch_size=1, max_batch_inputs=7)
    raw3, _ = _run(model, "simple_cnn", images, "SG", image_ids=ids, seed=5, batch_size=3, max_batch_inputs=512)
    np.testing.assert_allclose(raw1, raw3, rtol=1e-5, atol=1e-5 * np.abs(raw3).max())
    # reference: one noisy copy at a time, same noise stream, gradient by autograd, squared, averaged
    for i, image_id in enumerate(ids):
        x = torch.from_numpy(images[i])[None, None]
        g = torch.Generator().manual_seed(stable_seed(5, "SG", image_id))
        noise = torch.randn((25, 1, 32, 32), generator=g) * 0.15 * (x.max() - x.min())
        acc = torch.zeros_like(x)
        for k in range(25):
            xn = (x + noise[k]).requires_grad_(True)
            (gr,) = torch.autograd.grad(model(xn)[0, 0], xn)
            acc += gr**2
        # batched and single-image convolutions round differently; a max-pool near-tie can then route one
        # sample's gradient elsewhere, hence a tolerance of 1 % of the map's maximum
        np.testing.assert_allclose(raw1[i], (acc / 25)[0].numpy(), rtol=1e-3, atol=1e-2 * np.abs(raw1).max())


def test_smooth_ig_on_a_linear_model_has_its_closed_form():
    # IG of <w, x> from a black baseline is w * x, so SIG = mean_k (w * (x + e_k))^2
    model = Linear()
    images = _images(1, 16)
    raw, _ = _run(model, "linear", images, "SIG", image_ids=["img"], seed=3, params={"n_steps": 4})
    x = torch.from_numpy(images)[:, None]
    g = torch.Generator().manual_seed(stable_seed(3, "SIG", "img"))
    noise = torch.randn((25, 1, 16, 16), generator=g) * 0.15 * (x.max() - x.min())
    expected = ((model.w.detach() * (x + noise)) ** 2).mean(0)
    np.testing.assert_allclose(raw[0], expected.numpy(), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("arch", ["simple_cnn", "tiny_resnet"])
def test_guided_backprop_equals_captum_where_all_relus_are_modules(arch):
    torch.manual_seed(1)
    model = build_model(arch, 1).eval()
    images = _images(2)
    ours, _ = _run(model, arch, images, "GBP")
    x = torch.from_numpy(images)[:, None].requires_grad_(True)
    ref = GuidedBackprop(model).attribute(x, target=0).detach().numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)
    grad, _ = _run(model, arch, images, "GRAD")
    assert not np.allclose(ours, grad, rtol=0.05)


@pytest.mark.parametrize("arch,size,input_size", [("inception_v3", 40, 80), ("densenet121", 32, 32)])
def test_guided_backprop_is_truly_guided_on_torchvision_networks(arch, size, input_size):
    torch.manual_seed(2)
    model = build_model(arch, 1, input_size=input_size).eval()
    images = _images(1, size)
    ours, _ = _run(model, arch, images, "GBP")
    grad, _ = _run(model, arch, images, "GRAD")
    rel = np.abs(ours - grad).sum() / np.abs(grad).sum()
    assert rel > 0.2, f"GBP is too close to GRAD on {arch} ({rel:.3f})"
    # guided gradients are never negative where the image enters the first ReLU
    x = torch.from_numpy(images)[:, None].requires_grad_(True)
    captum = GuidedBackprop(model).attribute(x, target=0).detach().numpy()
    if arch == "inception_v3":
        # the trap: every ReLU is functional, so hook-based GBP is plain gradient
        np.testing.assert_allclose(captum, grad, rtol=1e-4, atol=1e-9)
    assert not np.allclose(ours, captum, rtol=0.05)


def test_guided_relu_patch_is_undone():
    import torch.nn.functional as F

    before = (F.relu, torch.relu)
    model = build_model("simple_cnn", 1).eval()
    _run(model, "simple_cnn", _images(1), "GBP")
    assert (F.relu, torch.relu) == before


def test_guided_gradcam_equals_captum_guided_gradcam():
    torch.manual_seed(3)
    model = build_model("simple_cnn", 1).eval()
    images = _images(2)
    ours, _ = _run(model, "simple_cnn", images, "GGCAM")
    layer = get_submodule(model, get_architecture("simple_cnn").gradcam_layer)
    x = torch.from_numpy(images)[:, None].requires_grad_(True)
    ref = GuidedGradCam(model, layer).attribute(x, target=0, interpolate_mode="bilinear").detach().numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-9)


def test_input_x_gradient_is_input_times_gradient():
    torch.manual_seed(4)
    model = build_model("tiny_resnet", 1).eval()
    images = _images(2)
    ixg, _ = _run(model, "tiny_resnet", images, "IXG")
    grad, _ = _run(model, "tiny_resnet", images, "GRAD")
    np.testing.assert_allclose(ixg, grad * images[:, None], rtol=1e-5, atol=1e-10)


class BiasFree(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 1, bias=False)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


def test_lrp_epsilon_equals_input_times_gradient_on_a_bias_free_relu_net():
    # for ReLU networks without biases, LRP-epsilon (epsilon -> 0) is exactly Gradient x Input
    torch.manual_seed(5)
    model = BiasFree().eval()
    images = _images(2, 16)
    rel, _ = _run(model, "bias_free", images, "LRP")
    ixg, _ = _run(model, "bias_free", images, "IXG")
    np.testing.assert_allclose(rel, ixg, rtol=1e-4, atol=1e-8)
    # relevance is conserved: it sums to the logit
    with torch.no_grad():
        out = model(torch.from_numpy(images)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(rel.reshape(2, -1).sum(1), out, rtol=1e-4)


@pytest.mark.parametrize(
    "arch,size,input_size", [("simple_cnn", 32, None), ("tiny_resnet", 32, None), ("densenet121", 32, 32)]
)
def test_lrp_runs_on_default_architectures_and_densenet(arch, size, input_size):
    torch.manual_seed(6)
    model = build_model(arch, 1, input_size=input_size).eval()
    assert unsupported_lrp_layers(model) == []
    raw, maps = _run(model, arch, _images(2, size), "LRP")
    assert np.isfinite(raw).all() and np.abs(raw).sum() > 0
    assert maps.shape == (2, size, size)


def test_lrp_refuses_a_model_it_cannot_explain_naming_method_model_and_layer():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 1))
    ctx = ExplainContext(TargetOutput(net), "my_net")
    with pytest.raises(UnsupportedModelError, match=r"LRP.*'my_net'.*1 \(SiLU\)"):
        lrp(ctx, torch.rand(1, 1, 8, 8), 0, {})


@pytest.mark.parametrize("key", sorted(METHODS))
def test_every_method_gives_finite_maps_in_unit_range_on_both_default_architectures(key):
    torch.manual_seed(7)
    for arch in ("simple_cnn", "tiny_resnet"):
        model = build_model(arch, 2).eval()
        params = {"n_steps": 4} if "n_steps" in METHODS[key].defaults else {}
        if "n_samples" in METHODS[key].defaults:
            params["n_samples"] = 3
        raw, maps = _run(model, arch, _images(2), key, target=1, params=params)
        assert raw.shape == (2, 1, 32, 32) and np.isfinite(raw).all()
        assert maps.shape == (2, 32, 32) and maps.min() >= 0 and maps.max() <= 1


def test_smoothgrad_refuses_mismatched_seeds():
    ctx = ExplainContext(TargetOutput(Linear()), "linear", noise_seeds=[1])
    with pytest.raises(ValueError, match="noise seeds"):
        smoothgrad(ctx, torch.rand(2, 1, 16, 16), 0, resolve_params("SG", {}))


# ---------------------------------------------------------------- EDGE control (Adebayo et al. 2018)


def test_edge_equals_skimage_sobel_on_a_hand_case():
    """A vertical step 0 | 1: skimage's Sobel magnitude sqrt((h^2 + v^2) / 2) is 1/sqrt(2) on the two columns
    beside the step and 0 elsewhere; EDGE's raw attribution is exactly that, its map the post-processed one."""
    from skimage.filters import sobel

    image = np.zeros((1, 6, 7), np.float32)
    image[0, :, 4:] = 1
    raw, maps = _run(build_model("simple_cnn", 1).eval(), "simple_cnn", image, "EDGE")
    expected = np.zeros((6, 7))
    expected[:, 3:5] = 1 / np.sqrt(2)
    np.testing.assert_allclose(sobel(image[0].astype(np.float64)), expected, atol=1e-12)
    np.testing.assert_allclose(raw[0, 0], expected, atol=1e-6)
    np.testing.assert_array_equal(maps[0], (expected > 0).astype(np.float32))  # p99 = max: edges 1, rest 0
    rng_image = _images(2, 24, seed=3)
    raw, _ = _run(build_model("simple_cnn", 1).eval(), "simple_cnn", rng_image, "EDGE")
    for k in range(2):
        np.testing.assert_allclose(raw[k, 0], sobel(rng_image[k].astype(np.float64)), atol=1e-6)


def test_edge_is_the_same_for_different_models_targets_and_a_randomized_model():
    from saliency_trust.models.randomize import randomization_blocks, randomized_model

    images = _images(3, 32, seed=5)
    torch.manual_seed(0)
    cnn, resnet = build_model("simple_cnn", 2).eval(), build_model("tiny_resnet", 2).eval()
    raw_a, maps_a = _run(cnn, "simple_cnn", images, "EDGE", target=0)
    raw_b, maps_b = _run(resnet, "tiny_resnet", images, "EDGE", target=1)
    blocks = randomization_blocks("simple_cnn")
    raw_c, maps_c = _run(randomized_model(cnn, "simple_cnn", blocks, 1, "default"), "simple_cnn", images, "EDGE")
    for raw, maps in ((raw_b, maps_b), (raw_c, maps_c)):
        np.testing.assert_array_equal(raw, raw_a)
        np.testing.assert_array_equal(maps, maps_a)
    assert maps_a.max() == 1 and maps_a.min() == 0


def test_edge_on_constant_images_is_all_zero_not_nan():
    images = np.stack([np.zeros((16, 16)), np.full((16, 16), 0.7), np.ones((16, 16))]).astype(np.float32)
    raw, maps = _run(build_model("simple_cnn", 1).eval(), "simple_cnn", images, "EDGE")
    assert np.isfinite(raw).all() and np.isfinite(maps).all()
    assert not raw.any() and not maps.any()


def test_controls_are_checked_against_the_registry():
    assert check_control("EDGE").control
    with pytest.raises(ValueError, match="saliency.controls: 'GRAD' is not a control"):
        check_control("GRAD")
    with pytest.raises(KeyError, match="saliency.controls: unknown saliency method 'SOBEL'"):
        check_control("SOBEL")


@pytest.mark.parametrize(
    "layer",
    [
        nn.MaxPool2d(2),
        nn.AvgPool2d(2),
        nn.AdaptiveAvgPool2d(4),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.Dropout(0.0),
        nn.Tanh(),
    ],
)
def test_lrp_layer_list_matches_what_captum_lrp_accepts(layer):
    """The owned list of LRP layer types (methods.LRP_RULE_LAYERS, LRP_PASS_LAYERS) against Captum's public LRP:
    a network with the listed layer is explained, one with a layer outside the list is refused by Captum too."""
    from captum.attr import LRP

    from saliency_trust.saliency.methods import LRP_PASS_LAYERS, LRP_RULE_LAYERS

    assert isinstance(layer, LRP_RULE_LAYERS + LRP_PASS_LAYERS)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), layer, nn.AdaptiveAvgPool2d(1), nn.Conv2d(2, 1, 1)).eval()
    out = LRP(_Squeeze(net)).attribute(torch.rand(1, 1, 8, 8), target=0)
    assert torch.isfinite(out).all()
    assert unsupported_lrp_layers(net) == []
    refused = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Conv2d(2, 1, 1))
    with pytest.raises(TypeError, match="no rule"):
        LRP(_Squeeze(refused)).attribute(torch.rand(1, 1, 8, 8), target=0)
    assert unsupported_lrp_layers(refused) == ["1 (SiLU)"]


class _Squeeze(nn.Module):
    """(N, 1, 1, 1) -> (N, 1) without a leaf module of its own, so LRP sees only the wrapped network's layers."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).flatten(1)


# ---------------------------------------------------------------- the batched engine (issue 17)


@pytest.mark.parametrize("n_steps", [2, 7, 25, 70])
@pytest.mark.parametrize(
    "integration", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]
)
def test_integration_rules_are_captums(integration, n_steps):
    from captum.attr._utils.approximation_methods import approximation_parameters

    from saliency_trust.saliency.methods import integration_rule

    sizes, alphas = approximation_parameters(integration)
    ours = integration_rule(n_steps, integration)
    np.testing.assert_allclose(ours[0], sizes(n_steps), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours[1], alphas(n_steps), rtol=1e-12, atol=1e-15)


def test_integration_rule_refuses_unknown_rules():
    from saliency_trust.saliency.methods import integration_rule

    with pytest.raises(ValueError, match="unknown IG integration 'simpson'"):
        integration_rule(10, "simpson")
    with pytest.raises(ValueError, match="at least two steps"):
        integration_rule(1, "riemann_left")


@pytest.mark.parametrize("arch", ["simple_cnn", "tiny_resnet"])
@pytest.mark.parametrize(
    "baseline,integration,n_steps", [("black", "gausslegendre", 25), ("white", "riemann_trapezoid", 9)]
)
def test_integrated_gradients_equal_captum_whatever_the_packing(arch, baseline, integration, n_steps):
    """IG packs all images' path points into passes of max_batch_inputs (also splitting an image's path, or
    more steps than one pass holds): Captum's IntegratedGradients up to float32 rounding, for every packing."""
    from captum.attr import IntegratedGradients

    torch.manual_seed(8)
    model = build_model(arch, 2).eval()
    images = _images(5)
    params = {"n_steps": n_steps, "baseline": baseline, "integration": integration}
    x = torch.from_numpy(images)[:, None]
    base = torch.zeros_like(x) if baseline == "black" else torch.ones_like(x)
    ref = IntegratedGradients(model).attribute(x, baselines=base, target=1, n_steps=n_steps, method=integration)
    ref = ref.detach().numpy()
    for batch_size, cap in ((5, 64), (2, 7), (5, 1), (3, 1000)):
        raw, _ = _run(model, arch, images, "IG", target=1, params=params, batch_size=batch_size, max_batch_inputs=cap)
        np.testing.assert_allclose(raw, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("arch", ["simple_cnn", "tiny_resnet"])
def test_grad_and_input_x_gradient_equal_captum(arch):
    from captum.attr import InputXGradient, Saliency

    torch.manual_seed(9)
    model = build_model(arch, 2).eval()
    images = _images(5)
    x = torch.from_numpy(images)[:, None].requires_grad_(True)
    for key, ref in (
        ("GRAD", Saliency(model).attribute(x, target=1, abs=False)),
        ("IXG", InputXGradient(model).attribute(x, target=1)),
    ):
        for cap in (64, 2):
            raw, _ = _run(model, arch, images, key, target=1, batch_size=4, max_batch_inputs=cap)
            np.testing.assert_allclose(raw, ref.detach().numpy(), rtol=1e-5, atol=1e-5 * np.abs(raw).max())


def test_noise_is_the_seeded_stream_of_each_image_however_it_is_read_or_drawn():
    """SmoothGrad's copies are x + noise_level x range x randn(seed) per image (cached maps depend on it): the
    same read in any chunks, and drawn ahead by other threads (as on an accelerator) or not."""
    from saliency_trust.saliency.methods import _noisy_samples, _NoisyCopies

    x = torch.rand(3, 1, 20, 24)
    seeds = [5, 123456789, 7]
    ctx = ExplainContext(TargetOutput(Linear(20)), "linear", noise_seeds=seeds)
    params = {"n_samples": 6, "noise_level": 0.15}
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(3, 1, 1, 1, 1)
    noise = torch.stack([torch.randn((6, 1, 20, 24), generator=torch.Generator().manual_seed(s)) for s in seeds])
    expected = (x.unsqueeze(1) + noise * 0.15 * span).reshape(18, 1, 20, 24)
    assert torch.equal(_noisy_samples(ctx, x, params), expected)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        ahead = _NoisyCopies(ctx, x, params, ahead=True)
        assert len(ahead._ahead) == 3
    finally:
        torch.set_num_threads(threads)
    for copies in (ahead, _NoisyCopies(ctx, x, params)):
        parts = [copies.rows(a, b) for a, b in ((0, 4), (4, 5), (5, 13), (13, 18))]
        assert torch.equal(torch.cat(parts), expected)


def test_smoothgrad_and_sig_do_not_depend_on_how_passes_are_packed():
    torch.manual_seed(10)
    model = build_model("tiny_resnet", 1).eval()
    images = _images(3)
    ids = ["a", "b", "c"]
    for key, params in (("SG", {"n_samples": 5}), ("SIG", {"n_samples": 3, "n_steps": 4})):
        runs = [
            _run(
                model,
                "tiny_resnet",
                images,
                key,
                params=params,
                image_ids=ids,
                seed=2,
                batch_size=b,
                max_batch_inputs=c,
            )[0]
            for b, c in ((3, 64), (1, 3), (2, 7), (3, 1))
        ]
        for raw in runs[1:]:
            np.testing.assert_allclose(raw, runs[0], rtol=1e-5, atol=1e-6 * np.abs(runs[0]).max())


@pytest.mark.parametrize("key", ["GRAD", "SG", "IG", "SIG", "GBP", "GGCAM", "GCAM", "IXG"])
def test_a_nan_output_is_never_explained(key):
    """The finiteness of the outputs is checked once per batch (not per pass, which would wait for an
    accelerator), and still stops every method."""
    torch.manual_seed(11)
    model = build_model("simple_cnn", 1).eval()
    with torch.no_grad():
        model.fc.bias.fill_(float("nan"))
    params = {"n_steps": 3} if "n_steps" in METHODS[key].defaults else {}
    if "n_samples" in METHODS[key].defaults:
        params["n_samples"] = 2
    with pytest.raises(FloatingPointError, match=f"{key}: the model outputs NaN/inf for image '0'"):
        _run(model, "simple_cnn", _images(2), key, params=params)


def test_the_cpu_engine_keeps_freed_memory_once_per_process():
    import ctypes
    import os
    import sys

    from saliency_trust.saliency import methods

    _run(build_model("simple_cnn", 1).eval(), "simple_cnn", _images(1), "GRAD")
    assert len(methods._MEMORY_KEPT) == 1  # decided once, at the first CPU call
    kept = methods.reuse_freed_memory()
    assert kept == methods._MEMORY_KEPT[0] and len(methods._MEMORY_KEPT) == 1
    glibc = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallopt")
    if glibc and not {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        assert kept


def test_passes_per_map_and_pass_batch_on_hand_computed_cases():
    from saliency_trust.saliency.methods import pass_batch, passes_per_map

    assert passes_per_map("SIG", {"n_steps": 25, "n_samples": 8}) == 200
    assert passes_per_map("XRAI", {"n_steps": 25}) == 50  # black and white baselines
    assert passes_per_map("GGCAM", {}) == 2 and passes_per_map("GRAD", {}) == 1
    assert pass_batch("IG", 25, 16, 16, 64) == 64  # 16 images x 25 steps, packed into passes of 64 inputs
    assert pass_batch("GRAD", 1, 16, 16, 64) == 16 and pass_batch("GRAD", 1, 5, 16, 64) == 5
