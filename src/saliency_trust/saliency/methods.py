"""Saliency method registry (docs/saliency.md; Arun et al., Table 1).

Each method turns a batch of images (B x C x H x W) into raw attributions of the
same spatial size for one target output, and names the post-processing the
papers applied. Grad-CAM and LRP come from Captum; our own code covers the rest:

- The gradient methods (GRAD, IXG, IG, SG, SIG, GBP) share one input-gradient
  pass, :func:`input_gradient`, and pack the model inputs of all images of a
  batch (IG path points, noisy copies) into passes of ``max_batch_inputs``, so
  that they run at the model's forward+backward throughput
  (``benchmarks/saliency_speed.py``). GRAD and IXG equal Captum's ``Saliency``
  and ``InputXGradient``; IG uses Captum's integration rules and equals its
  ``IntegratedGradients`` up to float32 rounding (tests check both).
- SmoothGrad (SG) and SmoothGrad over IG (SIG) follow the papers (PAIR
  ``saliency`` package): Gaussian noise with standard deviation 15 % of each
  image's value range, 25 samples, mean of the *squared* attributions. Captum's
  NoiseTunnel defaults (absolute noise 1.0, 5 samples, plain mean) differ.
- Guided backprop (GBP) and Guided Grad-CAM (GGCAM) use :mod:`.guided`, which
  guides every ReLU including functional ones (Captum's hooks see only
  ``nn.ReLU`` modules).
- XRAI is implemented in :mod:`.xrai`.
- EDGE is a *control*, not an explanation: the Sobel edge magnitude of the
  input (Adebayo et al. 2018, "Sanity checks for saliency maps", edge detector
  control). It ignores the model and the target, so it must FAIL the
  randomization criterion and score SSIM 1 on repeatability (Arun et al.).

New methods slot in by adding a :class:`SaliencyMethod` to :data:`METHODS`;
their parameters live in the config (``saliency.params.<KEY>``) with the
defaults given here.
"""

from __future__ import annotations

import copy
import ctypes
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from saliency_trust.models.registry import get_architecture, get_submodule
from saliency_trust.saliency.guided import guided_relus


class TargetOutput(nn.Module):
    """Expose the quantity to explain: the raw logits, or sigmoid probabilities.

    Gradients can stay finite when the output is not, so a NaN/inf output must never be explained: every
    forward pass records whether its output was finite, and :meth:`check_finite` (called by the engine after
    each batch, and by methods before they leave the device) raises :class:`NonFiniteOutputError`. The flag
    stays on the device, so that no pass waits for the accelerator to finish the previous one.
    """

    def __init__(self, model: nn.Module, output: str = "logit"):
        super().__init__()
        if output not in ("logit", "probability"):
            raise ValueError(f"saliency.output must be 'logit' or 'probability', got '{output}'")
        self.model = model
        self.output = output
        self._finite: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        finite = torch.isfinite(y.detach()).all()
        self._finite = finite if self._finite is None else self._finite & finite
        return torch.sigmoid(y) if self.output == "probability" else y

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteOutputError` if an output since the last check was NaN/inf; resets the flag."""
        finite, self._finite = self._finite, None
        if finite is not None and not bool(finite):
            raise NonFiniteOutputError("the model outputs NaN/inf")


class NonFiniteOutputError(FloatingPointError):
    """The explained model's output is NaN/inf (a broken checkpoint)."""


class UnsupportedModelError(TypeError):
    """A method cannot explain a model (names the method, the model and the layer)."""


@dataclass
class ExplainContext:
    """What a method needs besides the images.

    ``noise_seeds`` (one per image) make SmoothGrad noise independent of batching;
    ``segments`` holds each image's XRAI label images; ``max_batch_inputs`` caps
    the number of model inputs per forward pass (IG steps, noise samples).
    """

    forward: TargetOutput
    arch: str
    noise_seeds: list[int] | None = None
    segments: list[np.ndarray] | None = None
    max_batch_inputs: int = 64

    def layer(self) -> nn.Module:
        """The last convolutional block (Grad-CAM layer) of the architecture."""
        return get_submodule(self.forward.model, get_architecture(self.arch).gradcam_layer)


# glibc mallopt parameters, and the values reuse_freed_memory() sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 1 << 30
_MEMORY_KEPT: list[bool] = []


def reuse_freed_memory() -> bool:
    """Have the C library keep the memory that tensors free, for the next tensors, instead of returning it.

    On the CPU, each forward+backward pass allocates its activations anew. glibc's ``malloc`` serves blocks
    over a threshold (at most 32 MB) with fresh ``mmap`` pages and returns freed memory at the top of its heap
    to the kernel, so every pass of a batch of ``max_batch_inputs`` images pays page faults and page zeroing
    again (``simple_cnn`` at 128 px, batch 64, one thread: 65 forward+backward passes/s, half the time in the
    kernel; 111-127 with the memory kept). Raising the mmap and trim thresholds (``mallopt``) to 1 GB lets every
    later pass reuse the memory; the peak resident memory grows by the heap's fragmentation (about 40 % in
    that case). Once per process; not on a C library without ``mallopt``, nor when the ``MALLOC_MMAP_THRESHOLD_``
    or ``MALLOC_TRIM_THRESHOLD_`` environment variables already say what the user wants. Returns whether the
    thresholds are set.
    """
    if _MEMORY_KEPT:
        return _MEMORY_KEPT[0]
    done = False
    if sys.platform.startswith("linux") and not {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        try:
            mallopt = ctypes.CDLL(None).mallopt
            done = (
                mallopt(_M_MMAP_THRESHOLD, KEEP_FREED_BYTES) == 1 and mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES) == 1
            )
        except (OSError, AttributeError):  # not glibc (or no mallopt): the allocator stays as it is
            done = False
    _MEMORY_KEPT.append(done)
    return done


def _baseline(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "white":
        return torch.ones_like(x)
    raise ValueError(f"unknown IG baseline '{kind}' (allowed: black, white)")


def input_gradient(forward: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """d output[target] / d x for one pass of the model over the batch ``x``."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(forward(x)[:, target].sum(), x)
    return g


def input_gradients(forward: nn.Module, x: torch.Tensor, target: int, chunk: int) -> torch.Tensor:
    """d output[target] / d x for a batch, in chunks of at most ``chunk`` inputs."""
    return torch.cat([input_gradient(forward, part, target) for part in torch.split(x, max(chunk, 1))])


# The integration rules of Captum's IntegratedGradients (captum.attr._utils.approximation_methods, private):
# (step sizes, alphas) for n steps. Owned here; a test checks them against Captum's.
RIEMANN_RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def integration_rule(n_steps: int, integration: str) -> tuple[list[float], list[float]]:
    """Step sizes (weights summing to 1) and path positions alpha in [0, 1] of an IG integration rule."""
    if integration == "gausslegendre":
        if n_steps < 1:
            raise ValueError("IG needs at least one step")
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return (0.5 * weights).tolist(), (0.5 * (1 + nodes)).tolist()
    if integration not in RIEMANN_RULES:
        raise ValueError(f"unknown IG integration '{integration}' (allowed: gausslegendre, {', '.join(RIEMANN_RULES)})")
    if n_steps < 2:
        raise ValueError(f"IG integration '{integration}' needs at least two steps")
    n, rule = n_steps, integration.split("_")[1]
    sizes = [1 / n] * n
    if rule == "trapezoid":
        sizes[0] /= 2
        sizes[-1] /= 2
    lo, hi = {"left": (0, 1 - 1 / n), "right": (1 / n, 1), "middle": (1 / (2 * n), 1 - 1 / (2 * n))}.get(rule, (0, 1))
    return sizes, torch.linspace(lo, hi, n).tolist()


class _Rows:
    """A batch of images read by index ranges (the interface of :class:`_NoisyCopies`)."""

    def __init__(self, x: torch.Tensor):
        self.x = x.detach()

    def __len__(self) -> int:
        return len(self.x)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return self.x[start:stop]


def _seeded_normal(seed: int, shape: tuple[int, ...], pinned: bool = False) -> torch.Tensor:
    """Standard normal noise from a CPU generator seeded with ``seed``: the same values on every device and in
    every thread (``torch.randn``'s values; ``pinned``: in page-locked memory, to be copied to an accelerator
    without waiting)."""
    generator = torch.Generator().manual_seed(int(seed))
    if not pinned:
        return torch.randn(shape, generator=generator)
    return torch.empty(shape, pin_memory=True).normal_(generator=generator)


class _NoisyCopies:
    """The ``n_samples`` noisy copies of each image of a batch, row ``i * n_samples + k`` = copy k of image i.

    Noise sd = ``noise_level`` x each image's value range, drawn on the CPU from a generator seeded per image
    (``ctx.noise_seeds``), so the copies do not depend on batching or device. An image's copies are made when a
    row of them is first read (reads go forward), so no batch holds all copies at once. On an accelerator the
    noise goes through pinned memory without waiting, and the CPU's other threads (``torch.get_num_threads()``)
    draw the images' noise ahead, so that drawing overlaps the passes instead of stalling them (``ahead``: draw
    ahead also elsewhere; None: on an accelerator).
    """

    def __init__(self, ctx: ExplainContext, x: torch.Tensor, params: dict, ahead: bool | None = None):
        b, self.n = x.shape[0], params["n_samples"]
        seeds = ctx.noise_seeds if ctx.noise_seeds is not None else list(range(b))
        if len(seeds) != b:
            raise ValueError(f"{len(seeds)} noise seeds for {b} images")
        self.x, self.seeds, self.level = x.detach(), list(seeds), params["noise_level"]
        flat = self.x.flatten(1)
        self.span = flat.amax(1) - flat.amin(1)
        self._drawn: dict[int, torch.Tensor] = {}
        self._ahead: dict[int, Future] = {}
        self._pinned = self.x.device.type == "cuda"
        shape, workers = (self.n, *self.x.shape[1:]), torch.get_num_threads() - 1
        if (self._pinned if ahead is None else ahead) and workers > 0 and b > 1:
            pool = ThreadPoolExecutor(min(workers, b), thread_name_prefix="noise")
            self._ahead = {i: pool.submit(_seeded_normal, s, shape, self._pinned) for i, s in enumerate(self.seeds)}
            pool.shutdown(wait=False)  # the draws go on; the threads end with them

    def __len__(self) -> int:
        return len(self.x) * self.n

    def image(self, i: int) -> torch.Tensor:
        """The n_samples x C x H x W noisy copies of image ``i``."""
        if i not in self._drawn:
            ahead = self._ahead.pop(i, None)
            if ahead is not None:
                noise = ahead.result()
            else:
                noise = _seeded_normal(self.seeds[i], (self.n, *self.x.shape[1:]), self._pinned)
            noise = noise.to(self.x.device, self.x.dtype, non_blocking=True)
            self._drawn = {i: self.x[i] + noise * self.level * self.span[i]}  # reads go forward: keep one image
        return self._drawn[i]

    def rows(self, start: int, stop: int) -> torch.Tensor:
        first, last = start // self.n, (stop - 1) // self.n
        parts = [
            self.image(i)[max(start - i * self.n, 0) : min(stop - i * self.n, self.n)] for i in range(first, last + 1)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def _noisy_samples(ctx: ExplainContext, x: torch.Tensor, params: dict) -> torch.Tensor:
    """(B * n_samples) x C x H x W noisy copies; noise sd = noise_level x each image's value range."""
    copies = _NoisyCopies(ctx, x, params)
    return copies.rows(0, len(copies))


def _chunks(n_images: int, per_image: int, cap: int) -> Iterator[tuple[int, int, list[tuple[int, int, int]]]]:
    """Passes over ``n_images x per_image`` model inputs (row ``i * per_image + k``), ``cap`` inputs each however
    the rows fall on images: ``(start, stop, [(image, first, last) ...])`` with the chunk's rows of each image
    (chunk-local, ``last`` excluded)."""
    total, cap = n_images * per_image, max(cap, 1)
    for start in range(0, total, cap):
        stop = min(start + cap, total)
        spans = [
            (i, max(i * per_image, start) - start, min((i + 1) * per_image, stop) - start)
            for i in range(start // per_image, (stop - 1) // per_image + 1)
        ]
        yield start, stop, spans


def _ig(ctx: ExplainContext, x, target: int, n_steps: int, baseline: str, integration: str) -> torch.Tensor:
    """Integrated Gradients with Captum's integration rules, of a batch ``x`` (a tensor, or :class:`_NoisyCopies`).

    Each image's ``n_steps`` path points ``baseline + alpha * (x - baseline)`` are packed with the other images'
    into passes of ``ctx.max_batch_inputs`` model inputs, built when their pass comes; each image's weighted
    gradients are summed as its passes come and multiplied by ``x - baseline`` when its path is done.
    """
    images = _Rows(x) if isinstance(x, torch.Tensor) else x
    sizes, alphas = integration_rule(n_steps, integration)
    weights = alphas_t = None
    attributions, total = [], None
    for start, _, spans in _chunks(len(images), n_steps, ctx.max_batch_inputs):
        first = spans[0][0]
        imgs = images.rows(first, spans[-1][0] + 1)
        base = _baseline(imgs, baseline)
        diff = imgs - base
        if weights is None:
            shape = (-1,) + (1,) * (imgs.dim() - 1)
            weights = torch.tensor(sizes, dtype=torch.float32).view(shape).to(imgs.device)
            alphas_t = torch.tensor(alphas, dtype=torch.float32).view(shape).to(imgs.device)
        steps = [(i - first, (start + a) % n_steps, b - a) for i, a, b in spans]
        path = [base[j] + alphas_t[k : k + m] * diff[j] for j, k, m in steps]
        grads = input_gradient(ctx.forward, path[0] if len(path) == 1 else torch.cat(path), target)
        for (j, k, m), (_, a, b) in zip(steps, spans):
            part = (grads[a:b] * weights[k : k + m]).sum(0)
            total = part if k == 0 else total + part
            if k + m == n_steps:
                attributions.append(total * diff[j])
    return torch.stack(attributions)


def integrated_gradients(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """Integrated Gradients from a constant baseline (Sundararajan et al. 2017)."""
    return _ig(ctx, x, target, params["n_steps"], params["baseline"], params["integration"])


def _aggregate(samples: torch.Tensor, b: int, squared: bool) -> torch.Tensor:
    samples = samples.reshape(b, -1, *samples.shape[1:])
    return (samples**2 if squared else samples).mean(dim=1)


def grad(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """Vanilla gradient of the target output w.r.t. the input (Simonyan et al. 2014)."""
    return input_gradients(ctx.forward, x, target, ctx.max_batch_inputs)


def smoothgrad(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017) as the papers used it: mean of squared noisy gradients.

    The noisy copies of all images are packed into passes of ``ctx.max_batch_inputs``; each image's (squared)
    gradients are summed as its passes come."""
    copies = _NoisyCopies(ctx, x, params)
    n, squared, out, total = copies.n, params["squared"], [], None
    for start, stop, spans in _chunks(len(x), n, ctx.max_batch_inputs):
        grads = input_gradient(ctx.forward, copies.rows(start, stop), target)
        for _, a, b in spans:
            g = grads[a:b]
            part = (g**2 if squared else g).sum(0)
            total = part if (start + a) % n == 0 else total + part
            if (start + b) % n == 0:
                out.append(total / n)
    return torch.stack(out)


def smooth_integrated_gradients(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """SmoothGrad over Integrated Gradients (SIG): IG of each noisy copy, squared, averaged."""
    copies = _NoisyCopies(ctx, x, params)
    igs = _ig(ctx, copies, target, params["n_steps"], params["baseline"], params["integration"])
    return _aggregate(igs, x.shape[0], params["squared"])


def grad_cam(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """Grad-CAM on the last conv block with ReLU, upsampled to the input (Selvaraju et al. 2017)."""
    from captum.attr import LayerAttribution, LayerGradCam  # imported by the jobs that use it (start-up: 0.7 s)

    cam = LayerGradCam(ctx.forward, ctx.layer()).attribute(x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode=params["upsample"])


def guided_backprop(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015) through every ReLU, functional ones included."""
    with guided_relus():
        return input_gradients(ctx.forward, x, target, ctx.max_batch_inputs)


def guided_grad_cam(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """Guided Grad-CAM: guided backprop times the upsampled Grad-CAM (Selvaraju et al. 2017)."""
    return guided_backprop(ctx, x, target, params) * grad_cam(ctx, x, target, params)


def input_x_gradient(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """Input x Gradient (Shrikumar et al. 2016)."""
    return input_gradients(ctx.forward, x, target, ctx.max_batch_inputs) * x.detach()


# Leaf layer types Captum's public LRP class handles by default: an epsilon rule (Bach et al. 2015) for the
# linear, convolution, pooling and batch-norm layers, relevance passed through unchanged for the activations;
# it raises on any other leaf. Owned here rather than read from Captum's private module; a test checks the
# list against Captum's behaviour.
LRP_RULE_LAYERS: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.Conv2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Linear,
    nn.BatchNorm2d,
)
LRP_PASS_LAYERS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.Dropout, nn.Tanh)


def unsupported_lrp_layers(model: nn.Module) -> list[str]:
    """Leaf modules that Captum's LRP has no rule for, as ``name (Type)``."""
    known = LRP_RULE_LAYERS + LRP_PASS_LAYERS
    return [
        f"{name} ({type(m).__name__})"
        for name, m in model.named_modules()
        if name and not any(True for _ in m.children()) and type(m) not in known
    ]


def lrp(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """Layer-wise relevance propagation, epsilon rule (Bach et al. 2015; Captum)."""
    if ctx.forward.output != "logit":
        raise UnsupportedModelError("LRP explains logits only; set saliency.output: logit")
    bad = unsupported_lrp_layers(ctx.forward.model)
    if bad:
        raise UnsupportedModelError(
            f"method LRP cannot explain model '{ctx.arch}': no LRP rule for layer(s) {', '.join(bad[:5])}"
        )
    model = copy.deepcopy(ctx.forward.model)
    for m in model.modules():  # Captum's hooks cannot follow in-place activations
        if isinstance(m, nn.ReLU):
            m.inplace = False
    from captum.attr import LRP

    return LRP(model).attribute(x, target=target)


def xrai(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """XRAI (Kapishnikov et al. 2019): IG with black and white baselines, averaged, over segments."""
    from saliency_trust.saliency.xrai import XRAI_ALGORITHMS, felzenszwalb_segments, segment_masks

    ig = (
        _ig(ctx, x, target, params["n_steps"], "black", params["integration"])
        + _ig(ctx, x, target, params["n_steps"], "white", params["integration"])
    ) / 2
    ctx.forward.check_finite()  # before the attributions leave the device
    attr = ig.amax(dim=1).detach().cpu().numpy()  # channels reduced by max
    images = x.detach().cpu().numpy()
    segments = ctx.segments or [felzenszwalb_segments(img.max(axis=0)) for img in images]
    if len(segments) != len(attr):
        raise ValueError(f"{len(segments)} segmentations for {len(attr)} images")
    algorithm = XRAI_ALGORITHMS[params["algorithm"]]
    extra = {"area_threshold": params["area_threshold"]} if params["algorithm"] == "full" else {}
    maps = [algorithm(a, segment_masks(s), params["min_pixel_diff"], **extra) for a, s in zip(attr, segments)]
    return torch.from_numpy(np.stack(maps)[:, None].astype(np.float32))


def sobel_edges(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """Sobel edge magnitude of each channel of the input (skimage); model- and target-independent control map
    (Adebayo et al. 2018). A constant image has no edges: an all-zero map."""
    from skimage.filters import sobel

    images = x.detach().float().cpu().numpy()
    edges = np.stack([np.stack([sobel(channel) for channel in image]) for image in images])
    return torch.from_numpy(edges.astype(np.float32))


# The engine's cost per map, for the benchmarks (benchmarks/saliency_speed.py, benchmarks/gpu_throughput.py)
SAMPLING_METHODS = ("SG", "IG", "SIG", "XRAI")  # many model inputs per image (noise samples, IG steps)


def passes_per_map(key: str, params: dict) -> int:
    """Forward+backward passes of the model that one map of ``key`` needs."""
    if key == "SG":
        return params["n_samples"]
    if key == "IG":
        return params["n_steps"]
    if key == "SIG":
        return params["n_steps"] * params["n_samples"]
    if key == "XRAI":
        return 2 * params["n_steps"]
    return 2 if key == "GGCAM" else 1  # GGCAM: guided backprop + Grad-CAM


def pass_batch(key: str, passes: int, n_images: int, batch_size: int, max_batch_inputs: int) -> int:
    """Model inputs per forward pass of the engine: the image batch, or ``max_batch_inputs`` of its samples/steps."""
    images = min(batch_size, n_images, max(max_batch_inputs, 1))
    return min(images * passes, max(max_batch_inputs, 1)) if key in SAMPLING_METHODS else images


@dataclass(frozen=True)
class SaliencyMethod:
    """One registry entry; ``control`` marks a model-independent control map (config ``saliency.controls``)."""

    key: str
    title: str
    attribute: Callable[[ExplainContext, torch.Tensor, int, dict], torch.Tensor]
    defaults: dict = field(default_factory=dict)
    postprocess: str = "abs_percentile"
    uses_segments: bool = False
    control: bool = False


_IG = {"n_steps": 25, "baseline": "black", "integration": "gausslegendre"}
_NOISE = {"n_samples": 25, "noise_level": 0.15, "squared": True}

METHODS: dict[str, SaliencyMethod] = {
    m.key: m
    for m in [
        SaliencyMethod("GRAD", "Vanilla gradient", grad),
        SaliencyMethod("SG", "SmoothGrad", smoothgrad, dict(_NOISE)),
        SaliencyMethod("IG", "Integrated Gradients", integrated_gradients, dict(_IG)),
        SaliencyMethod("SIG", "SmoothGrad over Integrated Gradients", smooth_integrated_gradients, {**_IG, **_NOISE}),
        SaliencyMethod("GCAM", "Grad-CAM", grad_cam, {"upsample": "bilinear"}),
        SaliencyMethod(
            "XRAI",
            "XRAI",
            xrai,
            {
                "n_steps": 25,
                "integration": "gausslegendre",
                "algorithm": "full",
                "min_pixel_diff": 50,
                "area_threshold": 1.0,
            },
            postprocess="min_max",
            uses_segments=True,
        ),
        SaliencyMethod("GBP", "Guided backpropagation", guided_backprop),
        SaliencyMethod("GGCAM", "Guided Grad-CAM", guided_grad_cam, {"upsample": "bilinear"}),
        SaliencyMethod("IXG", "Input x Gradient", input_x_gradient),
        SaliencyMethod("LRP", "Layer-wise relevance propagation (epsilon)", lrp),
        SaliencyMethod("EDGE", "Sobel edge magnitude (control)", sobel_edges, control=True),
    ]
}

ARUN_METHODS = ("GRAD", "SG", "IG", "SIG", "GCAM", "XRAI", "GBP", "GGCAM")


def get_method(key: str) -> SaliencyMethod:
    if key not in METHODS:
        raise KeyError(f"unknown saliency method '{key}'; implemented: {sorted(METHODS)}")
    return METHODS[key]


def check_control(key: str) -> SaliencyMethod:
    """The registry entry of a configured control (``saliency.controls``); refuses one that is not marked control."""
    try:
        method = get_method(key)
    except KeyError as err:
        raise KeyError(f"saliency.controls: {err.args[0]}") from None
    if not method.control:
        controls = sorted(k for k, m in METHODS.items() if m.control)
        raise ValueError(
            f"saliency.controls: '{key}' is not a control map (it explains the model); controls: {controls}"
        )
    return method


def resolve_params(key: str, overrides: dict | None) -> dict:
    """Method defaults updated by the config's ``saliency.params.<KEY>``; unknown keys are refused."""
    method = get_method(key)
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(method.defaults)
    if unknown:
        raise KeyError(
            f"saliency.params.{key}: unknown parameter(s) {sorted(unknown)}; allowed: {sorted(method.defaults)}"
        )
    return {**method.defaults, **overrides}
