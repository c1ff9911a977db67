"""Peak memory and wall time of the pipeline's stages as the dataset grows (docs/scaling.md).

For each dataset size (default 1k, 5k and 20k synthetic images at 299 px) the
script prepares the synthetic benchmark (or reuses the one it prepared before
under ``--workdir``), then runs, each in a fresh child process exactly as a
Snakemake job would call it:

1. data preparation (:func:`saliency_trust.data.prepare.prepare_synthetic`);
2. classifier training: the streamed training loop of ``run_training`` (the DataLoader over the HDF5 file
   with ``--workers`` worker processes, batch ``--train-batch``, ``--arch``) for ``--train-batches`` batches
   of the epoch, then the validation predictions of ``--val-images`` images. A whole epoch of 16,000
   images at 299 px takes hours on a 2-core CPU; memory is reached within the first batches and does not
   depend on how many follow, as the loader holds no more than its prefetched batches;
3. one saliency job (``--method`` on every positive test image, batch 16);
4. the utility job on that job's maps.

It prints, per stage and size, the child's peak resident memory (``ru_maxrss``
from ``os.wait4``: the largest of the job and the worker processes it waited
for), its wall time, and the growth of the peak from the smallest to the
largest size. Goal (issue "paper-scale"): peak RSS per job grows by less than
20 % from 1k to 20k images and stays under 2 GB for a 299-px batch of 16 on
the CPU. ``--in-memory-mb`` is the ``storage.in_memory_mb`` the jobs run with
(default 256, the config default).

Usage: python benchmarks/scaling_memory.py [--sizes 1000,5000,20000] [--size 299] [--workdir bench-scaling]
       [--stages data,train,saliency,utility] [--arch simple_cnn] [--method GRAD] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

STAGES = ("data", "train", "saliency", "utility")


def dataset_config(n_images: int, size: int) -> dict:
    return {
        "source": "synthetic",
        "target_label": "abnormal",
        "splits": {"test_fraction": 0.1, "val_fraction": 0.1},
        "synthetic": {"n_images": n_images, "image_size": size, "raters": 0},
    }


def run_stage(stage: str, folder: Path, args: argparse.Namespace, n_images: int) -> None:
    """The body of one child process: one stage, as its Snakemake job runs it (torch only where the job imports
    it)."""
    from saliency_trust.config import setup_logging

    setup_logging(folder / f"{stage}.log", {"in_memory_mb": args.in_memory_mb, "loader_workers": args.workers})
    if stage in ("train", "saliency"):  # the jobs that import torch; data preparation and utility do not
        import torch

        torch.set_num_threads(args.threads)
    data = folder / "data"
    manifest, images, boxes = data / "manifest.csv", data / "images.h5", data / "boxes.csv"
    if stage == "data":
        from saliency_trust.data.prepare import prepare_synthetic

        prepare_synthetic(dataset_config(n_images, args.size), 20240601, manifest, images, boxes, data / "fp.json")
    elif stage == "train":  # the streamed training loop of run_training, bounded (see the module docstring)
        import torch

        from saliency_trust.data.canonical import load_dataset
        from saliency_trust.data.loading import to_device, training_loader
        from saliency_trust.models.registry import build_model
        from saliency_trust.models.train import balanced_sampler, predict

        cpu = torch.device("cpu")
        dataset = load_dataset(manifest, images)
        tr, va, labels = dataset.indices("train"), dataset.indices("val"), dataset.labels()
        sampler = balanced_sampler(labels[tr], 1)
        loader = training_loader(dataset, tr, args.train_batch, sampler, cpu, labels=labels[tr])
        model = build_model(args.arch, len(dataset.label_names))
        opt = torch.optim.Adam(model.parameters(), lr=3e-4)
        model.train()
        for k, (x, y) in enumerate(loader):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(to_device(x, cpu)), to_device(y, cpu))
            loss.backward()
            opt.step()
            if k + 1 == args.train_batches:
                break
        predict(model, dataset.image_rows(va[: args.val_images]), cpu)
        torch.save(
            {
                "arch": args.arch,
                "label_names": dataset.label_names,
                "input_size": None,
                "state_dict": model.state_dict(),
            },
            folder / "model.pt",
        )
    elif stage == "saliency":
        from saliency_trust.saliency.compute import run_saliency

        run_saliency(
            manifest,
            images,
            folder / "model.pt",
            args.method,
            {},
            None,
            "logit",
            16,
            "cpu",
            args.threads,
            folder / f"{args.method}.h5",
            seed=1,
        )
    elif stage == "utility":
        from saliency_trust.metrics.utility import run_utility

        metrics = ["pr_auc", "ap", "iou", "dice", "topk"]
        run_utility(
            manifest, images, [folder / f"{args.method}.h5"], "m", [args.method], None, metrics, folder / "utility.csv"
        )


def measure(stage: str, folder: Path, args: argparse.Namespace, n_images: int) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one stage in a fresh child process."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: run the stage and exit without returning into the parent's code
        code = 0
        try:
            run_stage(stage, folder, args, n_images)
        except BaseException as err:  # noqa: BLE001 - reported by the exit status
            print(f"{stage} failed: {err!r}", file=sys.stderr)
            code = 1
        os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{stage} on {n_images} images failed; see {folder / (stage + '.log')}")
    return usage.ru_maxrss / 1024, wall  # Linux: kilobytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,5000,20000")
    ap.add_argument("--size", type=int, default=299)
    ap.add_argument("--workdir", default="bench-scaling")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--arch", default="simple_cnn")
    ap.add_argument("--method", default="GRAD")
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--train-batches", type=int, default=20, help="training batches of the bounded epoch")
    ap.add_argument("--val-images", type=int, default=64, help="validation images predicted after them")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="storage.loader_workers of the training job")
    ap.add_argument("--in-memory-mb", type=float, default=256)
    ap.add_argument("--json", default=None, help="also write the table as JSON here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    stages = [s for s in args.stages.split(",") if s]
    rows = []
    for n in sizes:
        folder = Path(args.workdir) / f"n{n}-{args.size}px"
        folder.mkdir(parents=True, exist_ok=True)
        for stage in stages:
            if stage == "data" and (folder / "data" / "images.h5").exists():
                print(f"{n} images: reusing the prepared data in {folder / 'data'}", flush=True)
                continue
            rss, wall = measure(stage, folder, args, n)
            size_mb = (folder / "data" / "images.h5").stat().st_size / 2**20
            rows.append({"images": n, "stage": stage, "peak_rss_mb": rss, "wall_s": wall, "images_h5_mb": size_mb})
            print(f"{n:>6} images  {stage:<9} peak RSS {rss:7.0f} MB  wall {wall:7.1f} s", flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.threads} thread(s)")
    print(f"{args.size} px, storage.in_memory_mb {args.in_memory_mb:g}, loader_workers {args.workers}, {args.arch}")
    print("| stage | " + " | ".join(f"{n} images: peak RSS (MB), wall (s)" for n in sizes) + " | growth |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for stage in stages:
        cells = {r["images"]: r for r in rows if r["stage"] == stage}
        if not cells:
            continue
        line = " | ".join(
            f"{cells[n]['peak_rss_mb']:.0f}, {cells[n]['wall_s']:.0f}" if n in cells else "reused" for n in sizes
        )
        first, last = cells.get(sizes[0]), cells.get(sizes[-1])
        growth = f"{100 * (last['peak_rss_mb'] / first['peak_rss_mb'] - 1):+.0f} %" if first and last else ""
        print(f"| {stage} | {line} | {growth} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
