"""RSNA Pneumonia Detection (Kaggle 2018; Arun et al., Methods "Datasets"; docs/own-data.md).

Expected under ``root``:

- ``stage_2_train_images/<patientId>.dcm``;
- ``stage_2_train_labels.csv``: ``patientId, x, y, width, height, Target``, one
  row per box for ``Target`` 1 (several rows per image), one row with empty box
  cells for ``Target`` 0;
- ``stage_2_detailed_class_info.csv``: ``patientId, class`` with ``Lung
  Opacity``, ``Normal`` or ``No Lung Opacity / Not Normal``.

As in the paper, images of class ``No Lung Opacity / Not Normal`` are dropped
(``rsna.drop_classes``; counted in the log), leaving pneumonia versus normal.
Label ``pneumonia`` (``rsna.label``) is ``Target``; boxes (original pixels,
rater ``truth``) are scaled to the canonical grid and rasterized into the mask.
Problems named with their CSV rows: ``Target`` not 0/1 or differing between an
image's rows, a box missing for ``Target`` 1 or present for 0, a class that
contradicts ``Target``, an image without class info.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from saliency_trust.data.adapters.common import (
    Collection,
    Context,
    Item,
    ItemError,
    Shape,
    check_label_names,
    parse_binary,
    parse_float,
    read_table,
    where,
)

BOX_COLUMNS = ("x", "y", "width", "height")
CLASS_TARGET = {"Lung Opacity": 1, "Normal": 0, "No Lung Opacity / Not Normal": 0}


@dataclass(frozen=True)
class Options:
    """Config ``datasets.<name>.rsna``."""

    images_dir: str = "stage_2_train_images"
    labels_csv: str = "stage_2_train_labels.csv"
    class_info_csv: str = "stage_2_detailed_class_info.csv"
    drop_classes: tuple[str, ...] = ("No Lung Opacity / Not Normal",)
    label: str = "pneumonia"


def tables(ctx: Context, opts: Options) -> dict[str, Path]:
    return {"rsna.labels_csv": ctx.path(opts.labels_csv), "rsna.class_info_csv": ctx.path(opts.class_info_csv)}


def collect(ctx: Context, opts: Options) -> Collection:
    label = check_label_names([opts.label], ctx.key("rsna", "label"))[0]
    labels_csv, info_csv = ctx.path(opts.labels_csv), ctx.path(opts.class_info_csv)
    table = read_table(labels_csv, ctx.key("rsna", "labels_csv"), ["patientId", *BOX_COLUMNS, "Target"])
    info = read_table(info_csv, ctx.key("rsna", "class_info_csv"), ["patientId", "class"])
    classes: dict[str, tuple[str, str]] = {}
    conflicts: dict[str, ItemError] = {}
    for pid, rows in info.groupby("patientId", sort=False):
        values = sorted(set(rows["class"]))
        if len(values) > 1:
            conflicts[pid] = ItemError(pid, where(info_csv, rows["_row"]), f"conflicting classes {values}")
        classes[pid] = (values[0], where(info_csv, rows["_row"]))
    problems: list[ItemError] = []
    images_dir = ctx.path(opts.images_dir)
    items, dropped = [], 0
    for pid, rows in table.groupby("patientId", sort=True):
        at = where(labels_csv, rows["_row"])
        try:
            if pid in conflicts:
                raise conflicts[pid]
            if pid not in classes:
                raise ItemError(pid, at, f"patientId has no row in {info_csv.name}")
            cls, cls_at = classes[pid]
            if cls in opts.drop_classes:
                dropped += 1
                continue
            targets = {
                parse_binary(t, pid, where(labels_csv, r), "Target") for t, r in zip(rows["Target"], rows["_row"])
            }
            if len(targets) > 1:
                raise ItemError(pid, at, "Target differs between the rows of one image")
            target = targets.pop()
            if cls in CLASS_TARGET and CLASS_TARGET[cls] != target:
                raise ItemError(pid, at, f"Target {target} contradicts class '{cls}' ({cls_at})")
            shapes = []
            for _, row in rows.iterrows():
                row_at = where(labels_csv, row["_row"])
                cells = [row[c] for c in BOX_COLUMNS]
                if target == 0:
                    if any(cells):
                        raise ItemError(pid, row_at, "box given for Target 0")
                    continue
                if not all(cells):
                    raise ItemError(pid, row_at, "Target 1 needs x, y, width and height")
                box = tuple(parse_float(v, pid, row_at, c) for v, c in zip(cells, BOX_COLUMNS))
                shapes.append(Shape(label, "truth", row_at, box=box))
        except ItemError as err:
            problems.append(err)
            continue
        items.append(
            Item(
                image_id=pid,
                path=images_dir / f"{pid}.dcm",
                labels={label: target},
                where=at,
                patient_id=pid,
                shapes=shapes,
            )
        )
    notes = [f"rsna: {dropped} images of classes {list(opts.drop_classes)} dropped (Arun et al.)"]
    return Collection([label], items, problems, notes=notes)
