"""Any folder of images plus a CSV manifest (docs/own-data.md, "Generic").

Expected under ``root`` (every name configurable in ``datasets.<name>.generic``):

- ``manifest.csv``: one row per image with an id column (``image_id``), a path
  column (``path``, relative to ``images_dir``; DICOM, PNG, JPEG or TIFF), one
  0/1 column per label (``labels``: a list of columns, or a mapping
  ``{column: label name}``), optionally a patient column (for
  ``splits.group_by: patient``), ``extra_columns`` copied to the manifest, and
  optionally one box per image in ``box_columns`` (``{x: ..., y: ...,
  width: ..., height: ...}``, blank cells = no box; label ``box_label``, default
  the first label);
- optional ``masks_dir``: one mask image per image and label, named by
  ``mask_pattern`` (default ``{image_id}_{label}.png``; non-zero = inside; same
  size as its image); an image without a mask file has no pixel ground truth;
- optional ``boxes_csv``: several boxes per image with columns ``image_id``,
  ``x, y, width, height`` and optional ``label`` and ``rater``; with several
  raters the mask is the consensus of ``consensus_min_raters``.

Coordinates are original pixels. Duplicate ids and boxes of unknown images
stop the run; malformed rows are :class:`ItemError` problems.
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
    Shape,
    check_label_names,
    check_unique,
    parse_binary,
    parse_float,
    read_table,
    require_dir,
    where,
)
from saliency_trust.data.adapters.images import read_mask

BOX_KEYS = ("x", "y", "width", "height")


@dataclass(frozen=True)
class Options:
    """Config ``datasets.<name>.generic``."""

    manifest: str = "manifest.csv"
    images_dir: str = "."
    id_column: str = "image_id"
    path_column: str = "path"
    labels: tuple[str, ...] | dict[str, str] | None = None
    patient_column: str | None = None
    extra_columns: tuple[str, ...] = ()
    masks_dir: str | None = None
    mask_pattern: str = "{image_id}_{label}.png"
    box_columns: dict[str, str] | None = None
    box_label: str | None = None
    boxes_csv: str | None = None
    consensus_min_raters: int = 1


def tables(ctx: Context, opts: Options) -> dict[str, Path]:
    files = {"generic.manifest": ctx.path(opts.manifest)}
    if opts.boxes_csv:
        files["generic.boxes_csv"] = ctx.path(opts.boxes_csv)
    return files


def _label_map(ctx: Context, opts: Options) -> dict[str, str]:
    if not opts.labels:
        raise ValueError(f"{ctx.key('generic', 'labels')} is required: the manifest's 0/1 label columns")
    mapping = dict(opts.labels) if isinstance(opts.labels, dict) else {c: c for c in opts.labels}
    check_label_names(list(mapping.values()), ctx.key("generic", "labels"))
    return mapping


def _read_masks(paths: dict[str, Path], image_id: str, at: str, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    out = {}
    for label, path in paths.items():
        try:
            out[label] = read_mask(path)
        except (FileNotFoundError, ValueError) as err:
            raise ItemError(image_id, at, str(err)) from None
    return out


def collect(ctx: Context, opts: Options) -> Collection:
    mapping = _label_map(ctx, opts)
    label_names = list(mapping.values())
    csv = ctx.path(opts.manifest)
    optional = [c for c in [opts.patient_column, *opts.extra_columns] if c]
    box_cols = dict(opts.box_columns or {})
    if box_cols and sorted(box_cols) != sorted(BOX_KEYS):
        raise ValueError(f"{ctx.key('generic', 'box_columns')} must map exactly {list(BOX_KEYS)} to column names")
    box_label = opts.box_label or label_names[0]
    if box_label not in label_names:
        raise ValueError(f"{ctx.key('generic', 'box_label')}: '{box_label}' is not one of the labels {label_names}")
    table = read_table(
        csv, ctx.key("generic", "manifest"), [opts.id_column, opts.path_column, *mapping, *optional, *box_cols.values()]
    )
    check_unique(table[opts.id_column], table["_row"], csv)
    images_dir = ctx.path(opts.images_dir)
    masks_dir = require_dir(ctx.path(opts.masks_dir), ctx.key("generic", "masks_dir")) if opts.masks_dir else None
    items: dict[str, Item] = {}
    problems: list[ItemError] = []
    n_mask_files = 0
    for _, row in table.iterrows():
        image_id, at = row[opts.id_column], where(csv, row["_row"])
        try:
            if not image_id:
                raise ItemError(image_id, at, f"empty {opts.id_column}")
            if not row[opts.path_column]:
                raise ItemError(image_id, at, f"empty {opts.path_column}")
            labels = {name: parse_binary(row[col], image_id, at, col) for col, name in mapping.items()}
            shapes = []
            cells = [row[box_cols[k]] for k in BOX_KEYS] if box_cols else []
            if any(cells):
                box = tuple(parse_float(v, image_id, at, box_cols[k]) for v, k in zip(cells, BOX_KEYS))
                shapes.append(Shape(box_label, "truth", at, box=box))
        except ItemError as err:
            problems.append(err)
            continue
        mask_fn = None
        if masks_dir is not None:
            paths = {
                label: masks_dir / opts.mask_pattern.format(image_id=image_id, label=label) for label in label_names
            }
            paths = {label: p for label, p in paths.items() if p.is_file()}
            n_mask_files += len(paths)
            mask_fn = partial(_read_masks, paths, image_id, at) if paths else None
        items[image_id] = Item(
            image_id=image_id,
            path=images_dir / row[opts.path_column],
            labels=labels,
            where=at,
            patient_id=row[opts.patient_column] if opts.patient_column else None,
            shapes=shapes,
            mask_fn=mask_fn,
            extra={c: row[c] for c in opts.extra_columns},
        )
    notes = []
    if masks_dir is not None:
        if n_mask_files == 0:
            raise FileNotFoundError(
                f"{ctx.key('generic', 'masks_dir')}: no mask file named like '{opts.mask_pattern}' in '{masks_dir}'"
            )
        notes.append(f"generic: {n_mask_files} mask files found in '{masks_dir}'")
    if opts.boxes_csv:
        problems += _boxes(ctx, opts, items, set(table[opts.id_column]), label_names)
    return Collection(
        label_names, list(items.values()), problems, consensus_min_raters=opts.consensus_min_raters, notes=notes
    )


def _boxes(
    ctx: Context, opts: Options, items: dict[str, Item], manifest_ids: set[str], label_names: list[str]
) -> list[ItemError]:
    """Attach the boxes CSV's boxes; an image with a malformed box row becomes a problem."""
    csv, key = ctx.path(opts.boxes_csv), ctx.key("generic", "boxes_csv")
    table = read_table(csv, key, ["image_id", *BOX_KEYS])
    problems = []
    for _, row in table.iterrows():
        image_id, at = row["image_id"], where(csv, row["_row"])
        if image_id not in manifest_ids:
            raise ValueError(f"{at} ({key}): unknown image id '{image_id}' (not in {opts.manifest})")
        if image_id not in items:  # dropped for an earlier problem
            continue
        try:
            box = tuple(parse_float(row[k], image_id, at, k) for k in BOX_KEYS)
        except ItemError as err:
            problems.append(err)
            items.pop(image_id)
            continue
        label = row.get("label") or label_names[0]
        items[image_id].shapes.append(Shape(label, row.get("rater") or "truth", at, box=box))
    return problems
