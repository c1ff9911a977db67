"""MURA v1.1 musculoskeletal radiographs (Rajpurkar et al. 2017; the saliency study of J Imaging Inform Med 2024,
doi:10.1007/s10278-024-01136-4; docs/own-data.md).

Expected: ``root`` is the ``MURA-v1.1`` folder, holding

- ``train_image_paths.csv``, ``valid_image_paths.csv``: no header, one image
  path per line, e.g. ``MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image1.png``
  (paths starting with the root folder's name are read from its parent);
- ``train_labeled_studies.csv``, ``valid_labeled_studies.csv``: no header,
  ``study folder, label`` with label 1 (abnormal) or 0.

Every image takes the label of its study folder (label ``abnormal``,
``mura.label``); a study folder named ``..._positive``/``..._negative`` must agree
with it. Both official parts are pooled and split again 90/10 then 90/10 (by
patient with ``splits.group_by: patient``). Image ids are
``{part}_{body part}_{patient}_{study}_{image}``.

MURA has no localization. The paper's ground truth, boxes drawn by three
radiologists, comes from a user annotation file (``mura.annotations``), a CSV
with columns ``image`` (the path as listed in the image-path CSV, or the image
id), ``rater``, then either ``x, y, width, height`` (a box) or ``polygon`` (a
JSON list of ``[x, y]`` points), in original pixels; one shape per row. The
mask is the consensus: pixels inside the shapes of at least
``consensus_min_raters`` raters (default 2 of 3); boxes.csv keeps each rater's
boxes and the consensus boxes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

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
    path_id,
    read_table,
    resolve_listed,
    where,
)

SPLITS = ("train", "valid")
BOX_COLUMNS = ("x", "y", "width", "height")


@dataclass(frozen=True)
class Options:
    """Config ``datasets.<name>.mura``."""

    image_paths_csvs: tuple[str, ...] = ("train_image_paths.csv", "valid_image_paths.csv")
    labeled_studies_csvs: tuple[str, ...] = ("train_labeled_studies.csv", "valid_labeled_studies.csv")
    annotations: str | None = None
    consensus_min_raters: int = 2
    body_parts: tuple[str, ...] | None = None
    label: str = "abnormal"


def tables(ctx: Context, opts: Options) -> dict[str, Path]:
    files = {f"mura.image_paths_csvs[{i}]": ctx.path(p) for i, p in enumerate(opts.image_paths_csvs)}
    files.update({f"mura.labeled_studies_csvs[{i}]": ctx.path(p) for i, p in enumerate(opts.labeled_studies_csvs)})
    if opts.annotations:
        files["mura.annotations"] = ctx.path(opts.annotations)
    return files


def _study_labels(ctx: Context, opts: Options) -> dict[str, tuple[str, str]]:
    """Study folder -> (label cell, where)."""
    studies: dict[str, tuple[str, str]] = {}
    for i, name in enumerate(opts.labeled_studies_csvs):
        csv = ctx.path(name)
        table = read_table(
            csv,
            ctx.key("mura", f"labeled_studies_csvs[{i}]"),
            ["study", "label"],
            header=False,
            names=["study", "label"],
        )
        for study, value, row in zip(table["study"], table["label"], table["_row"]):
            key = study.rstrip("/")
            if key in studies and studies[key][0] != value:
                raise ValueError(
                    f"{csv} row {row}: study '{study}' is labeled {value} here and {studies[key][0]} in {studies[key][1]}"
                )
            studies[key] = (value, where(csv, row))
    return studies


def _shapes(
    ctx: Context, opts: Options, label: str, items: dict[str, Item], listed: dict[str, str], excluded: set[str]
) -> tuple[int, list[ItemError]]:
    """Attach the annotation file's shapes to the items; returns (rows used, problems)."""
    csv = ctx.path(opts.annotations)
    key = ctx.key("mura", "annotations")
    table = read_table(csv, key, ["image", "rater"])
    has_box = all(c in table.columns for c in BOX_COLUMNS)
    if not has_box and "polygon" not in table.columns:
        raise ValueError(f"{csv} ({key}): needs box columns {list(BOX_COLUMNS)} or a 'polygon' column")
    used, problems, bad, known = 0, [], set(), set(listed.values())
    for _, row in table.iterrows():
        at = where(csv, row["_row"])
        image_id = listed.get(row["image"], row["image"])
        if image_id not in known:
            raise ValueError(f"{at} ({key}): unknown image '{row['image']}' (not in {list(opts.image_paths_csvs)})")
        if image_id in excluded or image_id not in items:  # filtered out, or dropped for an earlier problem
            continue
        try:
            if not row["rater"]:
                raise ItemError(image_id, at, "empty rater")
            row_label = row.get("label") or label
            box_cells = [row[c] for c in BOX_COLUMNS] if has_box else []
            polygon = row.get("polygon", "")
            if any(box_cells) and polygon:
                raise ItemError(image_id, at, "a row is either a box or a polygon, not both")
            if any(box_cells):
                box = tuple(parse_float(v, image_id, at, c) for v, c in zip(box_cells, BOX_COLUMNS))
                shape = Shape(row_label, row["rater"], at, box=box)
            elif polygon:
                try:
                    points = tuple((float(x), float(y)) for x, y in json.loads(polygon))
                except (ValueError, TypeError) as err:
                    raise ItemError(image_id, at, f"polygon must be a JSON list of [x, y] points ({err})") from None
                shape = Shape(row_label, row["rater"], at, polygon=points)
            else:
                raise ItemError(image_id, at, "row has neither a box nor a polygon")
        except ItemError as err:
            if image_id not in bad:
                problems.append(err)
            bad.add(image_id)
            continue
        items[image_id].shapes.append(shape)
        used += 1
    for image_id in bad:
        items.pop(image_id)
    return used, problems


def collect(ctx: Context, opts: Options) -> Collection:
    label = check_label_names([opts.label], ctx.key("mura", "label"))[0]
    if opts.consensus_min_raters < 1:
        raise ValueError(f"{ctx.key('mura', 'consensus_min_raters')} must be >= 1")
    studies = _study_labels(ctx, opts)
    items: dict[str, Item] = {}
    listed: dict[str, str] = {}  # listed path -> image id
    excluded: set[str] = set()
    problems: list[ItemError] = []
    for i, name in enumerate(opts.image_paths_csvs):
        csv = ctx.path(name)
        table = read_table(csv, ctx.key("mura", f"image_paths_csvs[{i}]"), ["path"], header=False, names=["path"])
        table["image_id"] = [path_id(p, 5) for p in table["path"]]
        check_unique(table["path"], table["_row"], csv, "image path")
        for path, image_id, row in zip(table["path"], table["image_id"], table["_row"]):
            at = where(csv, row)
            if image_id in items:
                raise ValueError(f"{at}: duplicate image id '{image_id}' (also {items[image_id].where})")
            listed[path] = image_id
            parts = PurePosixPath(path).parts
            if len(parts) < 5:
                problems.append(
                    ItemError(image_id, at, f"path '{path}' is not .../{{body part}}/{{patient}}/{{study}}/{{image}}")
                )
                continue
            body_part, patient, study = parts[-4], parts[-3], parts[-2]
            if opts.body_parts and body_part not in opts.body_parts:
                excluded.add(image_id)
                continue
            try:
                study_key = str(PurePosixPath(path).parent)
                if study_key not in studies:
                    raise ItemError(image_id, at, f"study '{study_key}/' is not in {list(opts.labeled_studies_csvs)}")
                value, study_at = studies[study_key]
                target = parse_binary(value, image_id, study_at, "label")
                suffix = {"positive": 1, "negative": 0}.get(study.rsplit("_", 1)[-1])
                if suffix is not None and suffix != target:
                    raise ItemError(image_id, at, f"study folder '{study}' contradicts its label {target} ({study_at})")
            except ItemError as err:
                problems.append(err)
                continue
            items[image_id] = Item(
                image_id=image_id,
                path=resolve_listed(ctx.root, path),
                labels={label: target},
                where=at,
                listed=path,
                patient_id=patient,
                extra={"body_part": body_part, "study": str(PurePosixPath(*parts[-5:-1]))},
            )
    notes = []
    if excluded:
        notes.append(f"mura: {len(excluded)} images outside body_parts {list(opts.body_parts)} not used")
    if opts.annotations:
        used, shape_problems = _shapes(ctx, opts, label, items, listed, excluded)
        problems += shape_problems
        notes.append(f"mura: {used} annotation rows on {sum(bool(it.shapes) for it in items.values())} images")
    else:
        notes.append("mura: no annotation file (mura.annotations): no localization ground truth")
    return Collection(
        [label], list(items.values()), problems, consensus_min_raters=opts.consensus_min_raters, notes=notes
    )
