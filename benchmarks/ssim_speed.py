"""Batched SSIM (torch on a GPU, scipy on the CPU) against a scikit-image loop, measured in the same run.

Prints pairs per second for :func:`saliency_trust.metrics.similarity.ssim` (one
batched call) and for ``skimage.metrics.structural_similarity`` called once
per pair, the ratio, and the largest absolute difference between the two.
Maps are smooth random fields in [0, 1] (blurred noise, clipped at the 99th
percentile like the post-processed saliency maps).

Usage: python benchmarks/ssim_speed.py [--pairs 2000] [--size 64] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from saliency_trust.metrics.similarity import ssim


def smooth_maps(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    raw = gaussian_filter(rng.standard_normal((n, size, size)), sigma=(0, 3, 3))
    raw = np.abs(raw)
    top = np.percentile(raw.reshape(n, -1), 99, axis=1)[:, None, None]
    return np.clip(raw / top, 0, 1).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    a, b = smooth_maps(args.pairs, args.size, rng), smooth_maps(args.pairs, args.size, rng)

    ssim(a[:8], b[:8])  # warm-up
    t0 = time.perf_counter()
    ta, tb = torch.from_numpy(a).to(args.device), torch.from_numpy(b).to(args.device)
    ours = ssim(ta, tb, data_range=1.0)
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = np.array([structural_similarity(x, y, data_range=1.0) for x, y in zip(a, b)])
    t_ref = time.perf_counter() - t0

    print(
        f"SSIM of {args.pairs} pairs of {args.size} x {args.size} maps, device {args.device}, {args.threads} thread(s)"
    )
    print(f"ours (batched)         {args.pairs / t_ours:10.0f} pairs/s")
    print(f"scikit-image loop      {args.pairs / t_ref:10.0f} pairs/s")
    print(f"ratio                  {t_ref / t_ours:10.1f}x")
    print(f"max |ours - skimage|   {np.abs(ours - ref).max():10.2e}")


if __name__ == "__main__":
    main()
