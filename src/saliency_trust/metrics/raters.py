"""Human reference where several raters exist (Arun et al.: "each rater vs consensus").

How well does one human localize the finding, measured the way saliency maps
are measured? For every positive test image of the target label that at least
two raters annotated, and for each of those raters ``r``:

- **rater mask**: the union of ``r``'s boxes of the target label, rasterized
  with the rule the adapters use for box ground truth
  (:func:`saliency_trust.data.geometry.boxes_mask`): the pixels
  whose centre (c + 0.5, r + 0.5) lies in ``[x, x + width) x [y, y + height)``;
  a box thinner than a pixel marks the pixel row/column holding its centre;
  what lies outside the image is dropped (:func:`~saliency_trust.data.geometry.pixel_span`);
- **leave-one-out consensus**: the pixels covered by at least
  ``ceil(m / 2)`` of the ``m`` *other* raters' masks (at least half of them,
  rounded up; never fewer than 1). With 2 raters the consensus is the other
  rater's mask; with 3, the union of the other two; with 4, 2 of the other 3;
  with 5, 2 of the other 4.

The rater mask is then scored against the consensus with the utility metrics
(docs/criteria.md), reading the binary mask as a map whose values are 0 and 1:

- ``pr_auc`` / ``ap``: as :mod:`saliency_trust.metrics.utility` computes them
  (a binary map has one operating point besides the trivial ones, so they
  summarize the rater's precision and recall);
- ``iou`` / ``dice``: of the two masks directly (the mask is already binary; an
  Otsu threshold of a 0/1 map would return the same foreground);
- ``iou_box`` / ``dice_box``: each 8-connected component of the rater mask
  replaced by its bounding box (MURA box mode, as for maps), against the
  consensus;
- ``topk``: the expected fraction of the k = |consensus| "most salient" pixels
  inside the consensus when the ties of the binary map are broken uniformly at
  random: |R & C| / |R| when the rater marked at least k pixels, else
  (|R & C| + (k - |R|) |C - R| / |not R|) / k. (The map metric breaks ties by
  pixel order, which for a two-valued map would score the raster position.)

Who is a rater: every distinct ``rater`` of an image's rows in ``boxes.csv``
except the pseudo-raters ``truth`` (the reference boxes of a dataset) and
``consensus`` (boxes of the adapters' consensus mask). A rater whose rows on the
image are all of other labels has an empty mask for the target label and counts
(it found nothing). A rater whose leave-one-out consensus is empty (the others
do not agree on any pixel) cannot be scored and is left out, with a warning.

Tables:

- per rater (:func:`rater_scores`): ``image_id, model, method, weights, rater,
  n_raters, metric, value``;
- the reference (:func:`rater_reference`): the per-rater values averaged over
  the raters of each image, one row per image and metric, with exactly the
  utility table's columns (``model = "human"``, ``method = "RATER"``,
  ``weights = "human"`` (not "n/a", which pandas reads as missing)). One value per image, like every method and baseline,
  so the table concatenates with ``utility.csv`` and enters the mixed model with
  its random intercept per image without weighting images by their number of
  raters; the per-rater table keeps the detail.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from saliency_trust.data.geometry import boxes_mask
from saliency_trust.metrics.similarity import dice, iou
from saliency_trust.metrics.utility import UTILITY_COLUMNS, average_precision, boxed, pr_auc

log = logging.getLogger(__name__)

PSEUDO_RATERS = ("truth", "consensus")
RATER_METRICS = ("pr_auc", "ap", "iou", "dice", "iou_box", "dice_box", "topk")
HUMAN_MODEL = "human"
RATER_METHOD = "RATER"
RATER_WEIGHTS = "human"
PER_RATER_COLUMNS = ["image_id", "model", "method", "weights", "rater", "n_raters", "metric", "value"]


def read_boxes(boxes_path) -> pd.DataFrame:
    """``boxes.csv`` with ``image_id``, ``label`` and ``rater`` as strings (raters ``1``, ``2`` stay text)."""
    boxes = pd.read_csv(boxes_path, dtype={"image_id": str, "label": str, "rater": str})
    missing = [c for c in ("image_id", "label", "rater", "x", "y", "width", "height") if c not in boxes.columns]
    if missing:
        raise ValueError(f"{boxes_path}: lacks columns {missing}")
    boxes["rater"] = boxes["rater"].fillna("truth")
    return boxes


def box_mask(box_rows: pd.DataFrame, shape: tuple[int, int]) -> np.ndarray:
    """Union of the boxes ``(x, y, width, height)`` of ``box_rows`` as an H x W boolean mask (pixel-centre rule)."""
    return boxes_mask(box_rows[["x", "y", "width", "height"]].itertuples(index=False), shape)


def consensus_threshold(n_others: int) -> int:
    """Votes a pixel needs from ``n_others`` raters: at least half of them, rounded up (>= 1)."""
    if n_others < 1:
        raise ValueError("a consensus needs at least one other rater")
    return max(1, math.ceil(n_others / 2))


def consensus_mask(masks: list[np.ndarray]) -> np.ndarray:
    """Pixels covered by at least ``ceil(len(masks) / 2)`` of the masks."""
    votes = np.sum([np.asarray(m, bool) for m in masks], axis=0)
    return votes >= consensus_threshold(len(masks))


def expected_topk(rater: np.ndarray, consensus: np.ndarray) -> float:
    """Expected fraction of the k = |consensus| top pixels of the binary map ``rater`` inside ``consensus``.

    Ties are broken uniformly at random (see the module docstring).
    """
    r, c = np.asarray(rater, bool), np.asarray(consensus, bool)
    k, n_r, n_rc = int(c.sum()), int(r.sum()), int((r & c).sum())
    if k == 0:
        raise ValueError("top-k overlap needs a non-empty consensus")
    if n_r >= k:
        return n_rc / n_r
    n_rest = r.size - n_r
    return (n_rc + (k - n_r) * (k - n_rc) / n_rest) / k


def score_rater(
    rater: np.ndarray, consensus: np.ndarray, metrics: tuple[str, ...] = RATER_METRICS, image_id: str = "?"
) -> dict[str, float]:
    """Utility metrics of one rater's mask against a (non-empty) consensus mask."""
    r, c = np.asarray(rater, bool), np.asarray(consensus, bool)
    funcs = {
        "pr_auc": lambda: pr_auc(r.astype(np.float64), c, image_id),
        "ap": lambda: average_precision(r.astype(np.float64), c, image_id),
        "iou": lambda: iou(r, c),
        "dice": lambda: dice(r, c),
        "iou_box": lambda: iou(boxed(r), c),
        "dice_box": lambda: dice(boxed(r), c),
        "topk": lambda: expected_topk(r, c),
    }
    unknown = [m for m in metrics if m not in funcs]
    if unknown:
        raise ValueError(f"unknown rater metric(s) {unknown}; allowed {list(funcs)}")
    if not c.any():
        raise ValueError(f"image '{image_id}': the consensus mask is empty")
    return {m: float(funcs[m]()) for m in metrics}


def image_raters(boxes: pd.DataFrame) -> dict[str, list[str]]:
    """Raters (pseudo-raters excluded) of each image, sorted, keyed by image id."""
    real = boxes[~boxes["rater"].isin(PSEUDO_RATERS)]
    return {i: sorted(g["rater"].unique()) for i, g in real.groupby("image_id", sort=True)}


def rater_scores(
    data, boxes: pd.DataFrame, label: str, metrics: tuple[str, ...] = RATER_METRICS, boxes_name: str = "boxes.csv"
) -> pd.DataFrame:
    """Per-rater table: each rater of each positive test image with >= 2 raters against the others' consensus."""
    data.label_index(label)  # raises for an unknown label
    idx = data.positive_indices("test", label)
    ids = data.manifest["image_id"].to_numpy()
    raters_of = image_raters(boxes)
    shape = tuple(data.image_shape)
    target = boxes[boxes["label"] == label]
    by_image = dict(tuple(target.groupby("image_id", sort=False)))
    rows, n_images, skipped = [], 0, 0
    for i in idx:
        image_id = ids[i]
        raters = raters_of.get(image_id, [])
        if len(raters) < 2:
            continue
        n_images += 1
        rows_i = by_image.get(image_id, target.iloc[:0])
        masks = {r: box_mask(rows_i[rows_i["rater"] == r], shape) for r in raters}
        for r in raters:
            cons = consensus_mask([masks[o] for o in raters if o != r])
            if not cons.any():
                skipped += 1
                log.warning("image '%s': the raters other than '%s' agree on no pixel; rater not scored", image_id, r)
                continue
            for metric, value in score_rater(masks[r], cons, metrics, image_id).items():
                rows.append((image_id, HUMAN_MODEL, RATER_METHOD, RATER_WEIGHTS, r, len(raters), metric, value))
    if n_images == 0:
        raise ValueError(
            f"{boxes_name}: no positive test image for label '{label}' has boxes from 2 or more raters "
            f"(raters other than {list(PSEUDO_RATERS)}); the human reference needs several raters "
            f"(synthetic data: set synthetic.raters >= 2)"
        )
    if not rows:
        raise ValueError(f"{boxes_name}: on every image with several raters, the other raters agree on no pixel")
    log.info(
        "human reference: %d images with >= 2 raters, %d rater(s) left out for an empty consensus", n_images, skipped
    )
    return pd.DataFrame(rows, columns=PER_RATER_COLUMNS)


def rater_reference(per_rater: pd.DataFrame) -> pd.DataFrame:
    """Mean over each image's raters: one row per image and metric, utility-table columns."""
    keys = ["image_id", "model", "method", "weights", "metric"]
    out = per_rater.groupby(keys, sort=False, as_index=False)["value"].mean()
    return out[UTILITY_COLUMNS]


def run_rater_reference(
    manifest_path, images_path, boxes_path, target_label: str | None, metrics: list[str], out_path, per_rater_path=None
) -> None:
    """Stage entry: the human reference table (and optionally the per-rater table), written atomically.

    Raises ValueError naming ``boxes_path`` when no positive test image has >= 2 raters.
    """
    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.io import write_csv

    data = load_dataset(manifest_path, images_path)
    label = target_label or data.label_names[0]
    per_rater = rater_scores(data, read_boxes(boxes_path), label, tuple(metrics), boxes_name=str(boxes_path))
    if per_rater_path is not None:
        write_csv(per_rater, per_rater_path)
    write_csv(rater_reference(per_rater), out_path)
