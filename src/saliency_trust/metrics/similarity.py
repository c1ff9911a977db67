"""Map-to-map similarity: SSIM and Otsu IoU (docs/criteria.md; Arun et al., "Repeatability and Reproducibility").

:func:`ssim` is scikit-image's ``structural_similarity`` (Wang et al. 2004) with
its defaults: a 7 x 7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance
(N / (N - 1) with N = 49), an explicit ``data_range``, and the mean of the SSIM
image after cropping the 3 border pixels the window cannot cover. It is
computed in batch and in float64 (float32 maps too, so it equals scikit-image
on float64 copies of the maps; scikit-image itself keeps float32 maps in
float32): with torch on the GPU (window sums by cumulative sums over the valid
region) and with numpy on the CPU, where the 7 x 7 window sums of the four
statistics are contiguous shifted adds over a few pairs at a time that stay in
the CPU cache (faster than scikit-image's per-pair loop at every map size,
benchmarks/ssim_speed.py); thousands of pairs cost one call. With
``data_range`` > 0 the constants C1 and C2 are positive, so the value is defined for constant maps too: two equal
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
    ``skimage.metrics.structural_similarity(x[i], y[i], data_range=data_range[i])`` on float64 copies of the
    maps. CUDA tensors are computed on their GPU with torch, ``batch_pairs`` pairs at a time; everything else
    on the CPU with numpy (:func:`_ssim_numpy`), at most ``batch_pairs`` pairs at a time and fewer where the
    maps are large, so that the working set stays in the CPU cache.
    """
    # A tensor argument means its caller imported torch; numpy maps (every metrics job) never need it, so the
    # metrics env does not install torch.
    torch = sys.modules.get("torch")

    def is_tensor(a) -> bool:
        return torch is not None and torch.is_tensor(a)

    ranges = np.asarray(data_range, dtype=np.float64)
    if not np.all(ranges > 0):
        raise ValueError(f"SSIM data_range must be positive, got {data_range}")
    if batch_pairs < 1:
        raise ValueError(f"SSIM batch_pairs must be at least 1, got {batch_pairs}")
    on_gpu = is_tensor(x) and x.is_cuda
    if on_gpu:
        xt, yt = x, torch.as_tensor(y, device=x.device)
    else:
        # no copy here: each batch is converted to float64 while it is copied into the working buffers
        xt = np.asarray(x.detach().cpu().numpy() if is_tensor(x) else x)
        yt = np.asarray(y.detach().cpu().numpy() if is_tensor(y) else y)
    if tuple(xt.shape) != tuple(yt.shape):
        raise ValueError(f"SSIM of maps with different shapes {tuple(xt.shape)} and {tuple(yt.shape)}")
    if xt.ndim == 2:
        xt, yt = xt[None], yt[None]
    if xt.ndim != 3:
        raise ValueError(f"SSIM expects N x H x W maps, got shape {tuple(xt.shape)}")
    if min(xt.shape[1:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs maps of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels, got {tuple(xt.shape[1:])}")
    if ranges.ndim != 0 and ranges.shape != (len(xt),):
        raise ValueError(f"{ranges.shape} data ranges for {len(xt)} pairs of maps")
    if not on_gpu:
        return _ssim_numpy(xt, yt, ranges, batch_pairs)
    if ranges.ndim == 0:
        out = [
            _ssim_batch_torch(xt[i : i + batch_pairs], yt[i : i + batch_pairs], float(ranges))
            for i in range(0, len(xt), batch_pairs)
        ]
    else:
        per_pair = torch.as_tensor(ranges[:, None, None], device=xt.device)
        out = [
            _ssim_batch_torch(xt[i : i + batch_pairs], yt[i : i + batch_pairs], per_pair[i : i + batch_pairs])
            for i in range(0, len(xt), batch_pairs)
        ]
    if not out:
        return np.zeros(0)
    return torch.cat(out).cpu().numpy()


def _ssim_from_means(ux, uy, uxx, uyy, uxy, data_range: float):
    n = SSIM_WINDOW * SSIM_WINDOW
    cov_norm = n / (n - 1.0)  # sample covariance, as skimage's default
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


# Pixels (pairs x rows x columns) the CPU path works on at a time: its three float64 buffers of four window
# statistics (96 bytes a pixel, 3 MB) stay in the CPU cache, where scikit-image's per-pair loop runs too.
# Measured with benchmarks/ssim_speed.py; larger batches spill to memory and are slower than that loop.
_SSIM_CPU_PIXELS = 32768


def _ssim_numpy(x: np.ndarray, y: np.ndarray, ranges: np.ndarray, batch_pairs: int) -> np.ndarray:
    """SSIM of (N x H x W) maps on the CPU, in float64, a few pairs (or, for large maps, a strip of rows of one
    pair) at a time; ``ranges`` is one data range or N."""
    n, h, w = x.shape
    r = SSIM_WINDOW - 1
    k = SSIM_WINDOW * SSIM_WINDOW
    # window *sums* (not means) enter the formula: with A = sum x, B = sum y, the factors of SSIM are
    # k^2 (2 mu_x mu_y + C1) = 2AB + k^2 C1 and k^2 (mu_x^2 + mu_y^2 + C1) = A^2 + B^2 + k^2 C1, and, with the
    # sample covariance factor k / (k - 1) cancelled, (k - 1) k (2 cov + C2) = 2 (k sum xy - AB) + k (k - 1) C2
    # and (k - 1) k (var_x + var_y + C2) = k sum (x^2 + y^2) - A^2 - B^2 + k (k - 1) C2
    c1 = k * k * (SSIM_K1 * ranges) ** 2
    c2 = k * (k - 1) * (SSIM_K2 * ranges) ** 2
    if ranges.ndim:
        c1, c2 = c1[:, None], c2[:, None]
    pairs = max(1, min(batch_pairs, n, _SSIM_CPU_PIXELS // (h * w)))
    rows = h - r  # output rows (valid windows) per piece; a large map goes in strips of rows, r rows overlapping
    if pairs == 1:
        rows = min(rows, max(16, _SSIM_CPU_PIXELS // w - r))
    size = 4 * pairs * (rows + r) * w + r * w + r  # four statistics, and a finite tail the shifted sums read
    work = [np.zeros(size) for _ in range(3)]
    total = np.zeros(n)
    for i in range(0, n, pairs):
        cc = (c1, c2) if not ranges.ndim else (c1[i : i + pairs], c2[i : i + pairs])
        for r0 in range(0, h - r, rows):
            piece = np.s_[i : i + pairs, r0 : r0 + rows + r]
            total[i : i + pairs] += _ssim_batch_numpy(x[piece], y[piece], *cc, work)
    return total / ((h - r) * (w - r))


def _window_sums_flat(src: np.ndarray, step: int, tmp: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[i] = src[i] + src[i + step] + ... + src[i + 6 step]`` for ``i < len(src) - 6 step`` (1-D, contiguous).

    On maps flattened row by row, ``step`` = 1 sums 7 columns and ``step`` = W sums 7 rows: contiguous numpy
    adds, where a window crossing the end of a row (or of a map) gives garbage that the caller never reads.
    Four adds by doubling (1 + 1 -> 2, 2 + 2 -> 4, 4 + 2 -> 6, 6 + 1 -> 7); ``tmp`` and ``out`` are
    buffers as long as ``src``, distinct from it and from each other.
    """
    n = len(src)
    two = tmp[: n - step]
    np.add(src[: n - step], src[step:], out=two)
    four = out[: n - 3 * step]
    np.add(two[: n - 3 * step], two[2 * step :], out=four)
    six = four[: n - 5 * step]
    six += two[4 * step :]
    seven = six[: n - 6 * step]
    seven += src[6 * step :]
    return seven


def _ssim_batch_numpy(x: np.ndarray, y: np.ndarray, c1, c2, work: list[np.ndarray]) -> np.ndarray:
    """Per pair of (n x h x w) maps, the *sum* of the SSIM image over the valid windows ((h - 6) x (w - 6)).

    ``c1`` and ``c2`` are k^2 C1 and k (k - 1) C2 (k = 49), scalars or (n x 1); ``work`` holds three float64
    buffers of at least 4 n h w + 6 w + 6 values whose tails beyond 4 n h w are finite. The four window
    statistics (x, y, xy, x^2 + y^2) are stacked in one flat buffer, so each step is one contiguous numpy
    call on all of them.
    """
    n, h, w = x.shape
    r = SSIM_WINDOW - 1
    m = n * h * w
    stats, tmp, part = work

    def plane(buf, j):  # statistic j of the n maps, as (n x h w)
        return buf[j * m : (j + 1) * m].reshape(n, h * w)

    np.copyto(stats[:m].reshape(n, h, w), x)  # converts to float64
    np.copyto(stats[m : 2 * m].reshape(n, h, w), y)
    xs, ys = plane(stats, 0), plane(stats, 1)
    np.multiply(xs, ys, out=plane(stats, 2))
    np.multiply(xs, xs, out=plane(stats, 3))
    np.multiply(ys, ys, out=plane(tmp, 0))
    plane(stats, 3)[...] += plane(tmp, 0)
    rows = _window_sums_flat(stats[: 4 * m + r * w + r], w, tmp, part)  # 7-row sums
    _window_sums_flat(rows, 1, tmp, stats)  # then 7-column sums: 7 x 7 window sums, in stats[: 4 m]
    a, b, sxy, sq = (plane(stats, j) for j in range(4))
    ab, q, s = plane(tmp, 0), plane(tmp, 1), plane(tmp, 2)
    k = SSIM_WINDOW * SSIM_WINDOW
    np.multiply(a, b, out=ab)
    np.multiply(a, a, out=q)
    np.multiply(b, b, out=s)
    q += s
    ab *= 2
    ab += c1  # luminance numerator 2AB + c1
    sxy *= 2 * k
    sxy -= ab
    sxy += c1 + c2  # structure numerator 2 (k sum xy - AB) + c2
    q += c1  # luminance denominator A^2 + B^2 + c1
    sq *= k
    sq -= q
    sq += c1 + c2  # structure denominator k sum (x^2 + y^2) - A^2 - B^2 + c2
    np.multiply(ab, sxy, out=s)
    np.multiply(q, sq, out=ab)
    with np.errstate(divide="ignore", invalid="ignore"):  # only windows that cross a map's edge (not read)
        s /= ab
    return s.reshape(n, h, w)[:, : h - r, : w - r].sum(axis=(1, 2))


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
