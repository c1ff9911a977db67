"""The canonical dataset every later rule reads (docs/own-data.md, docs/scaling.md).

On disk, in ``results/{dataset}/data/``:

- ``manifest.csv``: one row per image: ``image_id``, ``split`` (train/val/test),
  one 0/1 column per label, ``has_mask``, plus source-specific extra columns;
- ``images.h5``: datasets ``image_id`` (N strings, manifest order); ``image``
  (N x H x W, intensities in [0, 1] stored as ``uint16`` by default: the value
  times 65535, rounded; attribute ``encoding`` and ``scale``, so that
  intensity = stored x scale); ``mask`` (N x L x H x W uint8, one pixel mask per
  label); ``image_sha256`` and ``mask_sha256`` (one SHA-256 of the stored bytes
  per image, verified whenever an image is read); attributes ``label_names``
  (JSON list) and ``sha256`` (content checksums of the small datasets,
  :mod:`saliency_trust.io`). Images and masks are chunked per image and
  gzip-compressed (with the byte-shuffle filter), so a reader decodes only the
  images it asks for;
- ``boxes.csv``: ``image_id, label, rater, x, y, width, height`` (pixels).

Readers are lazy (:class:`StoredArray`): a stage holds the decoded images in
memory only when they fit under ``storage.in_memory_mb``; otherwise it reads
the rows it needs, batch by batch, and memory is bounded by the batch, not by
the dataset. Why uint16: measured in ``benchmarks/canonical_storage.py`` and
explained in docs/scaling.md.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from saliency_trust.data.splits import SPLITS
from saliency_trust.io import (
    CHECKSUM_ATTR,
    CorruptFileError,
    atomic_path,
    row_sha256,
    sha256_file,
    stamp_checksums,
    storage_option,
    verify_h5,
    verify_rows,
    write_csv,
)

log = logging.getLogger(__name__)
BOX_COLUMNS = ["image_id", "label", "rater", "x", "y", "width", "height"]
#: encoding -> (stored dtype, stored value of intensity 1.0; None: stored as floats)
IMAGE_ENCODINGS: dict[str, tuple[type, int | None]] = {
    "uint16": (np.uint16, 65535),
    "uint8": (np.uint8, 255),
    "float16": (np.float16, None),
    "float32": (np.float32, None),
}
DEFAULT_ENCODING = "uint16"
RANGE_TOLERANCE = 1e-5  # intensities this far outside [0, 1] are clipped; further out is an error


def encode_images(images: np.ndarray, encoding: str = DEFAULT_ENCODING) -> np.ndarray:
    """Intensities in [0, 1] (K x H x W floats) as stored in the canonical file."""
    dtype, top = IMAGE_ENCODINGS[encoding]
    if top is None:
        return np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0).astype(dtype)
    return np.rint(np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0) * top).astype(dtype)  # nearest level


def as_stored(images: np.ndarray, encoding: str = DEFAULT_ENCODING) -> np.ndarray:
    """The float32 intensities a reader gets back for ``images`` stored with ``encoding`` (the round trip)."""
    top = IMAGE_ENCODINGS[encoding][1]
    return decode_images(encode_images(images, encoding), None if top is None else 1.0 / top)


def store_encoding(images_path: str | Path) -> str:
    """The encoding of a canonical image store's images (float32 for a store written before it was recorded)."""
    with h5py.File(images_path, "r") as h5:
        return str(h5["image"].attrs.get("encoding", "float32"))


def decode_images(stored: np.ndarray, scale: float | None) -> np.ndarray:
    """Stored values back to float32 intensities (``scale``: intensity of one stored unit; None for floats)."""
    if scale is None:
        return np.asarray(stored, dtype=np.float32)
    return stored.astype(np.float32) * np.float32(scale)


class ImageStoreWriter:
    """Appends images and masks to a canonical ``images.h5`` being written, a batch at a time (memory holds one
    batch); :meth:`finish` writes the ids, the per-image checksums and the attributes.

    Images must be finite and lie in [0, 1] (a ValueError names the image); with an integer encoding they are
    rounded to the nearest stored level.
    """

    def __init__(self, h5: h5py.File, image_shape: tuple[int, int], n_labels: int, encoding: str = DEFAULT_ENCODING):
        if encoding not in IMAGE_ENCODINGS:
            raise ValueError(f"storage.image_dtype '{encoding}' is not one of {sorted(IMAGE_ENCODINGS)}")
        self.h5, self.encoding, self.shape = h5, encoding, tuple(image_shape)
        dtype, top = IMAGE_ENCODINGS[encoding]
        h, w = self.shape
        self.image = h5.create_dataset(
            "image", (0, h, w), dtype, maxshape=(None, h, w), chunks=(1, h, w), compression="gzip", shuffle=True
        )
        self.image.attrs["encoding"] = encoding
        if top is not None:
            self.image.attrs["scale"] = 1.0 / top
        self.mask = h5.create_dataset(
            "mask",
            (0, n_labels, h, w),
            np.uint8,
            maxshape=(None, n_labels, h, w),
            chunks=(1, n_labels, h, w),
            compression="gzip",
        )
        self.ids: list[str] = []
        self.image_sums: list[bytes] = []
        self.mask_sums: list[bytes] = []

    def append(self, image_ids: list[str], images: np.ndarray, masks: np.ndarray) -> None:
        images = np.asarray(images)
        if images.shape[1:] != self.shape:
            raise ValueError(f"image '{image_ids[0]}' is {images.shape[1:]} px, the dataset's images {self.shape}")
        flat = images.reshape(len(images), -1)
        finite = np.isfinite(flat).all(axis=1)
        if not finite.all():
            raise ValueError(f"image '{image_ids[int(np.argmin(finite))]}' contains NaN or inf")
        outside = (flat.min(axis=1) < -RANGE_TOLERANCE) | (flat.max(axis=1) > 1 + RANGE_TOLERANCE)
        if outside.any():
            k = int(np.argmax(outside))
            raise ValueError(
                f"image '{image_ids[k]}' has intensities in [{flat[k].min():.4g}, {flat[k].max():.4g}], outside the "
                "canonical range [0, 1]"
            )
        stored = encode_images(images, self.encoding)
        masks = np.asarray(masks, dtype=np.uint8)
        n, k = len(self.ids), len(stored)
        self.image.resize(n + k, axis=0)
        self.mask.resize(n + k, axis=0)
        self.image[n : n + k] = stored
        self.mask[n : n + k] = masks
        self.ids += [str(i) for i in image_ids]
        self.image_sums += row_sha256(stored)
        self.mask_sums += row_sha256(masks)

    def finish(self, label_names: list[str], source: str) -> None:
        self.h5.create_dataset("image_id", data=np.array([i.encode() for i in self.ids], dtype="S"))
        self.h5.create_dataset("image_sha256", data=np.array(self.image_sums, dtype="S64"))
        self.h5.create_dataset("mask_sha256", data=np.array(self.mask_sums, dtype="S64"))
        self.h5.attrs["label_names"] = json.dumps(label_names)
        self.h5.attrs["source"] = source
        stamp_checksums(self.h5, names=["image_id", "image_sha256", "mask_sha256"])


class StoredArray:
    """The ``image`` or ``mask`` dataset of a canonical image store, read on demand (docs/scaling.md).

    Indexing (an int, a slice, a list or array of rows, optionally followed by more indices) reads only those
    rows, checks each against its stored SHA-256 and decodes images to float32 intensities. A damaged row
    removes the file (the next run prepares the data again) and raises
    :class:`~saliency_trust.io.CorruptFileError`. Each process opens its own handle, so DataLoader workers
    share nothing.
    """

    def __init__(self, path: str | Path, name: str):
        self.path, self.name = Path(path), name
        self._h5, self._pid = None, None
        with h5py.File(self.path, "r") as h5:
            dset = h5[name]
            self.shape = tuple(dset.shape)
            self.scale = float(dset.attrs["scale"]) if "scale" in dset.attrs else None
            self.encoding = str(dset.attrs.get("encoding", "float32"))
            self.dtype = np.dtype(np.float32) if name == "image" else np.dtype(dset.dtype)
            sums = f"{name}_sha256"
            self._sums = h5[sums][:] if sums in h5 else None
        if self._sums is None:
            log.warning("%s: written by an older version (no per-image checksums); '%s' is not verified", path, name)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_h5": None, "_pid": None}

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._h5

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def read_rows(self, rows) -> np.ndarray:
        """Rows (any order, repeats allowed) as a K x ... array, verified and decoded."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) == 0:
            return np.empty((0, *self.shape[1:]), self.dtype)
        if rows.min() < -len(self) or rows.max() >= len(self):
            raise IndexError(f"{self.path}: row index out of range for {len(self)} images")
        rows = rows % len(self)
        unique, back = np.unique(rows, return_inverse=True)
        dset = self._file()[self.name]
        out = np.empty((len(unique), *self.shape[1:]), self.dtype)
        for start in range(0, len(unique), READ_BLOCK):  # decoded block by block: no whole-file temporaries
            block = unique[start : start + READ_BLOCK]
            if block[-1] - block[0] + 1 == len(block):  # contiguous: one hyperslab
                stored = dset[int(block[0]) : int(block[-1]) + 1]
            else:  # one chunk per image: per-row reads (h5py's point selection is ~100x slower here, measured)
                stored = np.stack([dset[int(row)] for row in block])
            if self._sums is not None:
                try:
                    verify_rows(self.path, self.name, block, stored, self._sums)
                except CorruptFileError:
                    self.close()
                    raise
            out[start : start + len(block)] = decode_images(stored, self.scale) if self.name == "image" else stored
        if len(unique) == len(rows) and (unique == rows).all():  # sorted and unique: no reordering copy
            return out
        return out[back]

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            out = self.read_rows([int(key)])[0]
        elif isinstance(key, slice):
            out = self.read_rows(np.arange(len(self))[key])
        else:
            key = np.asarray(key)
            out = self.read_rows(np.flatnonzero(key) if key.dtype == bool else key)
        if not rest:
            return out
        return out[(slice(None), *rest)] if not isinstance(key, (int, np.integer)) else out[rest]

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class RowView:
    """Some rows of an image array (in memory or :class:`StoredArray`), indexed like an array of those rows:
    ``view[a:b]`` reads only rows a..b of the selection (batch-wise prediction over a split)."""

    def __init__(self, source, rows):
        self.source, self.rows = source, np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple:
        return (len(self.rows), *self.source.shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        return self.source[(self.rows[key], *rest)]

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self.source[self.rows])
        return out if dtype is None else out.astype(dtype)


@dataclass
class CanonicalDataset:
    """A dataset in canonical form. ``images`` and ``masks`` are arrays in memory or :class:`StoredArray`
    readers of the file (:func:`load_dataset`); index them with row numbers either way."""

    manifest: pd.DataFrame
    images: np.ndarray | StoredArray  # N x H x W float32
    masks: np.ndarray | StoredArray  # N x L x H x W uint8
    label_names: list[str]

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:])

    @property
    def streamed(self) -> bool:
        """True when images are read from the file on demand (larger than the in-memory cap)."""
        return isinstance(self.images, StoredArray)

    def image_rows(self, rows) -> RowView | np.ndarray:
        """The images of ``rows``: an array when in memory, else a :class:`RowView` read batch by batch."""
        return RowView(self.images, rows) if self.streamed else self.images[rows]

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


def explained_images(data: CanonicalDataset, target_label: str):
    """Positive test images of the target label: (ids, N x H x W images): an array when the dataset is in
    memory, else a row view read batch by batch (docs/scaling.md)."""
    idx = data.positive_indices("test", target_label)
    if len(idx) == 0:
        raise ValueError(f"the test split has no positive images for label '{target_label}'")
    return data.manifest["image_id"].iloc[idx].tolist(), data.image_rows(idx)


def validate_manifest(manifest: pd.DataFrame, label_names: list[str]) -> None:
    """Raise ValueError naming the offending image/column if the manifest is inconsistent."""
    missing = [c for c in ["image_id", "split", *label_names] if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    dup = manifest["image_id"][manifest["image_id"].duplicated()]
    if len(dup):
        raise ValueError(f"duplicate image ids in manifest: {sorted(set(dup))[:5]}")
    bad_split = manifest.loc[~manifest["split"].isin(SPLITS), "image_id"]
    if len(bad_split):
        raise ValueError(f"image '{bad_split.iloc[0]}' has a split outside {SPLITS}")


def validate_dataset(manifest: pd.DataFrame, images, masks, label_names: list[str]) -> None:
    """Raise ValueError naming the offending image/column if the dataset is inconsistent."""
    validate_manifest(manifest, label_names)
    n = len(manifest)
    if images.ndim != 3 or images.shape[0] != n:
        raise ValueError(f"images must be N x H x W with N={n}, got shape {images.shape}")
    if tuple(masks.shape) != (n, len(label_names), *images.shape[1:]):
        raise ValueError(f"masks must have shape {(n, len(label_names), *images.shape[1:])}, got {masks.shape}")


READ_BLOCK = 64  # images decoded at a time when a reader asks for many
WRITE_BATCH = 32  # images encoded and written at a time (memory: a few MB per image in temporaries)


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
    encoding: str = DEFAULT_ENCODING,
) -> None:
    """Validate and write the three files of the canonical dataset atomically (images held in memory; the
    converters and the synthetic benchmark stream through :class:`ImageStoreWriter` instead)."""
    validate_dataset(manifest, images, masks, label_names)
    unknown = set(boxes["image_id"]) - set(manifest["image_id"])
    if unknown:
        raise ValueError(f"boxes refer to image ids with no image: {sorted(unknown)[:5]}")
    ids = manifest["image_id"].astype(str).tolist()
    with atomic_path(images_path) as tmp:
        with h5py.File(tmp, "w") as h5:
            writer = ImageStoreWriter(h5, images.shape[1:], len(label_names), encoding)
            for start in range(0, len(ids), WRITE_BATCH):
                stop = start + WRITE_BATCH
                writer.append(ids[start:stop], images[start:stop], masks[start:stop])
            writer.finish(label_names, source)
    write_csv(boxes[BOX_COLUMNS], boxes_path)
    write_csv(manifest, manifest_path)


def _open_store(manifest_path, images_path) -> tuple[pd.DataFrame, list[str]]:
    manifest = pd.read_csv(manifest_path, dtype={"image_id": str})
    with h5py.File(images_path, "r") as h5:
        ids = [s.decode() for s in h5["image_id"][:]]
        label_names = json.loads(h5.attrs["label_names"])
        checked = {"image_id": ids}
        for name in ("image_sha256", "mask_sha256"):
            if name in h5:
                checked[name] = h5[name][:]
        verify_h5(images_path, h5, checked)
    if ids != manifest["image_id"].tolist():
        raise ValueError(f"{images_path}: image ids do not match {manifest_path} (row order or content differs)")
    validate_manifest(manifest, label_names)
    return manifest, label_names


def load_dataset(
    manifest_path: str | Path, images_path: str | Path, in_memory_mb: float | None = None
) -> CanonicalDataset:
    """Open a canonical dataset; checks that the manifest and the image store agree.

    Images and masks are decoded into memory when they take at most ``in_memory_mb`` (None: the job's
    ``storage.in_memory_mb``, :func:`saliency_trust.io.storage_option`), else they are read on demand
    (:class:`StoredArray`), batch by batch. Either way the values are the same.
    """
    if in_memory_mb is None:
        in_memory_mb = storage_option("in_memory_mb")
    manifest, label_names = _open_store(manifest_path, images_path)
    images, masks = StoredArray(images_path, "image"), StoredArray(images_path, "mask")
    validate_dataset(manifest, images, masks, label_names)
    decoded_mb = (np.prod(images.shape) * 4 + np.prod(masks.shape)) / 2**20
    if decoded_mb <= in_memory_mb:
        images, masks = images[:], masks[:]
    else:
        log.info(
            "%s: %.0f MB decoded, above storage.in_memory_mb (%s): images are read batch by batch",
            images_path,
            decoded_mb,
            in_memory_mb,
        )
    return CanonicalDataset(manifest=manifest, images=images, masks=masks, label_names=label_names)


def dataset_fingerprint(manifest_path: str | Path, images_path: str | Path) -> dict:
    """What identifies a canonical dataset's content, cheaply: the manifest's SHA-256 and the image store's
    stored content checksums (read from its attributes, not recomputed)."""
    with h5py.File(images_path, "r") as h5:
        sums = str(h5.attrs.get(CHECKSUM_ATTR, ""))
    return {"manifest": sha256_file(manifest_path), "images": sums}


def h5_image_ids(images_path: str | Path) -> list[str]:
    """The image ids of a canonical image store (verified against its checksum)."""
    with h5py.File(images_path, "r") as h5:
        ids = [s.decode() for s in h5["image_id"][:]]
        verify_h5(images_path, h5, {"image_id": ids})
    return ids


def read_images(
    images_path: str | Path, image_ids: list[str], label: str | None = None, with_masks: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Only the images ``image_ids`` (in that order) of a canonical image store, and their masks of ``label``
    (the first label when None; no masks unless ``with_masks``); a KeyError names an id or label the store
    lacks."""
    ids = h5_image_ids(images_path)
    with h5py.File(images_path, "r") as h5:
        names = json.loads(h5.attrs["label_names"])
    position = {i: k for k, i in enumerate(ids)}
    missing = [i for i in image_ids if i not in position]
    if missing:
        raise KeyError(f"{images_path}: no image(s) {missing[:5]}")
    rows = [position[i] for i in image_ids]
    images = StoredArray(images_path, "image")
    out = images.read_rows(rows)
    images.close()
    masks = None
    if with_masks:
        label = label or names[0]
        if label not in names:
            raise KeyError(f"{images_path}: label '{label}' is not one of {names}")
        stored = StoredArray(images_path, "mask")
        masks = stored.read_rows(rows)[:, names.index(label)] if rows else None
        stored.close()
    return out, masks
