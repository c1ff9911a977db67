"""Localization utility (SPEC 6.1; Arun et al., "Utility Metric").

Pixels inside the ground truth are positives and the map value is the score of
a binary pixel classifier. Two summaries of the precision-recall curve:

- ``pr_auc``: trapezoidal area under the PR curve (scikit-learn's
  ``precision_recall_curve`` + ``auc``), the AUPRC the papers report;
- ``ap``: average precision (step-wise, scikit-learn), which does not
  interpolate linearly between operating points.

Only positive test images are scored. The low baseline (AVG) is the mean
ground-truth mask over the training and validation images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import auc, average_precision_score, precision_recall_curve

UTILITY_METRICS = ("pr_auc", "ap")
UTILITY_COLUMNS = ["image_id", "model", "method", "metric", "value"]


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


METRIC_FUNCTIONS = {"pr_auc": pr_auc, "ap": average_precision}


def utility_table(
    maps: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    model: str,
    method: str,
    metrics: tuple[str, ...] = UTILITY_METRICS,
) -> pd.DataFrame:
    """Score every image in ``masks`` (positive test images) by its map; long table.

    Raises if a scored image has no map, naming the image.
    """
    rows = []
    for image_id, mask in masks.items():
        if image_id not in maps:
            raise KeyError(f"no {method} map for image '{image_id}' (model {model})")
        for metric in metrics:
            value = METRIC_FUNCTIONS[metric](maps[image_id], mask, image_id)
            rows.append((image_id, model, method, metric, value))
    return pd.DataFrame(rows, columns=UTILITY_COLUMNS)


def mean_mask(masks: np.ndarray) -> np.ndarray:
    """The AVG low baseline: pixel-wise mean of the given masks (train + val images)."""
    return masks.astype(np.float64).mean(axis=0).astype(np.float32)


def run_utility(manifest_path, images_path, maps_path, model: str, method: str, target_label: str | None,
                metrics: list[str], out_path) -> None:
    """Stage entry: utility of one model x method on the positive test images."""
    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.io import write_csv
    from saliency_trust.saliency.cache import read_maps

    data = load_dataset(manifest_path, images_path)
    cached = read_maps(maps_path, method=method)
    table = utility_table(cached.by_id(), positive_test_masks(data, target_label), model, method, tuple(metrics))
    write_csv(table, out_path)


def positive_test_masks(data, target_label: str | None) -> dict[str, np.ndarray]:
    """Ground-truth masks of the positive test images of the target label, keyed by image id."""
    label = target_label or data.label_names[0]
    li = data.label_index(label)
    return {data.manifest["image_id"].iloc[i]: data.masks[i, li] for i in data.positive_indices("test", label)}


def run_avg_baseline(manifest_path, images_path, target_label: str | None, metrics: list[str], out_path) -> None:
    """Stage entry: utility of the AVG low baseline (mean train+val mask) on the positive test images."""
    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.io import write_csv

    data = load_dataset(manifest_path, images_path)
    label = target_label or data.label_names[0]
    li = data.label_index(label)
    fit_idx = np.concatenate([data.indices("train"), data.indices("val")])
    avg = mean_mask(data.masks[fit_idx, li])
    masks = positive_test_masks(data, label)
    table = utility_table({i: avg for i in masks}, masks, "baseline", "AVG", tuple(metrics))
    write_csv(table, out_path)
