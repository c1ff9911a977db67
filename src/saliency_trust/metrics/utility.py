"""Localization utility (docs/criteria.md; Arun et al., "Utility Metric").

Pixels inside the ground truth are positives and the map value is the score of
a binary pixel classifier. Two summaries of the precision-recall curve:

- ``pr_auc``: trapezoidal area under the PR curve (scikit-learn's
  ``precision_recall_curve`` + ``auc``), the AUPRC the papers report;
- ``ap``: average precision (step-wise, scikit-learn), which does not
  interpolate linearly between operating points.

Overlap after thresholding (Arun et al. MURA analysis; docs/criteria.md):

- ``iou`` / ``dice``: the map's Otsu foreground against the ground truth;
- ``iou_box`` / ``dice_box``: MURA-style box mode, each connected component
  (8-connectivity) of the Otsu foreground replaced by its filled bounding box;
- ``topk``: the fraction of the k most salient pixels that lie inside the
  ground truth, k = the ground-truth area (ties broken by pixel order).

Only positive test images are scored. The low baseline (AVG) is the mean
ground-truth mask over the training and validation images
(:mod:`saliency_trust.saliency.baselines`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from skimage.measure import label, regionprops
from sklearn.metrics import auc, average_precision_score, precision_recall_curve

from saliency_trust.metrics.similarity import dice, iou, otsu_mask

UTILITY_METRICS = ("pr_auc", "ap", "iou", "dice", "iou_box", "dice_box", "topk")
UTILITY_COLUMNS = ["image_id", "model", "method", "weights", "metric", "value"]
BLOCK = 16  # images scored at a time (their maps and masks: about 7 MB at 299 px)


def _check(score: np.ndarray, mask: np.ndarray, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    if score.shape != mask.shape:
        raise ValueError(f"image '{image_id}': map shape {score.shape} differs from mask shape {mask.shape}")
    truth = mask.reshape(-1) > 0
    if not truth.any():
        raise ValueError(f"image '{image_id}': ground-truth mask is empty; only positive images can be scored")
    s = score.reshape(-1).astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError(f"image '{image_id}': map contains NaN or inf")
    return s, truth


def pr_auc(score: np.ndarray, mask: np.ndarray, image_id: str = "?") -> float:
    """Trapezoidal area under the precision-recall curve of ``score`` against ``mask``."""
    s, truth = _check(score, mask, image_id)
    precision, recall, _ = precision_recall_curve(truth, s)
    return float(auc(recall, precision))


def average_precision(score: np.ndarray, mask: np.ndarray, image_id: str = "?") -> float:
    """Average precision (sum over thresholds of precision x recall increment)."""
    s, truth = _check(score, mask, image_id)
    return float(average_precision_score(truth, s))


def boxed(mask: np.ndarray) -> np.ndarray:
    """Each 8-connected component of ``mask`` replaced by its filled bounding box (MURA box mode)."""
    out = np.zeros(mask.shape, bool)
    for region in regionprops(label(mask, connectivity=2)):
        r0, c0, r1, c1 = region.bbox
        out[r0:r1, c0:c1] = True
    return out


def _otsu_overlap(score: np.ndarray, mask: np.ndarray, image_id: str, measure, boxes: bool) -> float:
    """``measure`` (iou or dice) of the map's Otsu foreground (as boxes when ``boxes``) with the ground truth."""
    s, truth = _check(score, mask, image_id)
    foreground = otsu_mask(s.reshape(mask.shape))
    return measure(boxed(foreground) if boxes else foreground, truth.reshape(mask.shape))


def otsu_iou_gt(score: np.ndarray, mask: np.ndarray, image_id: str = "?") -> float:
    """IoU of the map's Otsu foreground with the ground truth."""
    return _otsu_overlap(score, mask, image_id, iou, boxes=False)


def otsu_dice_gt(score: np.ndarray, mask: np.ndarray, image_id: str = "?") -> float:
    """Dice of the map's Otsu foreground with the ground truth."""
    return _otsu_overlap(score, mask, image_id, dice, boxes=False)


def box_iou_gt(score: np.ndarray, mask: np.ndarray, image_id: str = "?") -> float:
    """IoU with the ground truth of the Otsu foreground's components turned into boxes."""
    return _otsu_overlap(score, mask, image_id, iou, boxes=True)


def box_dice_gt(score: np.ndarray, mask: np.ndarray, image_id: str = "?") -> float:
    """Dice with the ground truth of the Otsu foreground's components turned into boxes."""
    return _otsu_overlap(score, mask, image_id, dice, boxes=True)


def top_k_overlap(score: np.ndarray, mask: np.ndarray, image_id: str = "?", k: int | None = None) -> float:
    """Fraction of the k most salient pixels inside the ground truth (k = ground-truth area by default)."""
    s, truth = _check(score, mask, image_id)
    k = int(truth.sum()) if k is None else int(k)
    if not 0 < k <= s.size:
        raise ValueError(f"image '{image_id}': top-k overlap needs 0 < k <= {s.size}, got {k}")
    top = np.argsort(-s, kind="stable")[:k]
    return float(truth[top].mean())


METRIC_FUNCTIONS = {
    "pr_auc": pr_auc,
    "ap": average_precision,
    "iou": otsu_iou_gt,
    "dice": otsu_dice_gt,
    "iou_box": box_iou_gt,
    "dice_box": box_dice_gt,
    "topk": top_k_overlap,
}


def utility_table(
    maps: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    model: str,
    method: str,
    metrics: tuple[str, ...] = UTILITY_METRICS,
    weights: str = "trained",
) -> pd.DataFrame:
    """Score every image in ``masks`` (positive test images) by its map; long table.

    ``weights`` tells whose maps these are (``trained`` or ``randomized``).
    Raises if a scored image has no map, naming the image.
    """
    rows = []
    for image_id, mask in masks.items():
        if image_id not in maps:
            raise KeyError(f"no {method} map for image '{image_id}' (model {model})")
        for metric in metrics:
            value = METRIC_FUNCTIONS[metric](maps[image_id], mask, image_id)
            rows.append((image_id, model, method, weights, metric, value))
    return pd.DataFrame(rows, columns=UTILITY_COLUMNS)


def run_utility(
    manifest_path,
    images_path,
    maps_paths: list[str],
    model: str,
    methods: list[str],
    target_label: str | None,
    metrics: list[str],
    out_path,
    randomized: bool = False,
) -> None:
    """Stage entry: utility of one model's maps (one cache file per method, same order) on the positive test images.

    With ``randomized``, the files are randomized-model caches and the maps of
    their last step (cascading: every block re-initialized) are scored, for the
    images that step explained; with several re-initialization draws each
    image's score is the mean over the draws (the image stays the unit of the
    statistics). Baselines use ``model`` = ``baseline``.
    """
    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.io import write_csv
    from saliency_trust.storage.maps import read_cached_ids, read_maps_of, read_randomized_maps

    if len(maps_paths) != len(methods):
        raise ValueError(f"{len(maps_paths)} map files for {len(methods)} methods")
    data = load_dataset(manifest_path, images_path)
    label = target_label or data.label_names[0]
    scored = positive_test_rows(data, label)
    ids = data.manifest["image_id"].to_numpy()
    li = data.label_index(label)
    tables = []
    for path, method in zip(maps_paths, methods):
        if not randomized:  # a block of images at a time: memory holds one block of maps and masks
            cached = set(read_cached_ids(path))
            lacking = [i for i in ids[scored] if i not in cached]
            if lacking:
                raise KeyError(f"no {method} map for image '{lacking[0]}' (model {model}) in {path}")
            for start in range(0, len(scored), BLOCK):
                rows = scored[start : start + BLOCK]
                block_ids = [str(i) for i in ids[rows]]
                masks = dict(zip(block_ids, np.asarray(data.masks[rows, li])))
                maps = dict(zip(block_ids, read_maps_of(path, block_ids, method=method)))
                tables.append(utility_table(maps, masks, model, method, tuple(metrics), "trained"))
            continue
        map_ids, _, step_maps = read_randomized_maps(path, method=method)  # the randomization subset only
        all_masks = positive_test_masks(data, target_label)
        masks = {i: all_masks[i] for i in map_ids if i in all_masks}  # only images with a ground truth are scored
        tables.append(randomized_utility(map_ids, step_maps, masks, model, method, tuple(metrics)))
    write_csv(pd.concat(tables, ignore_index=True), out_path)


def randomized_utility(
    image_ids: list[str],
    step_maps: np.ndarray,
    masks: dict[str, np.ndarray],
    model: str,
    method: str,
    metrics: tuple[str, ...] = UTILITY_METRICS,
) -> pd.DataFrame:
    """Utility of the fully randomized model's maps (the last step of each draw, ``step_maps``: D x S x N x H x W),
    averaged over the re-initialization draws per image: one row per image and metric, as for trained maps."""
    per_draw = pd.concat(
        [
            utility_table(dict(zip(image_ids, draw[-1])), masks, model, method, metrics, "randomized")
            for draw in step_maps
        ]
    )
    return per_draw.groupby(UTILITY_COLUMNS[:-1], sort=False, as_index=False)["value"].mean()[UTILITY_COLUMNS]


def positive_test_rows(data, label: str) -> np.ndarray:
    """Rows of the positive test images of ``label`` that have a ground-truth mask (the images utility scores)."""
    idx = data.positive_indices("test", label)
    if "has_mask" in data.manifest:  # positives without localization (e.g. CheXpert) cannot be scored
        idx = idx[data.manifest["has_mask"].to_numpy()[idx] > 0]
    if len(idx) == 0:
        raise ValueError(
            f"no positive test image for label '{label}' has a ground-truth mask: utility needs "
            f"localization (masks or boxes)"
        )
    return idx


def positive_test_masks(data, target_label: str | None) -> dict[str, np.ndarray]:
    """Ground-truth masks of the positive test images of the target label, keyed by image id."""
    label = target_label or data.label_names[0]
    li = data.label_index(label)
    idx = positive_test_rows(data, label)
    masks = np.asarray(data.masks[idx, li])
    return dict(zip(data.manifest["image_id"].iloc[idx], masks))
