"""Size and decode speed of the canonical image encodings (docs/scaling.md: why uint16).

Writes the same synthetic radiographs (``--images`` at ``--size`` px) once per
encoding of :data:`saliency_trust.data.canonical.IMAGE_ENCODINGS` through the
pipeline's own writer (chunked per image, gzip + byte shuffle), then reads
them back one random batch of 16 at a time as the training loader does, and
prints, per encoding: bytes per image on disk, the ratio to float32, images
decoded per second (read + checksum + decode to float32) and the largest
difference from the float32 intensities.

Usage: python benchmarks/canonical_storage.py [--images 200] [--size 299]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from saliency_trust.data.canonical import IMAGE_ENCODINGS, ImageStoreWriter, StoredArray
from saliency_trust.data.synthetic import SyntheticSpec, generate_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", type=int, default=299)
    args = ap.parse_args()
    spec = SyntheticSpec.from_config({"n_images": args.images, "image_size": args.size, "raters": 0})
    items = [generate_image(spec, 1, i) for i in range(args.images)]
    images = np.stack([it.image for it in items])
    masks = np.stack([it.masks for it in items])
    ids = [f"img{i:05d}" for i in range(args.images)]
    rng = np.random.default_rng(0)
    batches = [rng.choice(args.images, 16, replace=False) for _ in range(max(args.images // 16, 1))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for encoding in IMAGE_ENCODINGS:
            path = Path(tmp) / f"{encoding}.h5"
            with h5py.File(path, "w") as h5:
                writer = ImageStoreWriter(h5, images.shape[1:], masks.shape[1], encoding)
                writer.append(ids, images, masks)
                writer.finish(spec.label_names, "benchmark")
            with h5py.File(path, "r") as h5:
                stored = h5["image"].id.get_storage_size()
            reader = StoredArray(path, "image")
            t0 = time.perf_counter()
            worst = 0.0
            for batch in batches:
                worst = max(worst, float(np.abs(reader[batch] - images[batch]).max()))
            rate = sum(len(b) for b in batches) / (time.perf_counter() - t0)
            reader.close()
            rows.append((encoding, stored / args.images, rate, worst))
    base = dict((r[0], r[1]) for r in rows)["float32"]
    print(f"{args.images} synthetic images of {args.size} px, gzip + shuffle, chunked per image")
    print("| encoding | KB per image | size vs float32 | images decoded/s (batches of 16) | max abs error |")
    print("|---|---|---|---|---|")
    for encoding, per_image, rate, worst in rows:
        print(f"| {encoding} | {per_image / 1024:.1f} | {per_image / base:.2f} | {rate:.0f} | {worst:.2g} |")


if __name__ == "__main__":
    main()
