"""Test-time augmentation of the TTA baseline (Shu et al., INFORMER, "Benchmarking Baselines" and
"Implementation"; Wang et al. 2019): seeded random rotation, box blur and random crop with zero padding of each
image, the model's sigmoid outputs on every pass, and their spread (docs/quality-control.md)."""

from __future__ import annotations

import numpy as np

from saliency_trust.qc.scores import TTASettings


def box_blur(x, kernel: int):
    """Mean over a ``kernel`` x ``kernel`` window of a B x C x H x W tensor, edges repeated; for an even kernel
    the window is the one of ``scipy.ndimage.uniform_filter`` (``kernel // 2`` pixels before, the rest after)."""
    import torch.nn.functional as F

    if kernel <= 1:
        return x
    before, after = kernel // 2, (kernel - 1) // 2
    padded = F.pad(x, (before, after, before, after), mode="replicate")
    return F.avg_pool2d(padded, kernel, stride=1)


def augmentation_draws(seed: int, passes: int, settings: TTASettings) -> tuple[np.ndarray, np.ndarray]:
    """The random parameters of one image's passes from its own stream: rotation angles (degrees, uniform in
    [-rotation, rotation]) and crop offsets (passes x 2 integers in [0, 2 padding])."""
    rng = np.random.default_rng(seed)
    angles = rng.uniform(-settings.rotation, settings.rotation, size=passes)
    offsets = rng.integers(0, 2 * settings.crop_padding + 1, size=(passes, 2))
    return angles, offsets


def augment(image, angle: float, offset: tuple[int, int], settings: TTASettings):
    """One augmented copy of a C x H x W tensor: rotation by ``angle`` (torchvision, nearest, zero fill), box
    blur, then the crop at ``offset`` (row, column) of the image padded with ``crop_padding`` zeros: what
    torchvision's ``RandomCrop(size, padding)`` draws."""
    import torch.nn.functional as F
    from torchvision.transforms.v2 import functional as TF

    out = TF.rotate(image, float(angle)) if settings.rotation else image
    out = box_blur(out[None], settings.blur_kernel)[0]
    pad = settings.crop_padding
    if pad:
        h, w = out.shape[-2:]
        padded = F.pad(out, (pad, pad, pad, pad))
        out = padded[..., int(offset[0]) : int(offset[0]) + h, int(offset[1]) : int(offset[1]) + w]
    return out


def tta_probabilities(
    model, images: np.ndarray, seeds: list[int], settings: TTASettings, device, max_batch: int = 64
) -> np.ndarray:
    """Sigmoid outputs of every augmented pass: N x passes x L for N x H x W images; image ``k``'s passes come
    from ``seeds[k]`` alone, so they do not depend on the batch. The model (put in eval mode) sees at most
    ``max_batch`` augmented copies per forward pass."""
    import torch

    model.eval()
    max_batch = max(int(max_batch), 1)
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).unsqueeze(1)
    copies = []
    for k in range(len(x)):
        angles, offsets = augmentation_draws(seeds[k], settings.passes, settings)
        copies += [augment(x[k], a, o, settings) for a, o in zip(angles, offsets)]
    out = []
    with torch.no_grad():
        for start in range(0, len(copies), max_batch):
            logits = model(torch.stack(copies[start : start + max_batch]).to(device)).float()
            if not torch.isfinite(logits).all():
                raise FloatingPointError("the model outputs NaN/inf on an augmented image")
            out.append(torch.sigmoid(logits).cpu().numpy())
    return np.concatenate(out).reshape(len(x), settings.passes, -1)


def tta_spread(pass_probabilities: np.ndarray) -> np.ndarray:
    """Standard deviation (ddof 1) over the passes of each class's sigmoid output: N x passes x L -> N x L."""
    return np.asarray(pass_probabilities, np.float64).std(axis=1, ddof=1)
