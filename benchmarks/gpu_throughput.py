"""GPU throughput of the saliency engine against the device's own forward+backward throughput (issue 17).

For each method (default: Arun et al.'s eight, GRAD SG IG SIG GCAM XRAI GBP GGCAM), each AMP setting and the
configured batch sizes, prints, measured in the same run on the same network and images:

- maps/s: maps per second of :func:`saliency_trust.saliency.compute.compute_saliency` (post-processing and the
  copy of the maps to the host included; the best of ``--repeats`` runs over ``--images`` images);
- passes/map (k): forward+backward passes one map needs (SG n_samples, IG n_steps, SIG n_steps x n_samples,
  XRAI 2 x n_steps, GGCAM 2, else 1), and the pass batch: the model inputs per pass the engine uses (the
  image batch for one-pass methods, ``max_batch_inputs`` of samples/steps for the others);
- train: passes/s of the same network's training step at the pass batch (a copy of the model in train mode,
  forward, binary cross-entropy, backward to the weights, SGD step; under AMP with autocast and a gradient
  scaler), and the fraction ``maps/s x k / train`` the engine reaches;
- input-grad: passes/s of a plain input-gradient loop at the pass batch (eval mode, frozen weights,
  ``x.requires_grad_(); model(x)[:, t].sum().backward()``: what the engine computes per pass), and the
  fraction of it.

Timings on a GPU are bracketed by ``torch.cuda.synchronize``. AMP runs use the engine's ``amp`` flag (CUDA
autocast, float16), the references the same autocast; on the CPU the engine ignores AMP, so AMP-on runs are
skipped there. XRAI's Felzenszwalb segments are computed before and outside the timed region (the pipeline
computes them once per dataset, in their own job); its region growing runs on the CPU inside the timed region,
so its fraction is below the others'. Grad-CAM's backward stops at its layer, so its fraction can exceed 1.

Usage (GPU): python benchmarks/gpu_throughput.py [--arch inception_v3] [--size 299] [--device auto]
    [--batch-size 16] [--max-batch-inputs 64] [--images 32] [--methods GRAD,SG,...] [--amp both|on|off]
    [--config config.yaml] [--repeats 2] [--cudnn-benchmark]
Quick CPU check: python benchmarks/gpu_throughput.py --arch simple_cnn --size 128 --images 4 --device cpu
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from saliency_trust.data.synthetic import SyntheticSpec, generate_image
from saliency_trust.models.registry import build_model, get_architecture
from saliency_trust.models.train import select_device
from saliency_trust.saliency.compute import compute_saliency
from saliency_trust.saliency.methods import ARUN_METHODS, get_method, pass_batch, passes_per_map, resolve_params
from saliency_trust.saliency.xrai import felzenszwalb_segments


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: bool):
    return torch.autocast("cuda", dtype=torch.float16, enabled=amp and device.type == "cuda")


def batch_of(images: np.ndarray, batch: int, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.resize(images, (batch, *images.shape[1:])))[:, None].to(device)


def seconds_per_input(step, reps: int, batch: int, device: torch.device) -> float:
    """Seconds per model input of ``step`` (one pass over a batch of ``batch``): one warm-up, then ``reps``
    timed calls between device synchronizations."""
    step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / (reps * batch)


def input_grad_seconds(model, images, batch: int, device, amp: bool, n_passes: int) -> float:
    """Seconds per pass (per model input) of a plain input-gradient loop: eval mode, frozen weights."""
    x = batch_of(images, batch, device)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    reps = max(3, -(-n_passes // batch))

    def step():
        xx = x.clone().requires_grad_(True)
        with autocast(device, amp):
            out = model(xx)[:, 0].sum()
        out.backward()

    try:
        return seconds_per_input(step, reps, batch, device)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def train_step_seconds(model, images, batch: int, device, amp: bool, n_passes: int) -> float:
    """Seconds per pass (per model input) of the network's training step, on a copy of the model."""
    net = copy.deepcopy(model).train()
    for p in net.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(net.parameters(), lr=1e-6)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    x = batch_of(images, batch, device)
    y = torch.zeros(batch, device=device)
    reps = max(3, -(-n_passes // batch))

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = F.binary_cross_entropy_with_logits(net(x)[:, 0].float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return seconds_per_input(step, reps, batch, device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{torch.cuda.get_device_name(device)} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), name)
    except OSError:
        pass
    return f"CPU {name} ({torch.get_num_threads()} torch threads)"


def config_saliency(path: str | None) -> dict:
    if not path:
        return {}
    import yaml

    with open(path) as fh:
        return (yaml.safe_load(fh) or {}).get("saliency", {}) or {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="inception_v3")
    ap.add_argument("--size", type=int, default=299, help="image size (the canonical images' size)")
    ap.add_argument("--input-size", type=int, default=None, help="network input size (default: the native one)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--config", default=None, help="take saliency.batch_size, max_batch_inputs, params from here")
    ap.add_argument("--batch-size", type=int, default=None, help="images per engine call (default 16)")
    ap.add_argument("--max-batch-inputs", type=int, default=None, help="model inputs per pass (default 64)")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--methods", default=",".join(ARUN_METHODS))
    ap.add_argument("--amp", choices=("off", "on", "both"), default="both")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many timed runs per method")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN pick its fastest algorithms")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    cfg = config_saliency(args.config)
    batch_size = args.batch_size or cfg.get("batch_size", 16)
    max_inputs = args.max_batch_inputs or cfg.get("max_batch_inputs", 64)
    keys = [k.strip().upper() for k in args.methods.split(",") if k.strip()]
    params = {k: resolve_params(k, (cfg.get("params") or {}).get(k)) for k in keys}
    amps = {"off": [False], "on": [True], "both": [False, True]}[args.amp]
    if device.type != "cuda" and True in amps:
        print("AMP is CUDA autocast: the engine ignores it on the CPU, AMP-on runs skipped")
        amps = [False]

    torch.manual_seed(0)
    model = build_model(args.arch, 1, input_size=args.input_size).eval().to(device)
    native = get_architecture(args.arch).native_size
    spec = SyntheticSpec(image_size=args.size)
    images = np.stack([generate_image(spec, 1, k).image for k in range(args.images)])
    segments = None
    if "XRAI" in keys:
        t0 = time.perf_counter()
        segments = np.stack([felzenszwalb_segments(img) for img in images])
        print(
            f"XRAI segments (Felzenszwalb, CPU) computed before and outside the timed region: "
            f"{1000 * (time.perf_counter() - t0) / len(images):.0f} ms/image"
        )
    print(
        f"device {device_name(device)}; torch {torch.__version__}; cudnn.benchmark "
        f"{torch.backends.cudnn.benchmark}\nmodel {args.arch} (input {args.input_size or native or args.size} px), "
        f"{args.images} images of {args.size} px, batch_size {batch_size}, max_batch_inputs {max_inputs}"
    )
    header = (
        f"{'method':<6} {'amp':<4} {'maps/s':>9} {'k':>5} {'batch':>5} {'train pass/s':>12} {'of train':>8} "
        f"{'input-grad pass/s':>17} {'of input-grad':>13}"
    )
    print(header)
    n = len(images)
    for amp in amps:
        refs: dict[int, tuple[float, float]] = {}  # pass batch -> (train, input-grad) seconds per pass
        for key in keys:
            k = passes_per_map(key, params[key])
            b = pass_batch(key, k, n, batch_size, max_inputs)
            segs = segments if get_method(key).uses_segments else None
            kw = dict(batch_size=batch_size, device=device, max_batch_inputs=max_inputs, amp=amp, progress=False)
            warm = segs[:2] if segs is not None else None  # warm-up (cuDNN, allocator), not timed
            compute_saliency(model, args.arch, images[:2], key, params[key], 0, segments=warm, **kw)
            best = float("inf")
            for _ in range(max(args.repeats, 1)):
                sync(device)
                t0 = time.perf_counter()
                compute_saliency(model, args.arch, images, key, params[key], 0, segments=segs, **kw)
                sync(device)
                best = min(best, time.perf_counter() - t0)
            if b not in refs:
                n_passes = min(n * k, 1024)
                refs[b] = (
                    train_step_seconds(model, images, b, device, amp, n_passes),
                    input_grad_seconds(model, images, b, device, amp, n_passes),
                )
            maps_s = n / best
            train, plain = (1.0 / t for t in refs[b])
            print(
                f"{key:<6} {'on' if amp else 'off':<4} {maps_s:>9.2f} {k:>5d} {b:>5d} {train:>12.1f} "
                f"{maps_s * k / train:>8.2f} {plain:>17.1f} {maps_s * k / plain:>13.2f}",
                flush=True,
            )
        if device.type == "cuda":
            print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
