"""Saliency engine speed against naive per-image Captum loops, and XRAI against the reference.

Prints, measured in the same run on the same model and images:

1. maps per second per method for our batched engine
   (:func:`saliency_trust.saliency.compute.compute_saliency`) and for a naive
   loop that calls Captum once per image (IG: ``IntegratedGradients``; SG and
   SIG: ``NoiseTunnel`` with ``smoothgrad_sq``, 25 samples, noise 15 % of the
   image range), the ratio, and how well the maps agree (IG: max relative
   difference; SG/SIG draw different noise, so the Pearson correlation of the
   post-processed maps);
2. XRAI region growing per image, ours (vectorized, full and fast) against the
   PAIR ``saliency`` package's ``XRAI`` given the same segments and
   attributions, the ratio, and whether the maps are equal.

Goals (issue "all saliency methods"): engine >= 3x the naive loop for SG, IG
and SIG on the CPU; XRAI >= 10x the reference per image.

Usage: python benchmarks/saliency_speed.py [--arch simple_cnn] [--size 64] [--images 16] [--device auto] [--parts engine,xrai]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

from saliency_trust.data.synthetic import SyntheticSpec, generate_image
from saliency_trust.models.registry import build_model
from saliency_trust.models.train import select_device
from saliency_trust.saliency.compute import compute_saliency
from saliency_trust.saliency.methods import resolve_params
from saliency_trust.saliency.postprocess import abs_sum_percentile
from saliency_trust.saliency.xrai import felzenszwalb_segments, segment_masks, xrai_fast, xrai_full


def naive_captum(model, images, key, params, device):
    """One Captum call per image, the way a notebook would do it."""
    out = []
    for img in images:
        x = torch.from_numpy(img)[None, None].to(device).requires_grad_(True)
        span = float(img.max() - img.min())
        if key == "IG":
            a = IntegratedGradients(model).attribute(
                x, baselines=torch.zeros_like(x), target=0, n_steps=params["n_steps"]
            )
        elif key == "SG":
            a = NoiseTunnel(Saliency(model)).attribute(
                x,
                nt_type="smoothgrad_sq",
                nt_samples=params["n_samples"],
                stdevs=params["noise_level"] * span,
                target=0,
                abs=False,
            )
        else:  # SIG
            a = NoiseTunnel(IntegratedGradients(model)).attribute(
                x,
                nt_type="smoothgrad_sq",
                nt_samples=params["n_samples"],
                stdevs=params["noise_level"] * span,
                target=0,
                baselines=torch.zeros_like(x),
                n_steps=params["n_steps"],
            )
        out.append(a.detach().cpu().numpy())
    return np.concatenate(out)


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    result = fn(*args, **kw)
    return result, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="simple_cnn")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--input-size", type=int, default=None, help="native input size of torchvision networks")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-batch-inputs", type=int, default=64)
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--parts", default="engine,xrai", help="comma list of: engine, xrai")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    torch.manual_seed(0)
    model = build_model(args.arch, 1, input_size=args.input_size).eval().to(device)
    spec = SyntheticSpec(image_size=args.size)
    images = np.stack([generate_image(spec, 1, k).image for k in range(args.images)])
    print(
        f"model {args.arch}, {args.images} images of {args.size} px, device {device}, {args.threads} thread(s), "
        f"max_batch_inputs {args.max_batch_inputs}"
    )
    parts = set(args.parts.split(","))
    if "engine" in parts:
        engine_vs_naive(model, args, images, device)
    if "xrai" in parts:
        xrai_vs_reference(images, args.size)


def engine_vs_naive(model, args, images, device) -> None:
    print(f"{'method':<6} {'ours maps/s':>12} {'naive maps/s':>13} {'ratio':>7}  agreement")
    for key in ("IG", "SG", "SIG"):
        params = resolve_params(key, {})
        naive, t_naive = timed(naive_captum, model, images, key, params, device)
        (ours, _), t_ours = timed(
            compute_saliency,
            model,
            args.arch,
            images,
            key,
            params,
            0,
            batch_size=args.images,
            device=device,
            max_batch_inputs=args.max_batch_inputs,
            amp=args.amp,
        )
        if key == "IG":
            agree = f"max |diff| / max |attr| = {np.abs(ours - naive).max() / np.abs(naive).max():.2e}"
        else:
            a, b = abs_sum_percentile(ours).ravel(), abs_sum_percentile(naive).ravel()
            agree = f"Pearson r of maps = {np.corrcoef(a, b)[0, 1]:.3f} (different noise draws)"
        n = len(images)
        print(f"{key:<6} {n / t_ours:>12.2f} {n / t_naive:>13.2f} {t_naive / t_ours:>6.2f}x  {agree}")


def xrai_vs_reference(images, size) -> None:
    import saliency.core as pair

    print(f"\nXRAI per image (same segments and attributions), {size} px")
    rng = np.random.default_rng(0)
    t_expand, times, equal = 0.0, {"full": [0.0, 0.0], "fast": [0.0, 0.0]}, True
    for img in images:
        labels = felzenszwalb_segments(img)
        attr = img * rng.standard_normal(img.shape)
        masks, t = timed(segment_masks, labels)
        t_expand += t
        ref_masks = [np.asarray(masks[i].todense()).reshape(img.shape).astype(bool) for i in range(masks.shape[0])]
        for algo, fn in (("full", xrai_full), ("fast", xrai_fast)):
            ours, t_ours = timed(fn, attr, masks)
            ref, t_ref = timed(
                pair.XRAI().GetMask,
                img[..., None],
                None,
                segments=ref_masks,
                base_attribution=attr[..., None],
                extra_parameters=pair.XRAIParameters(algorithm=algo),
            )
            times[algo][0] += t_ours
            times[algo][1] += t_ref
            equal &= bool(np.allclose(ours, ref, rtol=1e-9, atol=1e-12))
    n = len(images)
    print(
        f"mask expansion (labels -> dilated sparse masks, once per image and job): {1000 * t_expand / n:.1f} ms/image"
    )
    for algo, (t_ours, t_ref) in times.items():
        print(
            f"XRAI {algo:<4}  ours {1000 * t_ours / n:8.1f} ms/image  reference {1000 * t_ref / n:8.1f} ms/image  "
            f"ratio {t_ref / t_ours:6.1f}x  (with mask expansion {t_ref / (t_ours + t_expand):5.1f}x)"
        )
    print(f"XRAI maps equal to the reference: {equal}")


if __name__ == "__main__":
    main()
