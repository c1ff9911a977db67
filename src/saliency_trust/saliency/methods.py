"""Saliency method registry (SPEC 5; method table of Arun et al., Table 1).

Each method turns a batch of images (B x C x H x W) into raw attributions of the
same shape for one target output, and names the post-processing the papers
applied. Methods come from Captum where it has them. New methods slot in by
adding a :class:`SaliencyMethod` to :data:`METHODS`; their parameters live in
the config (``saliency.params.<KEY>``) with the defaults given here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency
from torch import nn

from saliency_trust.models.registry import get_architecture, get_submodule


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
        return torch.sigmoid(y) if self.output == "probability" else y


@dataclass
class ExplainContext:
    """What a method needs besides the images: the wrapped model and its architecture."""

    forward: TargetOutput
    arch: str

    def layer(self) -> nn.Module:
        """The last convolutional block (Grad-CAM layer) of the architecture."""
        return get_submodule(self.forward.model, get_architecture(self.arch).gradcam_layer)


def _baseline(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "white":
        return torch.ones_like(x)
    raise ValueError(f"unknown IG baseline '{kind}' (allowed: black, white)")


def grad(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """Vanilla gradient of the target output w.r.t. the input (Simonyan et al. 2014)."""
    return Saliency(ctx.forward).attribute(x, target=target, abs=False)


def integrated_gradients(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """Integrated Gradients from a constant baseline (Sundararajan et al. 2017)."""
    ig = IntegratedGradients(ctx.forward)
    return ig.attribute(
        x,
        baselines=_baseline(x, params["baseline"]),
        target=target,
        n_steps=params["n_steps"],
        method=params["integration"],
        internal_batch_size=params["internal_batch_size"],
    )


def grad_cam(ctx: ExplainContext, x: torch.Tensor, target: int, params: dict) -> torch.Tensor:
    """Grad-CAM on the last conv block with ReLU, upsampled to the input (Selvaraju et al. 2017)."""
    cam = LayerGradCam(ctx.forward, ctx.layer()).attribute(x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode=params["upsample"])


@dataclass(frozen=True)
class SaliencyMethod:
    key: str
    title: str
    attribute: Callable[[ExplainContext, torch.Tensor, int, dict], torch.Tensor]
    defaults: dict = field(default_factory=dict)
    postprocess: str = "abs_percentile"


METHODS: dict[str, SaliencyMethod] = {
    m.key: m
    for m in [
        SaliencyMethod("GRAD", "Vanilla gradient", grad),
        SaliencyMethod(
            "IG",
            "Integrated Gradients",
            integrated_gradients,
            {"n_steps": 25, "baseline": "black", "integration": "gausslegendre", "internal_batch_size": 256},
        ),
        SaliencyMethod("GCAM", "Grad-CAM", grad_cam, {"upsample": "bilinear"}),
    ]
}


def get_method(key: str) -> SaliencyMethod:
    if key not in METHODS:
        raise KeyError(f"unknown saliency method '{key}'; implemented: {sorted(METHODS)}")
    return METHODS[key]


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
