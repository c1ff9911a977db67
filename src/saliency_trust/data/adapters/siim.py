"""SIIM-ACR Pneumothorax Segmentation (Kaggle 2019; Arun et al., Methods "Datasets"; docs/own-data.md).

Expected under ``root``:

- ``dicom-images-train/**/<ImageId>.dcm``: one DICOM per image (any folder depth);
- ``train-rle.csv``: columns ``ImageId, EncodedPixels``. ``EncodedPixels`` is
  ``-1`` for an image without pneumothorax, otherwise pairs ``start length``
  where each start counts from the end of the previous run (the first from
  pixel 0), over the pixels in column-major order (down the first column,
  then the next). An image with several pneumothorax regions has several rows;
  their masks are unioned.

Label ``pneumothorax`` (config ``siim.label``) is 1 when any row has a run.
DICOM files without a row are not used (logged). Malformed rows (odd number of
values, non-integers, negative values, runs past the last pixel, ``-1`` mixed
with runs) are :class:`ItemError` problems naming the CSV rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from saliency_trust.data.adapters.common import (
    Collection,
    Context,
    Item,
    ItemError,
    check_label_names,
    index_files,
    read_table,
    where,
)


@dataclass(frozen=True)
class Options:
    """Config ``datasets.<name>.siim``."""

    images_dir: str = "dicom-images-train"
    rle_csv: str = "train-rle.csv"
    label: str = "pneumothorax"


def tables(ctx: Context, opts: Options) -> dict[str, Path]:
    return {"siim.rle_csv": ctx.path(opts.rle_csv)}


def parse_rle(text: str, image_id: str, at: str) -> np.ndarray | None:
    """``-1`` -> None; otherwise the (relative start, length) integer pairs as an n x 2 array."""
    if text.strip() == "-1":
        return None
    try:
        values = np.array([int(v) for v in text.split()], dtype=np.int64)
    except ValueError:
        raise ItemError(image_id, at, f"EncodedPixels is not a list of integers: '{text[:40]}'") from None
    if values.size == 0 or values.size % 2:
        raise ItemError(image_id, at, f"EncodedPixels needs pairs of start and length, got {values.size} values")
    pairs = values.reshape(-1, 2)
    if (pairs[:, 0] < 0).any() or (pairs[:, 1] <= 0).any():
        raise ItemError(image_id, at, "EncodedPixels has a negative start or a non-positive run length")
    return pairs


def decode_rle(pairs: np.ndarray, shape: tuple[int, int], image_id: str = "", at: str = "") -> np.ndarray:
    """Boolean H x W mask of SIIM's relative, column-major run-length pairs."""
    height, width = shape
    starts = np.cumsum(pairs[:, 0]) + np.concatenate([[0], np.cumsum(pairs[:, 1])[:-1]])
    ends = starts + pairs[:, 1]
    if ends.max() > height * width:
        raise ItemError(
            image_id,
            at,
            f"run ends at pixel {int(ends.max())}, past the {height * width} pixels of the {width}x{height} image",
        )
    edges = np.zeros(height * width + 1, np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, ends, -1)
    return (np.cumsum(edges[:-1]) > 0).reshape((height, width), order="F")


def _masks(
    runs: list[tuple[np.ndarray, str]], label: str, image_id: str, shape: tuple[int, int]
) -> dict[str, np.ndarray]:
    mask = np.zeros(shape, bool)
    for pairs, at in runs:
        mask |= decode_rle(pairs, shape, image_id, at)
    return {label: mask}


def collect(ctx: Context, opts: Options) -> Collection:
    label = check_label_names([opts.label], ctx.key("siim", "label"))[0]
    csv = ctx.path(opts.rle_csv)
    table = read_table(csv, ctx.key("siim", "rle_csv"), ["ImageId", "EncodedPixels"])
    files = index_files(ctx.path(opts.images_dir), (".dcm", ".dicom"), ctx.key("siim", "images_dir"))
    items, problems = [], []
    for image_id, rows in table.groupby("ImageId", sort=True):
        at = where(csv, rows["_row"])
        try:
            if not image_id:
                raise ItemError(image_id, at, "empty ImageId")
            runs = [
                (parse_rle(t, image_id, where(csv, r)), where(csv, r))
                for t, r in zip(rows["EncodedPixels"], rows["_row"])
            ]
            positive = [(p, a) for p, a in runs if p is not None]
            if positive and len(positive) < len(runs):
                raise ItemError(image_id, at, "'-1' (no pneumothorax) mixed with run-length rows for the same image")
            if image_id not in files:
                raise ItemError(
                    image_id,
                    at,
                    f"no DICOM file '{image_id}.dcm' under '{ctx.path(opts.images_dir)}'",
                    missing_file=True,
                )
        except ItemError as err:
            problems.append(err)
            continue
        items.append(
            Item(
                image_id=image_id,
                path=files[image_id],
                labels={label: int(bool(positive))},
                where=at,
                mask_fn=partial(_masks, positive, label, image_id) if positive else None,
            )
        )
    notes = []
    unused = len(set(files) - set(table["ImageId"]))
    if unused:
        notes.append(f"siim: {unused} DICOM files under '{opts.images_dir}' have no row in {csv.name} and are not used")
    return Collection([label], items, problems, notes=notes)
