"""CheXpert chest radiographs (Irvin et al. 2019; used by Shu et al.'s INFORMER; docs/own-data.md).

Expected: ``root`` is the ``CheXpert-v1.0`` (or ``-small``) folder, holding
``train.csv`` and ``valid.csv`` with columns ``Path``, ``Frontal/Lateral`` and
the 14 findings, each ``1`` (positive), ``0`` (negative), ``-1`` (uncertain)
or blank (not mentioned). Paths such as
``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`` are read
from the root's parent when they start with the root folder's name.

As in INFORMER: frontal images only; the five competition findings
(Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion; mapped to
label names by ``chexpert.findings``); blank = negative; an image with an
uncertain finding is dropped (``uncertain: drop``; ``zeros``/``ones`` are the
U-Zeros/U-Ones policies of Irvin et al.); with ``drop_all_negative`` images
negative for all five findings are dropped too. Exclusions are counted in the
log. CheXpert has no localization. Image ids are ``{part}_{patient}_{study}_{view}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from saliency_trust.data.adapters.common import (
    Collection,
    Context,
    Item,
    ItemError,
    check_label_names,
    check_unique,
    path_id,
    read_table,
    resolve_listed,
    where,
)

COMPETITION_FINDINGS = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Pleural Effusion": "pleural_effusion",
}
UNCERTAIN = ("drop", "zeros", "ones")
VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "": 0, "-1": -1, "-1.0": -1}


@dataclass(frozen=True)
class Options:
    """Config ``datasets.<name>.chexpert``."""

    csvs: tuple[str, ...] = ("train.csv", "valid.csv")
    findings: dict[str, str] = field(default_factory=lambda: dict(COMPETITION_FINDINGS))
    frontal_only: bool = True
    uncertain: str = "drop"
    drop_all_negative: bool = False


def tables(ctx: Context, opts: Options) -> dict[str, Path]:
    return {f"chexpert.csvs[{i}]": ctx.path(p) for i, p in enumerate(opts.csvs)}


def collect(ctx: Context, opts: Options) -> Collection:
    if opts.uncertain not in UNCERTAIN:
        raise ValueError(f"{ctx.key('chexpert', 'uncertain')} must be one of {UNCERTAIN}, got '{opts.uncertain}'")
    findings = dict(opts.findings)
    labels = check_label_names(list(findings.values()), ctx.key("chexpert", "findings"))
    items: dict[str, Item] = {}
    problems: list[ItemError] = []
    counts = {"lateral": 0, "uncertain": 0, "all negative": 0}
    for i, name in enumerate(opts.csvs):
        csv = ctx.path(name)
        table = read_table(csv, ctx.key("chexpert", f"csvs[{i}]"), ["Path", "Frontal/Lateral", *findings])
        check_unique(table["Path"], table["_row"], csv, "Path")
        for _, row in table.iterrows():
            at = where(csv, row["_row"])
            image_id = path_id(row["Path"], 4)
            if image_id in items:
                raise ValueError(f"{at}: duplicate image id '{image_id}' (also {items[image_id].where})")
            view = row["Frontal/Lateral"]
            if view not in ("Frontal", "Lateral"):
                problems.append(
                    ItemError(image_id, at, f"Frontal/Lateral must be 'Frontal' or 'Lateral', got '{view}'")
                )
                continue
            if opts.frontal_only and view != "Frontal":
                counts["lateral"] += 1
                continue
            values, bad = {}, None
            for column, label in findings.items():
                cell = row[column]
                if cell not in VALUES:
                    bad = ItemError(image_id, at, f"column '{column}' must be 1, 0, -1 or blank, got '{cell}'")
                    break
                values[label] = VALUES[cell]
            if bad is not None:
                problems.append(bad)
                continue
            if -1 in values.values():
                if opts.uncertain == "drop":
                    counts["uncertain"] += 1
                    continue
                fill = 1 if opts.uncertain == "ones" else 0
                values = {k: fill if v == -1 else v for k, v in values.items()}
            if opts.drop_all_negative and not any(values.values()):
                counts["all negative"] += 1
                continue
            parts = PurePosixPath(row["Path"]).parts
            items[image_id] = Item(
                image_id=image_id,
                path=resolve_listed(ctx.root, row["Path"]),
                labels=values,
                where=at,
                listed=row["Path"],
                patient_id=parts[-3] if len(parts) >= 3 else None,
                extra={"view": row["AP/PA"] if "AP/PA" in table.columns else ""},
            )
    notes = [f"chexpert: dropped {n} {what} images" for what, n in counts.items() if n]
    return Collection(labels, list(items.values()), problems, notes=notes)
