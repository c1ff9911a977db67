"""From a :class:`Collection` to the canonical dataset on disk (docs/own-data.md).

Every image is read (DICOM or raster), resized to ``image_size`` with
anti-aliasing, and its localization brought onto the same grid: pixel masks by
nearest neighbour, boxes and polygons scaled and rasterized. Where raters
exist, a label's mask is the *consensus*: the pixels covered by at least
``consensus_min_raters`` raters (MURA: 2 of 3); ``boxes.csv`` then holds every
rater's boxes plus ``consensus`` rows, the bounding boxes of the consensus
mask's connected components. Pixel-mask sources (SIIM, generic masks) get
``truth`` rows the same way, so every dataset has both masks and boxes.

Problems with single images (:class:`ItemError`) stop the job
(``on_error: raise``, the default) or drop the image and are recorded in
``skipped.csv`` (``on_error: skip``). Images are streamed into ``images.h5``
(memory stays at one block of images, whatever the dataset size) and all four
files are renamed into place together only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from saliency_trust.data.adapters.common import Collection, Item, ItemError, Shape
from saliency_trust.data.adapters.images import read_image
from saliency_trust.data.canonical import BOX_COLUMNS, DEFAULT_ENCODING, ImageStoreWriter
from saliency_trust.data.geometry import Geometry, mask_boxes, rasterize_box, rasterize_polygon
from saliency_trust.data.splits import SPLITS, assign_splits, check_splits, split_uniform
from saliency_trust.io import Progress, atomic_path

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
SKIPPED_COLUMNS = ["image_id", "where", "reason"]
BLOCK = 32  # images converted per block (memory bound of the streaming writer)


@dataclass(frozen=True)
class ConvertOptions:
    """Options shared by all adapters (config ``datasets.<name>``; defaults as in the schema)."""

    image_size: int = 299
    resize: str = "stretch"
    intensity: str = "bit_depth"
    on_error: str = "raise"
    max_images: int | None = None

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got '{self.on_error}'")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")


@dataclass
class Converted:
    """One image on the canonical grid."""

    image: np.ndarray  # S x S float32
    masks: np.ndarray  # L x S x S uint8
    boxes: list[dict]
    header: dict
    orig_shape: tuple[int, int]
    extra: dict = field(default_factory=dict)


def _box_row(image_id: str, label: str, rater: str, box) -> dict:
    x, y, w, h = (round(float(v), 3) for v in box)
    return {"image_id": image_id, "label": label, "rater": rater, "x": x, "y": y, "width": w, "height": h}


def _shape_mask(shape: Shape, geo: Geometry) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Canonical mask and canonical bounding box of one box or polygon."""
    if shape.box is not None:
        box = geo.box(shape.box)
        return rasterize_box(box, geo.size), box
    pts = geo.points(np.asarray(shape.polygon, dtype=float))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return rasterize_polygon(pts, geo.size), (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])


def convert_item(item: Item, label_names: list[str], opts: ConvertOptions, min_raters: int = 1) -> Converted:
    """Read, resize and localize one image; raises :class:`ItemError` naming the image and its row."""
    try:
        image, header = read_image(item.path, opts.intensity)
    except FileNotFoundError:
        raise ItemError(item.image_id, item.where, f"image file '{item.path}' not found", missing_file=True) from None
    except ValueError as err:
        raise ItemError(item.image_id, item.where, str(err)) from None
    height, width = image.shape
    geo = Geometry(height, width, opts.image_size, opts.resize)
    masks = np.zeros((len(label_names), geo.size, geo.size), np.uint8)
    boxes: list[dict] = []

    def label_index(label: str, where: str) -> int:
        if label not in label_names:
            raise ItemError(item.image_id, where, f"annotation label '{label}' is not one of {label_names}")
        if item.labels.get(label, 0) == 0:
            raise ItemError(
                item.image_id, where, f"localization given for label '{label}', but the image is negative for it"
            )
        return label_names.index(label)

    if item.mask_fn is not None:
        for label, mask in item.mask_fn((height, width)).items():
            if mask.shape != (height, width):
                raise ItemError(
                    item.image_id, item.where, f"mask for '{label}' has shape {mask.shape}, the image {(height, width)}"
                )
            if not mask.any():
                continue
            li = label_index(label, item.where)
            masks[li] |= geo.mask(mask)
            boxes += [_box_row(item.image_id, label, "truth", b) for b in mask_boxes(masks[li])]

    votes: dict[str, dict[str, np.ndarray]] = {}
    for shape in item.shapes:
        shape.check_inside(height, width, item.image_id)
        label_index(shape.label, shape.where)
        mask, box = _shape_mask(shape, geo)
        per_rater = votes.setdefault(shape.label, {})
        per_rater[shape.rater] = per_rater.get(shape.rater, 0) | mask
        boxes.append(_box_row(item.image_id, shape.label, shape.rater, box))
    for label, per_rater in votes.items():
        consensus = (np.sum(list(per_rater.values()), axis=0) >= min_raters).astype(np.uint8)
        masks[label_names.index(label)] |= consensus
        if min_raters > 1:
            boxes += [_box_row(item.image_id, label, "consensus", b) for b in mask_boxes(consensus)]
    return Converted(geo.image(image), masks, boxes, header, (height, width))


def _safe_convert(args) -> Converted | ItemError:
    item, label_names, opts, min_raters = args
    try:
        return convert_item(item, label_names, opts, min_raters)
    except ItemError as err:
        return err


def select_subset(items: list[Item], max_images: int | None, seed: int) -> list[Item]:
    """A stable seeded subset (``max_images``) for quick trials: the images with the smallest hash."""
    if max_images is None or max_images >= len(items):
        return items
    ranked = sorted(items, key=lambda it: split_uniform(f"subset:{it.image_id}", seed))
    keep = {it.image_id for it in ranked[:max_images]}
    return [it for it in items if it.image_id in keep]


def convert_collection(
    collection: Collection,
    opts: ConvertOptions,
    root: Path,
    seed: int,
    splits: dict,
    manifest_path,
    images_path,
    boxes_path,
    skipped_path,
    source: str,
    workers: int = 1,
    all_test: bool = False,
    encoding: str = DEFAULT_ENCODING,
) -> pd.DataFrame:
    """Convert every item and write manifest, images, boxes and skipped list atomically; returns the manifest.
    ``all_test``: an external test set, every image in the test split. Images are written a block at a time
    (``encoding``: :mod:`saliency_trust.data.canonical`), so memory holds one block."""
    label_names = collection.label_names
    for note in collection.notes:
        log.info("%s", note)
    skipped: list[ItemError] = list(collection.problems)
    if skipped and opts.on_error == "raise":
        more = f" ({len(skipped) - 1} more problems; on_error: skip drops such images)" if len(skipped) > 1 else ""
        first = skipped[0].as_exception()
        raise type(first)(f"{first}{more}")
    items = select_subset(sorted(collection.items, key=lambda it: it.image_id), opts.max_images, seed)
    log.info(
        "%s: converting %d images to %d x %d px (%s, %s)",
        source,
        len(items),
        opts.image_size,
        opts.image_size,
        opts.resize,
        opts.intensity,
    )
    size, n_labels = opts.image_size, len(label_names)
    rows, box_rows = [], []
    progress = Progress(f"{source}: converted", len(items), logger=log)
    with contextlib.ExitStack() as stack:
        tmp = {
            name: stack.enter_context(atomic_path(path))
            for name, path in [
                ("images", images_path),
                ("manifest", manifest_path),
                ("boxes", boxes_path),
                ("skipped", skipped_path),
            ]
        }
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=max(1, workers)))
        with h5py.File(tmp["images"], "w") as h5:
            writer = ImageStoreWriter(h5, (size, size), n_labels, encoding)
            for start in range(0, len(items), BLOCK):
                block = items[start : start + BLOCK]
                args = [(it, label_names, opts, collection.consensus_min_raters) for it in block]
                done = []
                for item, result in zip(block, pool.map(_safe_convert, args)):
                    if isinstance(result, ItemError):
                        if opts.on_error == "raise":
                            raise result.as_exception()
                        log.warning("skipped: %s", result)
                        skipped.append(result)
                        continue
                    done.append((item, result))
                    box_rows += result.boxes
                    rows.append(_manifest_row(item, result, label_names, root))
                if done:
                    writer.append(
                        [item.image_id for item, _ in done],
                        np.stack([result.image for _, result in done]),
                        np.stack([result.masks for _, result in done]),
                    )
                progress.update(min(start + BLOCK, len(items)))
            if not rows:
                raise ValueError(f"{source}: no image could be converted ({len(skipped)} skipped); see the log")
            manifest = _finish_manifest(pd.DataFrame(rows), label_names, seed, splits, all_test)
            writer.finish(label_names, source)
        manifest.to_csv(tmp["manifest"], index=False)
        pd.DataFrame(box_rows, columns=BOX_COLUMNS).to_csv(tmp["boxes"], index=False)
        pd.DataFrame([s.record() for s in skipped], columns=SKIPPED_COLUMNS).to_csv(tmp["skipped"], index=False)
    unlocalized = int(((manifest[label_names].max(axis=1) > 0) & (manifest["has_mask"] == 0)).sum())
    if unlocalized:
        log.warning("%d positive images have no localization ground truth (has_mask = 0)", unlocalized)
    counts = manifest.groupby("split")[label_names].agg(["sum", "count"])
    log.info(
        "%s: %d images written, %d skipped (see %s), %d with localization; positives per split:\n%s",
        source,
        len(manifest),
        len(skipped),
        skipped_path,
        int(manifest["has_mask"].sum()),
        counts,
    )
    return manifest


def _manifest_row(item: Item, result: Converted, label_names: list[str], root: Path) -> dict:
    row = {"image_id": item.image_id}
    row.update({name: int(item.labels.get(name, 0)) for name in label_names})
    row["has_mask"] = int(result.masks.any())
    row["patient_id"] = item.patient_id or result.header.get("patient_id") or item.image_id
    if item.listed:
        row["source_path"] = item.listed
    else:
        try:
            row["source_path"] = Path(os.path.relpath(item.path, root)).as_posix()
        except ValueError:  # another drive (Windows)
            row["source_path"] = str(item.path)
    row["orig_height"], row["orig_width"] = result.orig_shape
    row.update(item.extra)
    return row


def _finish_manifest(
    manifest: pd.DataFrame, label_names: list[str], seed: int, splits: dict, all_test: bool = False
) -> pd.DataFrame:
    """Seeded hash splits (docs/own-data.md) by image or by patient (``all_test``: every image in test, an
    external test set); refuse splits without both classes."""
    splits = dict(splits or {})
    group_by = splits.pop("group_by", "image")
    keys = manifest["patient_id"] if group_by == "patient" else manifest["image_id"]
    split = assign_splits(keys.astype(str), seed, **splits)
    if all_test:
        split[:] = "test"
    manifest.insert(1, "split", split)
    check_splits(manifest, label_names, ("test",) if all_test else SPLITS)
    return manifest
