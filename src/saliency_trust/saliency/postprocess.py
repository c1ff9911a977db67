"""Post-processing of raw attributions into [0, 1] maps, as the papers did (docs/saliency.md).

Arun et al. visualised maps with the PAIR ``saliency`` package's
``VisualizeImageGrayscale``: sum of absolute values over channels, then
``(m - min) / (p99 - min)`` clipped to [0, 1]. XRAI maps are min-max scaled.
Only a truly constant map (for example an all-zero Grad-CAM) becomes all zeros.
A map with fewer than 1 % non-minimal pixels has its 99th percentile equal to
its minimum; it is scaled by its maximum instead, so it keeps its few salient
pixels (zeroing it would make two such maps look identical, SSIM 1).
"""

from __future__ import annotations

import numpy as np


def abs_sum_percentile(raw: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """B x C x H x W raw attributions -> B x H x W maps in [0, 1]."""
    m = np.abs(raw).sum(axis=1)
    flat = m.reshape(len(m), -1)
    vmax = np.percentile(flat, percentile, axis=1)
    vmin = flat.min(axis=1)
    vmax = np.where(vmax > vmin, vmax, flat.max(axis=1))  # sparse map: scale by the maximum
    span = (vmax - vmin)[:, None, None]
    out = np.divide(m - vmin[:, None, None], span, out=np.zeros_like(m), where=span > 0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def min_max(raw: np.ndarray) -> np.ndarray:
    """B x C x H x W -> B x H x W: channels reduced by max, then scaled to [0, 1] per image."""
    m = raw.max(axis=1)
    flat = m.reshape(len(m), -1)
    lo, hi = flat.min(axis=1)[:, None, None], flat.max(axis=1)[:, None, None]
    span = hi - lo
    return np.divide(m - lo, span, out=np.zeros_like(m), where=span > 0).astype(np.float32)


POSTPROCESSORS = {"abs_percentile": abs_sum_percentile, "min_max": min_max}
