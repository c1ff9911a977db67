"""True guided backpropagation for any ReLU network (Springenberg et al. 2015; docs/saliency.md).

Guided backprop passes a gradient through a ReLU only where both the forward
input and the incoming gradient are positive. Captum implements it with hooks on
``nn.ReLU`` modules, which misses ReLUs applied through ``torch.nn.functional``:
torchvision's Inception v3 calls ``F.relu`` inside every ``BasicConv2d`` and
DenseNet applies its final ReLU that way, so hook-based guided backprop silently
degrades towards plain gradients on the papers' networks.

:func:`guided_relus` instead replaces the ReLU function itself for the duration
of a ``with`` block: ``F.relu`` (which every ``nn.ReLU`` module calls),
``F.relu_``, ``torch.relu`` and ``torch.relu_`` become a ReLU whose backward
applies the guided rule. In-place requests are served out of place, which is
safe because callers use the returned tensor.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F

_LOCK = threading.Lock()


class GuidedReLUFunction(torch.autograd.Function):
    """ReLU forward; backward ``grad.clamp(min=0) * (output > 0)``, as ReLU's own backward (one fused pass)
    followed by an in-place clamp of its fresh result: two passes over the activation instead of four."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D401
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0).clamp_(min=0)


def _guided(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:  # noqa: A002 - F.relu's signature
    return GuidedReLUFunction.apply(input)


def _guided_unary(input: torch.Tensor) -> torch.Tensor:  # noqa: A002
    return GuidedReLUFunction.apply(input)


@contextlib.contextmanager
def guided_relus() -> Iterator[None]:
    """Within the block, every ReLU (module or functional) backpropagates the guided way."""
    patches = [
        (F, "relu", _guided),
        (F, "relu_", _guided_unary),
        (torch, "relu", _guided_unary),
        (torch, "relu_", _guided_unary),
    ]
    with _LOCK:
        saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
        try:
            for mod, name, fn in patches:
                setattr(mod, name, fn)
            yield
        finally:
            for mod, name, fn in saved:
                setattr(mod, name, fn)
