"""Saliency method registry (docs/saliency.md; Arun et al., Table 1).

Each method turns a batch of images (B x C x H x W) into raw attributions of the
same spatial size for one target output, and names the post-processing the
papers applied. Methods come from Captum where Captum implements the papers'
definition; our own code covers the rest:

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
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from captum.attr import LRP, InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam, Saliency
from torch import nn

from saliency_trust.models.registry import get_architecture, get_submodule
from saliency_trust.saliency.guided import guided_relus
from saliency_trust.saliency.xrai import XRAI_ALGORITHMS, felzenszwalb_segments, segment_masks


class TargetOutput(nn.Module):
    """Expose the quantity to explain: the raw logits, or sigmoid probabilities."""

    def __init__(self, model: nn.Module, output: str = "logit"):
        super().__init__()
        if output not in ("logit", "probability"):
            raise ValueError(f"saliency.output must be 'logit' or 'probability', got '{output}'")
        self.model = model
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        if not torch.isfinite(y).all():  # gradients can stay finite when the output is not: never explain it
            raise NonFiniteOutputError("the model outputs NaN/inf")
        return torch.sigmoid(y) if self.output == "probability" else y


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


def _baseline(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "white":
        return torch.ones_like(x)
    raise ValueError(f"unknown IG baseline '{kind}' (allowed: black, white)")


def input_gradients(forward: nn.Module, x: torch.Tensor, target: int, chunk: int) -> torch.Tensor:
    """d output[target] / d x for a batch, in chunks of at most ``chunk`` inputs."""
    grads = []
    for part in torch.split(x, max(chunk, 1)):
        part = part.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(forward(part)[:, target].sum(), part)
        grads.append(g)
    return torch.cat(grads)


def grad(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """Vanilla gradient of the target output w.r.t. the input (Simonyan et al. 2014)."""
    return Saliency(ctx.forward).attribute(x, target=target, abs=False)


def _ig(
    ctx: ExplainContext, x: torch.Tensor, target: int, n_steps: int, baseline: str, integration: str
) -> torch.Tensor:
    """Captum IG with at most ``ctx.max_batch_inputs`` model inputs per forward pass.

    Images are taken ``cap // n_steps`` at a time so each pass holds all their steps; with more
    steps than the cap, one image at a time and Captum splits its steps.
    """
    ig = IntegratedGradients(ctx.forward)
    cap = max(ctx.max_batch_inputs, 1)
    per_chunk = max(cap // n_steps, 1)
    out = []
    for part in torch.split(x, per_chunk):
        out.append(
            ig.attribute(
                part,
                baselines=_baseline(part, baseline),
                target=target,
                n_steps=n_steps,
                method=integration,
                internal_batch_size=min(len(part) * n_steps, cap) if n_steps <= cap else cap,
            )
        )
    return torch.cat(out)


def integrated_gradients(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """Integrated Gradients from a constant baseline (Sundararajan et al. 2017)."""
    return _ig(ctx, x, target, params["n_steps"], params["baseline"], params["integration"])


def _noisy_samples(ctx: ExplainContext, x: torch.Tensor, params: dict) -> torch.Tensor:
    """(B * n_samples) x C x H x W noisy copies; noise sd = noise_level x each image's value range."""
    b, n = x.shape[0], params["n_samples"]
    seeds = ctx.noise_seeds if ctx.noise_seeds is not None else list(range(b))
    if len(seeds) != b:
        raise ValueError(f"{len(seeds)} noise seeds for {b} images")
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(b, 1, 1, 1, 1)
    noise = torch.stack(
        [torch.randn((n, *x.shape[1:]), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    ).to(x.device, x.dtype)
    return (x.unsqueeze(1) + noise * params["noise_level"] * span).reshape(b * n, *x.shape[1:])


def _aggregate(samples: torch.Tensor, b: int, squared: bool) -> torch.Tensor:
    samples = samples.reshape(b, -1, *samples.shape[1:])
    return (samples**2 if squared else samples).mean(dim=1)


def smoothgrad(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017) as the papers used it: mean of squared noisy gradients."""
    noisy = _noisy_samples(ctx, x, params)
    grads = input_gradients(ctx.forward, noisy, target, ctx.max_batch_inputs)
    return _aggregate(grads, x.shape[0], params["squared"])


def smooth_integrated_gradients(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """SmoothGrad over Integrated Gradients (SIG): IG of each noisy copy, squared, averaged."""
    noisy = _noisy_samples(ctx, x, params)
    igs = _ig(ctx, noisy, target, params["n_steps"], params["baseline"], params["integration"])
    return _aggregate(igs, x.shape[0], params["squared"])


def grad_cam(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """Grad-CAM on the last conv block with ReLU, upsampled to the input (Selvaraju et al. 2017)."""
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
    return InputXGradient(ctx.forward).attribute(x, target=target)


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
    return LRP(model).attribute(x, target=target)


def xrai(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """XRAI (Kapishnikov et al. 2019): IG with black and white baselines, averaged, over segments."""
    ig = (
        _ig(ctx, x, target, params["n_steps"], "black", params["integration"])
        + _ig(ctx, x, target, params["n_steps"], "white", params["integration"])
    ) / 2
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
