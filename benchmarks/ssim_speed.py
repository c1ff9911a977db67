"""Batched SSIM against a scikit-image loop, measured in the same run, at several map sizes.

For each size (``--sizes``, square maps) prints pairs per second for
:func:`saliency_trust.metrics.similarity.ssim` on numpy maps (one call: the
CPU path) and for ``skimage.metrics.structural_similarity`` called once per
pair, the ratio (ours / scikit-image; the goal is a ratio >= 1 at every size
on the CPU) and the largest absolute difference between the two. With a torch
device (``--device``; default ``cuda`` when one is available) it also prints
:func:`ssim` on tensors on that device: pairs per second (host-to-device copy
included), the ratio to the scikit-image loop and the largest difference.
CUDA tensors take the batched torch path; tensors on other devices (``cpu``)
go to numpy and the CPU path.

Maps are smooth random fields in [0, 1] (blurred noise, clipped at the 99th
percentile like the post-processed saliency maps), float32 as the map caches
store them (``--dtype float64`` for float64). Each size gets about
``--pixels`` pixels of maps (at least ``--min-pairs`` pairs); each timing is
the best of ``--repeats`` runs, ours and scikit-image's (and the device's) alternating, on
``--threads`` threads (numpy, scipy and scikit-image use one anyway).

Usage: python benchmarks/ssim_speed.py [--sizes 32,64,128,224,299,512] [--pixels 4000000] [--min-pairs 16]
    [--repeats 3] [--dtype float32] [--device cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from saliency_trust.metrics.similarity import ssim

try:  # the metrics env has no torch: then only the CPU path is measured
    import torch
except ImportError:
    torch = None


def smooth_maps(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    raw = gaussian_filter(rng.standard_normal((n, size, size)), sigma=(0, 3, 3))
    raw = np.abs(raw)
    top = np.percentile(raw.reshape(n, -1), 99, axis=1)[:, None, None]
    return np.clip(raw / top, 0, 1).astype(np.float32)


def timed(fn, *args) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def skimage_loop(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([structural_similarity(x, y, data_range=1.0) for x, y in zip(a, b)])


def ours_on_device(a: np.ndarray, b: np.ndarray, device: str) -> np.ndarray:
    # host-to-device copy included; ssim returns numpy, so the device work has finished
    return ssim(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device), data_range=1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="32,64,128,224,299,512", help="comma-separated map sizes (pixels a side)")
    ap.add_argument("--pixels", type=float, default=4e6, help="pixels of maps per size (sets the number of pairs)")
    ap.add_argument("--min-pairs", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--device", default=None, help="torch device for the torch path (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    device = args.device
    if torch is not None:
        torch.set_num_threads(args.threads)
        if device is None and torch.cuda.is_available():
            device = "cuda"
    elif device is not None:
        raise SystemExit(f"--device {device}: torch is not installed")

    rng = np.random.default_rng(0)
    ssim(smooth_maps(2, 16, rng), smooth_maps(2, 16, rng))  # warm-up
    if device is not None:
        warm = torch.zeros(2, 16, 16, device=device)
        ssim(warm, warm)

    print(f"SSIM, batched vs a scikit-image loop: {args.dtype} maps, {args.threads} thread(s), best of {args.repeats}")
    head = f"{'size':>5} {'pairs':>6} {'ours/s':>9} {'skimage/s':>9} {'ratio':>6} {'max|diff|':>9}"
    if device is not None:
        head += f" | {device + '/s':>9} {'ratio':>6} {'max|diff|':>9}"
    print(head)
    ratios = []
    for size in sizes:
        n = max(args.min_pairs, int(args.pixels // size**2))
        a = smooth_maps(n, size, rng).astype(args.dtype)
        b = smooth_maps(n, size, rng).astype(args.dtype)
        t_ours = t_ref = t_dev = np.inf
        for _ in range(args.repeats):  # alternate, so that both see the same machine load
            t, ours = timed(ssim, a, b, 1.0)
            t_ours = min(t_ours, t)
            t, ref = timed(skimage_loop, a, b)
            t_ref = min(t_ref, t)
            if device is not None:
                t, dev = timed(ours_on_device, a, b, device)
                t_dev = min(t_dev, t)
        ratios.append(t_ref / t_ours)
        line = f"{size:5d} {n:6d} {n / t_ours:9.0f} {n / t_ref:9.0f} {t_ref / t_ours:6.2f}"
        line += f" {np.abs(ours - ref).max():9.1e}"
        if device is not None:
            line += f" | {n / t_dev:9.0f} {t_ref / t_dev:6.2f} {np.abs(dev - ref).max():9.1e}"
        print(line, flush=True)
    print(f"lowest CPU ratio {min(ratios):.2f} (goal >= 1)")


if __name__ == "__main__":
    main()
