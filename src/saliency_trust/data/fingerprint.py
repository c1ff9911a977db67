"""Content fingerprints of the parts of a canonical dataset each stage reads (docs/new-data.md).

New data must redo only the work it affects. The data preparation reruns on any change of its
inputs and rewrites every canonical file, so the expensive stages do not depend on those files'
modification times: they read them as ``ancient`` inputs and take as a parameter the fingerprint
of exactly the part they read, written here next to the canonical files
(``results/{dataset}/data/fingerprints.json``). A stage reruns when its part changed:

- ``trainval``: ids, splits, labels and pixels of the training and validation images (the
  classifiers; with ``trainval_masks`` the U-Net, with ``trainval_boxes`` the detector);
- ``explained.<label>``: ids and pixels of the positive test images of a label, the images that
  saliency maps explain (saliency, randomization, XRAI segments, U-Net and detector maps);
- ``trainval_masks`` / ``trainval_boxes``: the localization of the training and validation images.

So new masks or boxes of images already there (a new rater's boxes) retrain no classifier and
explain no image again, new test images recompute maps but retrain nothing, and new training
images retrain the models. Each fingerprint reads as ``"<n> images, sha256 <12 hex>"``, so a dry
run's "Params have changed" line says which part changed and how many images it holds.

Pixels are hashed as stored (uint16 images by default, uint8 masks: the per-image checksums the
writer stores, :mod:`saliency_trust.data.canonical`), so any change of the conversion or of the
encoding that changes a stored pixel changes the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from saliency_trust.io import write_json

FORMAT = 1  # bump when the canonical format changes in a way the pixels do not show
BLOCK = 64  # images hashed per read


def image_digests(images_path: str | Path) -> tuple[list[str], list[str], list[str]]:
    """(ids, SHA-256 of each image's pixels, SHA-256 of each image's masks) of a canonical image store."""
    with h5py.File(images_path, "r") as h5:
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in h5["image_id"][:]]
        if "image_sha256" in h5 and "mask_sha256" in h5:  # the writer's per-image checksums of the same bytes
            return ids, [v.decode() for v in h5["image_sha256"][:]], [v.decode() for v in h5["mask_sha256"][:]]
        image_sums, mask_sums = [], []
        for start in range(0, len(ids), BLOCK):
            for name, out in (("image", image_sums), ("mask", mask_sums)):
                block = np.ascontiguousarray(h5[name][start : start + BLOCK])
                out += [hashlib.sha256(item.tobytes()).hexdigest() for item in block]
    return ids, image_sums, mask_sums


def _part(header: str, rows: list[str]) -> dict:
    """Digest of one part: the format, a header (the label names) and one row per image."""
    digest = hashlib.sha256("\n".join([f"format {FORMAT}", header, *rows]).encode()).hexdigest()
    return {"images": len(rows), "sha256": digest, "text": f"{len(rows)} images, sha256 {digest[:12]}"}


def dataset_fingerprints(manifest_path: str | Path, images_path: str | Path, boxes_path: str | Path) -> dict:
    """The fingerprint of each part (see the module docstring) of one canonical dataset."""
    manifest = pd.read_csv(manifest_path, dtype={"image_id": str})
    boxes = pd.read_csv(boxes_path, dtype={"image_id": str, "label": str, "rater": str})
    with h5py.File(images_path, "r") as h5:
        label_names = json.loads(h5.attrs["label_names"])
    ids, image_sums, mask_sums = image_digests(images_path)
    if ids != manifest["image_id"].tolist():
        raise ValueError(f"{images_path}: image ids do not match {manifest_path} (row order or content differs)")
    header = "labels " + json.dumps(label_names)
    labels = manifest[label_names].to_numpy(dtype=int)
    split = manifest["split"].to_numpy()
    trainval = np.flatnonzero(split != "test")
    by_image: dict[str, list] = {}  # image id -> its sorted box rows without the id (plain lists: small)
    ordered = boxes.sort_values(list(boxes.columns))
    for image_id, row in zip(ordered["image_id"], ordered.drop(columns="image_id").values.tolist()):
        by_image.setdefault(image_id, []).append(row)
    parts = {
        "label_names": label_names,
        "trainval": _part(header, [f"{ids[k]} {split[k]} {labels[k].tolist()} {image_sums[k]}" for k in trainval]),
        "trainval_masks": _part(header, [f"{ids[k]} {mask_sums[k]}" for k in trainval]),
        "trainval_boxes": _part(
            header,
            [f"{ids[k]} {by_image.get(ids[k], [])}" for k in trainval],
        ),
        "explained": {
            label: _part(
                header, [f"{ids[k]} {image_sums[k]}" for k in np.flatnonzero((split == "test") & (labels[:, j] > 0))]
            )
            for j, label in enumerate(label_names)
        },
    }
    return parts


def write_fingerprints(manifest_path, images_path, boxes_path, out_path) -> dict:
    """Stage helper: compute :func:`dataset_fingerprints` and write them as JSON (atomically)."""
    parts = dataset_fingerprints(manifest_path, images_path, boxes_path)
    write_json(parts, out_path)
    return parts


def read_fingerprint(path: str | Path, part: str, label: str | None = None) -> str:
    """The fingerprint text of one part (``explained``: of ``label``, the first label when None); a missing file
    reads as ``"pending"`` (the data preparation has not run yet: Snakemake evaluates the parameter again once
    it has)."""
    path = Path(path)
    if not path.exists():
        return "pending"
    parts = json.loads(path.read_text())
    if part not in parts:
        raise KeyError(
            f"{path}: no fingerprint '{part}' (written by another version): delete the file, and the data "
            "preparation writes it again"
        )
    if part != "explained":
        return parts[part]["text"]
    label = label or parts["label_names"][0]
    if label not in parts["explained"]:
        raise KeyError(f"{path}: label '{label}' is not one of {parts['label_names']}")
    return parts["explained"][label]["text"]
