"""The canonical dataset every later rule reads (docs/own-data.md).

On disk, in ``results/{dataset}/data/``:

- ``manifest.csv``: one row per image: ``image_id``, ``split`` (train/val/test),
  one 0/1 column per label, ``has_mask``, plus source-specific extra columns;
- ``images.h5``: datasets ``image_id`` (N strings, manifest order), ``image``
  (N x H x W float32 in [0, 1]) and ``mask`` (N x L x H x W uint8, one pixel mask
  per label), attributes ``label_names`` (JSON list) and ``sha256`` (content
  checksums, :mod:`saliency_trust.io`);
- ``boxes.csv``: ``image_id, label, rater, x, y, width, height`` (pixels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from saliency_trust.data.splits import SPLITS
from saliency_trust.io import CHECKSUM_ATTR, atomic_path, sha256_file, stamp_checksums, verify_h5, write_csv

BOX_COLUMNS = ["image_id", "label", "rater", "x", "y", "width", "height"]


@dataclass
class CanonicalDataset:
    """A dataset in canonical form, fully loaded in memory."""

    manifest: pd.DataFrame
    images: np.ndarray  # N x H x W float32
    masks: np.ndarray  # N x L x H x W uint8
    label_names: list[str]

    def indices(self, split: str | None = None) -> np.ndarray:
        """Row indices of one split (or all rows)."""
        if split is None:
            return np.arange(len(self.manifest))
        return np.flatnonzero(self.manifest["split"].to_numpy() == split)

    def positive_indices(self, split: str, label: str) -> np.ndarray:
        """Row indices of the images of ``split`` that are positive for ``label``."""
        idx = self.indices(split)
        return idx[self.labels()[idx, self.label_index(label)] > 0]

    def labels(self) -> np.ndarray:
        """N x L float32 label matrix."""
        return self.manifest[self.label_names].to_numpy(dtype=np.float32)

    def label_index(self, label: str) -> int:
        if label not in self.label_names:
            raise KeyError(f"label '{label}' is not in the dataset's labels {self.label_names}")
        return self.label_names.index(label)


def validate_dataset(manifest: pd.DataFrame, images: np.ndarray, masks: np.ndarray, label_names: list[str]) -> None:
    """Raise ValueError naming the offending image/column if the dataset is inconsistent."""
    missing = [c for c in ["image_id", "split", *label_names] if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    dup = manifest["image_id"][manifest["image_id"].duplicated()]
    if len(dup):
        raise ValueError(f"duplicate image ids in manifest: {sorted(set(dup))[:5]}")
    bad_split = manifest.loc[~manifest["split"].isin(SPLITS), "image_id"]
    if len(bad_split):
        raise ValueError(f"image '{bad_split.iloc[0]}' has a split outside {SPLITS}")
    n = len(manifest)
    if images.ndim != 3 or images.shape[0] != n:
        raise ValueError(f"images must be N x H x W with N={n}, got shape {images.shape}")
    if masks.shape != (n, len(label_names), *images.shape[1:]):
        raise ValueError(f"masks must have shape {(n, len(label_names), *images.shape[1:])}, got {masks.shape}")
    finite = np.isfinite(images).reshape(n, -1).all(axis=1)
    if not finite.all():
        raise ValueError(f"image '{manifest['image_id'].iloc[int(np.argmin(finite))]}' contains NaN or inf")


def write_dataset(
    manifest: pd.DataFrame,
    images: np.ndarray,
    masks: np.ndarray,
    boxes: pd.DataFrame,
    label_names: list[str],
    manifest_path: str | Path,
    images_path: str | Path,
    boxes_path: str | Path,
    source: str,
) -> None:
    """Validate and write the three files of the canonical dataset atomically."""
    validate_dataset(manifest, images, masks, label_names)
    unknown = set(boxes["image_id"]) - set(manifest["image_id"])
    if unknown:
        raise ValueError(f"boxes refer to image ids with no image: {sorted(unknown)[:5]}")
    with atomic_path(images_path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("image_id", data=manifest["image_id"].astype(str).to_numpy().astype("S"))
            h5.create_dataset(
                "image", data=images.astype(np.float32), chunks=(1, *images.shape[1:]), compression="gzip"
            )
            h5.create_dataset("mask", data=masks.astype(np.uint8), chunks=(1, *masks.shape[1:]), compression="gzip")
            h5.attrs["label_names"] = json.dumps(label_names)
            h5.attrs["source"] = source
            stamp_checksums(h5)
    write_csv(boxes[BOX_COLUMNS], boxes_path)
    write_csv(manifest, manifest_path)


def load_dataset(manifest_path: str | Path, images_path: str | Path) -> CanonicalDataset:
    """Load a canonical dataset; checks that the manifest and the image store agree."""
    manifest = pd.read_csv(manifest_path, dtype={"image_id": str})
    with h5py.File(images_path, "r") as h5:
        ids = [s.decode() for s in h5["image_id"][:]]
        images = h5["image"][:]
        masks = h5["mask"][:]
        label_names = json.loads(h5.attrs["label_names"])
        verify_h5(images_path, h5, {"image_id": ids, "image": images, "mask": masks})
    if ids != manifest["image_id"].tolist():
        raise ValueError(f"{images_path}: image ids do not match {manifest_path} (row order or content differs)")
    validate_dataset(manifest, images, masks, label_names)
    return CanonicalDataset(manifest=manifest, images=images, masks=masks, label_names=label_names)


def dataset_fingerprint(manifest_path: str | Path, images_path: str | Path) -> dict:
    """What identifies a canonical dataset's content, cheaply: the manifest's SHA-256 and the image store's
    stored content checksums (read from its attributes, not recomputed)."""
    with h5py.File(images_path, "r") as h5:
        sums = str(h5.attrs.get(CHECKSUM_ATTR, ""))
    return {"manifest": sha256_file(manifest_path), "images": sums}


def read_images(
    images_path: str | Path, image_ids: list[str], label: str | None = None, with_masks: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Only the images ``image_ids`` (in that order) of a canonical image store, and their masks of ``label``
    (the first label when None; no masks unless ``with_masks``); a KeyError names an id or label the store
    lacks."""
    with h5py.File(images_path, "r") as h5:
        ids = [s.decode() for s in h5["image_id"][:]]
        verify_h5(images_path, h5, {"image_id": ids})  # the images themselves are read in part: not verified
        position = {i: k for k, i in enumerate(ids)}
        missing = [i for i in image_ids if i not in position]
        if missing:
            raise KeyError(f"{images_path}: no image(s) {missing[:5]}")
        rows = [position[i] for i in image_ids]
        order = np.argsort(rows)
        sorted_rows = np.asarray(rows)[order]
        back = np.argsort(order)
        images = h5["image"][sorted_rows][back] if rows else np.empty((0, *h5["image"].shape[1:]), np.float32)
        masks = None
        if with_masks:
            names = json.loads(h5.attrs["label_names"])
            label = label or names[0]
            if label not in names:
                raise KeyError(f"{images_path}: label '{label}' is not one of {names}")
            masks = h5["mask"][sorted_rows, names.index(label)][back] if rows else None
    return images, masks
