"""Map-to-map similarity: SSIM and Otsu IoU (docs/criteria.md; Arun et al., "Repeatability and Reproducibility").

:func:`ssim` is scikit-image's ``structural_similarity`` (Wang et al. 2004) with
its defaults: a 7 x 7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance
(N / (N - 1) with N = 49), an explicit ``data_range``, and the mean of the SSIM
image after cropping the 3 border pixels the window cannot cover. It is
computed in batch, in float64: with torch on the GPU (window sums by
cumulative sums over the valid region) and with scipy's separable box filter
on the CPU, where it is faster than torch; thousands of pairs cost one call. With ``data_range`` > 0 the constants C1 and
C2 are positive, so the value is defined for constant maps too: two equal
constant maps give 1, a constant map against a structured one gives
(2 mu_x mu_y + C1) C2 / ((mu_x^2 + mu_y^2 + C1) (var_y + C2)) averaged over the
windows (small when the other map has structure). Post-processed maps lie in
[0, 1], so the pipeline uses ``data_range = 1``.

Which maps SSIM compares (config ``metrics.similarity_maps``): ``processed``
(default) compares the post-processed maps, as the authors' released code of
Arun et al. did, with the fixed data range above, so SSIM values (and the
LOW = 0.5 cut-off, which depends on the data range through C1 and C2) mean the
same for every method. ``raw`` compares the signed, channel-summed raw
attributions without absolute values, as the paper's footnote 2 describes; raw
scales differ between methods and models, so each pair gets its own data range
(max - min over both maps, :func:`pair_data_range`). Otsu IoU always uses the
processed maps.

:func:`otsu_iou` binarizes each map at its own Otsu threshold (foreground =
value > threshold, scikit-image's convention) and returns the intersection over
union of the two foregrounds; a constant map has an empty foreground, and two
empty foregrounds count as identical (IoU 1).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from skimage.filters import threshold_otsu

SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


SIMILARITY_MAPS = ("processed", "raw")


def ssim(x, y, data_range=1.0, batch_pairs: int = 64) -> np.ndarray:
    """SSIM of each pair of maps: ``x`` and ``y`` are (N x H x W) or (H x W) arrays or tensors; returns N values.

    ``data_range`` is one number or one per pair. Equal to
    ``skimage.metrics.structural_similarity(x[i], y[i], data_range=data_range[i])``. Pairs are
    processed ``batch_pairs`` at a time (small batches stay in the CPU cache); CUDA tensors are
    computed on their GPU with torch, everything else on the CPU with scipy's separable box filter.
    """
    # A tensor argument means its caller imported torch; numpy maps (every metrics job) never need it, so the
    # metrics env does not install torch.
    torch = sys.modules.get("torch")

    def is_tensor(a) -> bool:
        return torch is not None and torch.is_tensor(a)

    ranges = np.asarray(data_range, dtype=np.float64)
    if not np.all(ranges > 0):
        raise ValueError(f"SSIM data_range must be positive, got {data_range}")
    on_gpu = is_tensor(x) and x.is_cuda
    if on_gpu:
        xt, yt = x, torch.as_tensor(y, device=x.device)
    else:
        xt = np.asarray(x.detach().cpu().numpy() if is_tensor(x) else x)
        yt = np.asarray(y.detach().cpu().numpy() if is_tensor(y) else y)
        # float32 maps stay float32, as in scikit-image (``_supported_float_type``); anything else is float64
        dtype = np.float32 if xt.dtype == yt.dtype == np.float32 else np.float64
        xt, yt = np.ascontiguousarray(xt, dtype=dtype), np.ascontiguousarray(yt, dtype=dtype)
    if tuple(xt.shape) != tuple(yt.shape):
        raise ValueError(f"SSIM of maps with different shapes {tuple(xt.shape)} and {tuple(yt.shape)}")
    if xt.ndim == 2:
        xt, yt = xt[None], yt[None]
    if xt.ndim != 3:
        raise ValueError(f"SSIM expects N x H x W maps, got shape {tuple(xt.shape)}")
    if min(xt.shape[1:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs maps of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels, got {tuple(xt.shape[1:])}")
    batch = _ssim_batch_torch if on_gpu else _ssim_batch_numpy
    if ranges.ndim == 0:
        out = [
            batch(xt[i : i + batch_pairs], yt[i : i + batch_pairs], float(ranges))
            for i in range(0, len(xt), batch_pairs)
        ]
    else:
        if ranges.shape != (len(xt),):
            raise ValueError(f"{ranges.shape} data ranges for {len(xt)} pairs of maps")
        per_pair = ranges[:, None, None]
        if on_gpu:
            per_pair = torch.as_tensor(per_pair, device=xt.device)
        out = [
            batch(xt[i : i + batch_pairs], yt[i : i + batch_pairs], per_pair[i : i + batch_pairs])
            for i in range(0, len(xt), batch_pairs)
        ]
    if not out:
        return np.zeros(0)
    return torch.cat(out).cpu().numpy() if on_gpu else np.concatenate(out)


def _ssim_from_means(ux, uy, uxx, uyy, uxy, data_range: float):
    n = SSIM_WINDOW * SSIM_WINDOW
    cov_norm = n / (n - 1.0)  # sample covariance, as skimage's default
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def _ssim_batch_numpy(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    pad = (SSIM_WINDOW - 1) // 2
    size = (1, SSIM_WINDOW, SSIM_WINDOW)

    def mean(t):  # window means; the border the window cannot cover is cropped below, as skimage does
        return uniform_filter(t, size=size)[:, pad:-pad, pad:-pad]

    s = _ssim_from_means(mean(x), mean(y), mean(x * x), mean(y * y), mean(x * y), data_range)
    return s.mean(axis=(1, 2), dtype=np.float64)


def _window_sums(t, w: int):
    """Sums over every valid w x w window (N x C x H x W -> N x C x (H-w+1) x (W-w+1)), by cumulative sums."""
    import torch.nn.functional as F  # gpu-only: CUDA tensors bring torch; the metrics env has none

    c = F.pad(t.cumsum(-1), (1, 0))
    t = c[..., w:] - c[..., :-w]
    c = F.pad(t.cumsum(-2), (0, 0, 1, 0))
    return c[..., w:, :] - c[..., :-w, :]


def _ssim_batch_torch(x, y, data_range: float):
    import torch  # gpu-only: CUDA tensors bring torch; the metrics env has none

    x = x.to(torch.float64)
    y = y.to(torch.float64)
    # the five local means in one pass over the valid windows (= skimage's cropped region)
    means = _window_sums(torch.stack([x, y, x * x, y * y, x * y], dim=1), SSIM_WINDOW) / SSIM_WINDOW**2
    return _ssim_from_means(*means.unbind(dim=1), data_range).mean(dim=(1, 2))


def otsu_mask(saliency_map: np.ndarray) -> np.ndarray:
    """Foreground of a map at its Otsu threshold (empty for a constant map)."""
    m = np.asarray(saliency_map, dtype=np.float64)
    if not np.isfinite(m).all():
        raise ValueError("map contains NaN or inf")
    if m.max() == m.min():
        return np.zeros(m.shape, bool)
    return m > threshold_otsu(m)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; 1 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks; 1 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def otsu_iou(x: np.ndarray, y: np.ndarray) -> float:
    """IoU of the Otsu foregrounds of two maps."""
    return iou(otsu_mask(x), otsu_mask(y))


SIMILARITY_COLUMNS = ["image_id", "criterion", "model_a", "model_b", "method", "metric", "value"]


def pair_data_range(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per pair of (N x H x W) maps: max - min over both maps (1 where both are the same constant)."""
    hi = np.maximum(x.reshape(len(x), -1).max(axis=1), y.reshape(len(y), -1).max(axis=1))
    lo = np.minimum(x.reshape(len(x), -1).min(axis=1), y.reshape(len(y), -1).min(axis=1))
    span = (hi - lo).astype(np.float64)
    return np.where(span > 0, span, 1.0)


def check_similarity_maps(kind: str) -> None:
    if kind not in SIMILARITY_MAPS:
        raise ValueError(f"metrics.similarity_maps: '{kind}' is not one of {list(SIMILARITY_MAPS)}")


def compare_maps(x: np.ndarray, y: np.ndarray, kind: str = "processed", data_range: float = 1.0) -> np.ndarray:
    """SSIM of each pair: processed maps with the fixed ``data_range``, raw maps with each pair's own range."""
    check_similarity_maps(kind)
    if kind == "raw":
        return ssim(x, y, pair_data_range(np.asarray(x), np.asarray(y)))
    return ssim(x, y, data_range)


def signed_raw(raw: np.ndarray) -> np.ndarray:
    """Raw attributions (... x C x H x W) summed over channels without absolute values (... x H x W)."""
    return np.asarray(raw, dtype=np.float32).sum(axis=-3)


def pair_similarity(
    maps_a: dict[str, np.ndarray],
    maps_b: dict[str, np.ndarray],
    criterion: str,
    model_a: str,
    model_b: str,
    method: str,
    data_range: float = 1.0,
    raw_a: dict[str, np.ndarray] | None = None,
    raw_b: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """SSIM and Otsu IoU per image between two models' maps of the same images (long table). With ``raw_a``
    and ``raw_b`` (signed H x W raw maps by image id) SSIM compares those (``similarity_maps: raw``)."""
    ids = [i for i in maps_a if i in maps_b]
    only = sorted(set(maps_a) ^ set(maps_b))
    if only:
        raise KeyError(f"{method}: image '{only[0]}' has a map from only one of {model_a}, {model_b}")
    a = np.stack([maps_a[i] for i in ids])
    b = np.stack([maps_b[i] for i in ids])
    if raw_a is not None and raw_b is not None:
        s = compare_maps(np.stack([raw_a[i] for i in ids]), np.stack([raw_b[i] for i in ids]), "raw")
    else:
        s = ssim(a, b, data_range)
    values = {"ssim": s, "iou": np.array([otsu_iou(x, y) for x, y in zip(a, b)])}
    frames = [
        pd.DataFrame(
            {
                "image_id": ids,
                "criterion": criterion,
                "model_a": model_a,
                "model_b": model_b,
                "method": method,
                "metric": metric,
                "value": v,
            }
        )
        for metric, v in values.items()
    ]
    return pd.concat(frames, ignore_index=True)[SIMILARITY_COLUMNS]


def run_similarity(
    map_paths: list[str],
    models: list[str],
    methods: list[str],
    pairs: list[list[str]],
    data_range: float,
    out_path,
    similarity_maps: str = "processed",
) -> None:
    """Stage entry: every (criterion, model_a, model_b) pair x method, from the cache files
    ``map_paths`` (one per (model, method), same order as ``models`` and ``methods``)."""
    from saliency_trust.io import write_csv
    from saliency_trust.storage.maps import read_maps

    check_similarity_maps(similarity_maps)
    raw = similarity_maps == "raw"
    maps, raws = {}, {}
    for p, mo, me in zip(map_paths, models, methods):
        cached = read_maps(p, method=me, with_raw=raw)
        maps[mo, me] = cached.by_id()
        if raw:
            raws[mo, me] = dict(zip(cached.image_ids, signed_raw(cached.raw)))
    frames = []
    for criterion, a, b in pairs:
        for method in dict.fromkeys(methods):
            if (a, method) in maps and (b, method) in maps:
                frames.append(
                    pair_similarity(
                        maps[a, method],
                        maps[b, method],
                        criterion,
                        a,
                        b,
                        method,
                        data_range,
                        raws.get((a, method)),
                        raws.get((b, method)),
                    )
                )
    if not frames:
        raise ValueError(
            "no pair of models with maps of the same method: repeatability and reproducibility need "
            "two replicates or two architectures"
        )
    write_csv(pd.concat(frames, ignore_index=True), out_path)
