"""Shortcut check: does a classifier rely on a known confounder, and do its saliency maps show it?

A known-answer validation of the criteria of Arun et al.: the synthetic benchmark can plant a confounder (a
bright marker in the top-left corner drawn with a probability that depends on the label), so a classifier can
reach a high test AUC by reading the marker instead of the lesion, and utility, randomization and similarity do
not say so. This module does, in four parts:

(a) :func:`mass_table`: per positive test image x model x method, the share of map mass inside the confounder
    region (``mass_marker``) and inside the lesion mask (``mass_lesion``), and each share divided by the
    region's share of the image area (``enrichment_*``: mass per pixel relative to a uniform map, 1 = no
    preference). A constant map (all zero once post-processed) counts as uniform. Images without the marker get
    the region where it would be (synthetic: where the generator would draw it; user data: the fixed region).
(b) :func:`stratified_utility`: the utility table (``metrics/utility.csv``) averaged within marker strata.
(c) :func:`auc_table` on :func:`counterfactual_scores`: the test AUC of each trained model on the original
    test set and on counterfactual copies of the same images that the deterministic generator regenerates
    with nothing changed but the marker: removed from every image, added to every image, and assigned at random
    50/50 independently of the label (the marker-balanced counterfactual). User data has no generator: the
    counterfactual-free fallback (:func:`strata_auc_table`) is the AUC within marker strata (marker present
    only, absent only) and their size-weighted mean, the marker-balanced comparison that needs no new images.
(d) :func:`shortcut_summary` and :func:`shortcut_markdown`: the flag. A model **relies on the shortcut** when
    drop = AUC(original) - AUC(marker-balanced) is at least ``min_auc_drop`` (default 0.05) and the
    (1 - alpha) percentile interval of the drop from a seeded, label-stratified, paired bootstrap of the test
    images excludes 0. AUCs are scikit-learn's ``roc_auc_score``; the bootstrap resamples use the equal
    Mann-Whitney rank form (:func:`rank_auc`) for speed. Per method, the maps **point at the marker** when
    their mean mass per pixel in the marker region exceeds that in the lesion, over the marker-bearing positive
    test images. The EDGE control (Adebayo et al. 2018) is listed with them: a bright marker has strong edges
    whatever the model.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MARKER_COLUMN = "shortcut_marker"  # the synthetic manifest's 0/1 marker column
REGION_COLUMNS = ["image_id", "marker", "x", "y", "width", "height"]
MASS_COLUMNS = ["image_id", "model", "method", "marker", "metric", "value"]
SUMMARY_COLUMNS = ["analysis", "model", "method", "control", "weights", "condition", "metric", "n", "value"]
SCORE_COLUMNS = ["image_id", "label", "marker", "model", "condition", "score"]
SYNTHETIC_CONDITIONS = ("original", "marker_removed", "marker_added", "marker_random")
STRATA_CONDITIONS = ("original", "marker_present", "marker_absent", "marker_stratified")
MASS_METRICS = ("mass_marker", "mass_lesion", "enrichment_marker", "enrichment_lesion")
FLAG_RAISED = "SHORTCUT FLAG: the classifier relies on the confounder"
FLAG_CLEAR = "No shortcut flag"
_SYNTHETIC_ID = re.compile(r"^syn(\d+)$")


@dataclass(frozen=True)
class Confounder:
    """A dataset's known confounder: its 0/1 manifest ``column`` and where it lies, either a fixed ``region``
    (x, y, width, height in canonical pixels; user data) or per image from the synthetic generator (``spec``)."""

    column: str
    key: str  # the config key, for messages
    region: tuple[int, int, int, int] | None = None
    spec: object | None = None  # SyntheticSpec

    @property
    def synthetic(self) -> bool:
        return self.spec is not None


def confounder_of(name: str, dataset_cfg: dict) -> Confounder | None:
    """The confounder of dataset ``name``: the planted marker (``synthetic.shortcut.enabled``) or the configured
    ``confounder`` (column and region); None when it has neither."""
    if dataset_cfg.get("source") == "synthetic":
        from saliency_trust.data.synthetic import SyntheticSpec

        synthetic = dataset_cfg.get("synthetic") or {}
        if not (synthetic.get("shortcut") or {}).get("enabled"):
            return None
        return Confounder(
            MARKER_COLUMN, f"datasets.{name}.synthetic.shortcut", spec=SyntheticSpec.from_config(synthetic)
        )
    cfg = dataset_cfg.get("confounder")
    if not cfg:
        return None
    key = f"datasets.{name}.confounder"
    region = cfg.get("region")
    if not cfg.get("column") or region is None or len(region) != 4:
        raise ValueError(f"{key}: needs column (a 0/1 manifest column) and region [x, y, width, height], got {cfg}")
    return Confounder(str(cfg["column"]), key, region=tuple(int(v) for v in region))


def marker_flags(manifest: pd.DataFrame, confounder: Confounder, manifest_name: str) -> pd.Series:
    """0/1 marker per image id from the manifest column; a missing column or a value other than 0/1 names the
    file, the image and the config key."""
    column = confounder.column
    if column not in manifest.columns:
        raise ValueError(
            f"{manifest_name}: no column '{column}' ({confounder.key}.column); the manifest has "
            f"{list(manifest.columns)}"
        )
    values = pd.to_numeric(manifest[column], errors="coerce")
    bad = ~values.isin([0, 1])
    if bad.any():
        k = int(np.argmax(bad.to_numpy()))
        raise ValueError(
            f"{manifest_name}: image '{manifest['image_id'].iloc[k]}' has {column} = "
            f"{manifest[column].iloc[k]!r}; {confounder.key} needs 0/1 values"
        )
    return pd.Series(values.astype(int).to_numpy(), index=manifest["image_id"].astype(str), name="marker")


# ---------------------------------------------------------------- regions and mass shares


def fixed_regions(
    image_ids: list[str], markers: pd.Series, region: tuple[int, int, int, int], shape: tuple[int, int], key: str
) -> pd.DataFrame:
    """Region table for a fixed region, checked to lie inside the ``shape`` (H, W) canonical image."""
    x, y, w, h = region
    height, width = shape
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise ValueError(
            f"{key}.region = {list(region)}: must be [x, y, width, height] with width, height > 0 "
            f"inside the {width} x {height} canonical image"
        )
    return pd.DataFrame(
        {
            "image_id": list(image_ids),
            "marker": markers.loc[list(image_ids)].to_numpy(),
            "x": x,
            "y": y,
            "width": w,
            "height": h,
        }
    )[REGION_COLUMNS]


def region_masks(regions: pd.DataFrame, image_ids: list[str], shape: tuple[int, int]) -> np.ndarray:
    """N x H x W boolean masks of the regions of ``image_ids`` (a missing image is named)."""
    table = regions.set_index("image_id")
    out = np.zeros((len(image_ids), *shape), bool)
    for k, image_id in enumerate(image_ids):
        if image_id not in table.index:
            raise KeyError(f"no confounder region for image '{image_id}'")
        r = table.loc[image_id]
        out[k, int(r.y) : int(r.y) + int(r.height), int(r.x) : int(r.x) + int(r.width)] = True
    return out


def mass_shares(maps: np.ndarray, regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share of each map's mass inside its region, enrichment = share / region's area fraction); N each.

    ``maps`` N x H x W non-negative, ``regions`` N x H x W bool. A map with no mass counts as uniform (share =
    area fraction, enrichment 1); an empty region gives NaN.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.min(initial=0.0) < 0:
        raise ValueError("saliency maps must be non-negative for mass shares")
    flat, inside = maps.reshape(len(maps), -1), regions.reshape(len(regions), -1)
    area = inside.mean(axis=1)
    total = flat.sum(axis=1)
    share = np.where(total > 0, (flat * inside).sum(axis=1) / np.where(total > 0, total, 1.0), area)
    with np.errstate(invalid="ignore", divide="ignore"):
        enrichment = np.where(area > 0, share / np.where(area > 0, area, 1.0), np.nan)
    share = np.where(area > 0, share, np.nan)
    return share, enrichment


def mass_table(
    maps: np.ndarray,
    image_ids: list[str],
    marker_regions: np.ndarray,
    lesions: np.ndarray,
    markers: np.ndarray,
    model: str,
    method: str,
) -> pd.DataFrame:
    """Long table (a): mass share and enrichment in the marker region and in the lesion, per image.

    Lesion rows only for images with a non-empty lesion mask.
    """
    if not (len(maps) == len(image_ids) == len(marker_regions) == len(lesions) == len(markers)):
        raise ValueError(
            f"{model}/{method}: {len(maps)} maps, {len(image_ids)} ids, {len(marker_regions)} regions, "
            f"{len(lesions)} lesion masks, {len(markers)} marker flags"
        )
    share_m, enrich_m = mass_shares(maps, marker_regions)
    share_l, enrich_l = mass_shares(maps, lesions)
    has_lesion = lesions.reshape(len(lesions), -1).any(axis=1)
    parts = []
    for metric, values, keep in (
        ("mass_marker", share_m, None),
        ("mass_lesion", share_l, has_lesion),
        ("enrichment_marker", enrich_m, None),
        ("enrichment_lesion", enrich_l, has_lesion),
    ):
        sel = np.ones(len(values), bool) if keep is None else keep
        parts.append(
            pd.DataFrame(
                {
                    "image_id": np.asarray(image_ids)[sel],
                    "model": model,
                    "method": method,
                    "marker": np.asarray(markers, int)[sel],
                    "metric": metric,
                    "value": values[sel],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)[MASS_COLUMNS]


def mass_summary(mass: pd.DataFrame, controls: list[str]) -> pd.DataFrame:
    """Per model x method (and pooled over models, model ``all``) and marker stratum: mean of each mass metric;
    on the marker stratum also the fraction of images with more mass per pixel on the marker than on the lesion
    (``images_more_on_marker``) and the verdict ``points_at_marker`` (1 when the mean enrichment of the marker
    region exceeds that of the lesion)."""
    rows = []
    pooled = mass.assign(model="all")
    for (model, method, marker), g in pd.concat([mass, pooled]).groupby(["model", "method", "marker"], sort=False):
        wide = g.pivot_table(index="image_id", columns="metric", values="value", aggfunc="mean")
        condition = "marker" if marker else "no_marker"
        base = {
            "analysis": "mass",
            "model": model,
            "method": method,
            "control": method in controls,
            "weights": "trained",
            "condition": condition,
        }
        for metric in MASS_METRICS:
            if metric in wide:
                col = wide[metric].dropna()
                rows.append({**base, "metric": metric, "n": len(col), "value": float(col.mean())})
        if marker and {"enrichment_marker", "enrichment_lesion"} <= set(wide.columns):
            both = wide[["enrichment_marker", "enrichment_lesion"]].dropna()
            if len(both):
                more = float((both["enrichment_marker"] > both["enrichment_lesion"]).mean())
                points = float(both["enrichment_marker"].mean() > both["enrichment_lesion"].mean())
                rows.append({**base, "metric": "images_more_on_marker", "n": len(both), "value": more})
                rows.append({**base, "metric": "points_at_marker", "n": len(both), "value": points})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


# ---------------------------------------------------------------- utility by marker stratum


def stratified_utility(utility: pd.DataFrame, markers: pd.Series, controls: list[str]) -> pd.DataFrame:
    """(b): mean utility per model x method x weights x metric within each marker stratum (images of the
    utility table: positive test images)."""
    missing = [c for c in ("image_id", "model", "method", "weights", "metric", "value") if c not in utility.columns]
    if missing:
        raise ValueError(f"the utility table lacks columns {missing}")
    table = utility.assign(image_id=utility["image_id"].astype(str))
    unknown = sorted(set(table["image_id"]) - set(markers.index))
    if unknown:
        raise KeyError(f"utility table image '{unknown[0]}' has no marker flag in the manifest")
    table["condition"] = np.where(markers.loc[table["image_id"]].to_numpy() > 0, "marker", "no_marker")
    out = (
        table.groupby(["model", "method", "weights", "metric", "condition"], sort=True)["value"]
        .agg(["size", "mean"])
        .reset_index()
        .rename(columns={"size": "n", "mean": "value"})
    )
    out.insert(0, "analysis", "utility")
    out.insert(3, "control", out["method"].isin(controls))
    return out[SUMMARY_COLUMNS]


# ---------------------------------------------------------------- AUC, counterfactuals and the bootstrap


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (scikit-learn); NaN when ``y`` has one class only."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")


def rank_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank formula (average ranks for ties): equal to :func:`auc`, about 100x
    faster, for the bootstrap resamples; NaN when ``y`` has one class only."""
    from scipy.stats import rankdata

    y = np.asarray(y) > 0
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((rankdata(score)[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def stratified_auc(y: np.ndarray, score: np.ndarray, strata: np.ndarray, auc_fn: Callable = auc) -> float:
    """Size-weighted mean of the AUCs within each stratum that has both classes; NaN when none has."""
    values, weights = [], []
    for s in np.unique(strata):
        sel = strata == s
        a = auc_fn(y[sel], score[sel])
        if np.isfinite(a):
            values.append(a)
            weights.append(sel.sum())
    return float(np.average(values, weights=weights)) if values else float("nan")


def bootstrap_drop(
    y: np.ndarray, drop: Callable[[np.ndarray], float], n_bootstrap: int, seed: int, alpha: float
) -> tuple[float, float, float, int]:
    """(``drop`` of all images, CI low, CI high, valid resamples): the (1 - alpha) percentile interval of
    ``drop(idx)`` over a seeded bootstrap that resamples positives and negatives separately (paired: the same
    images for both AUCs)."""
    y = np.asarray(y)
    pos, neg = np.flatnonzero(y > 0), np.flatnonzero(y == 0)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(
            f"the test split needs positive and negative images for an AUC ({len(pos)} positive, {len(neg)} negative)"
        )
    rng = np.random.default_rng(seed)
    values = np.array(
        [drop(np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])) for _ in range(n_bootstrap)]
    )
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return drop(np.arange(len(y))), float("nan"), float("nan"), 0
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(drop(np.arange(len(y)))), float(low), float(high), len(values)


def relies_on_shortcut(estimate: float, ci_low: float, min_drop: float) -> bool:
    """The flag rule: the drop is at least ``min_drop`` and its interval excludes 0."""
    return bool(np.isfinite(estimate) and np.isfinite(ci_low) and estimate >= min_drop and ci_low > 0)


def random_assignment(image_ids: list[str], seed: int) -> np.ndarray:
    """Seeded marker-on flags, 50/50 and independent of the label, for the marker-balanced counterfactual."""
    from saliency_trust.io import stable_seed

    return np.array([stable_seed(seed, "shortcut-random-marker", i) % 2 == 1 for i in image_ids])


def synthetic_index(image_id: str) -> int:
    """Generator index of a synthetic image id (``syn000123`` -> 123)."""
    match = _SYNTHETIC_ID.match(image_id)
    if not match:
        raise ValueError(
            f"image '{image_id}' is not a synthetic benchmark id (syn + index): the marker "
            "counterfactuals need the generator"
        )
    return int(match[1])


def synthetic_counterfactuals(
    spec,
    seed: int,
    image_ids: list[str],
    stored: np.ndarray,
    markers: np.ndarray,
    images_name: str,
    encoding: str = "float32",
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int]]]:
    """(marker removed, marker added, marker boxes) of a batch of synthetic images, regenerated.

    Each stored image must equal the generator's (the one with its manifest marker state) as the store
    encodes it (``encoding``: :func:`~saliency_trust.data.canonical.as_stored`); otherwise the
    counterfactuals would not be of the same images, and the error names the image. The counterfactuals
    go through the same encoding, so that they differ from the stored image by the marker alone.
    """
    from saliency_trust.data.canonical import as_stored
    from saliency_trust.data.synthetic import generate_image

    removed, added, boxes = [], [], []
    for k, image_id in enumerate(image_ids):
        index = synthetic_index(image_id)
        off = generate_image(spec, seed, index, marker=False)
        on = generate_image(spec, seed, index, marker=True)
        off.image, on.image = as_stored(off.image[None], encoding)[0], as_stored(on.image[None], encoding)[0]
        if not np.array_equal((on if markers[k] else off).image, stored[k]):
            raise ValueError(
                f"{images_name}: image '{image_id}' differs from the synthetic generator's (seed {seed}, "
                "datasets.<name>.synthetic): the data were made with another config; rerun the data stage"
            )
        removed.append(off.image)
        added.append(on.image)
        boxes.append(on.marker_box)
    return np.stack(removed), np.stack(added), boxes


def model_scores(models: dict, images: np.ndarray, label_index: int, device, batch_size: int) -> dict[str, np.ndarray]:
    """Sigmoid probability of the target label for every image, per model."""
    from saliency_trust.models.train import predict

    images = np.ascontiguousarray(images, dtype=np.float32)
    return {name: predict(model, images, device, batch_size)[:, label_index] for name, model in models.items()}


def counterfactual_scores(
    models: dict,
    image_ids: list[str],
    images: np.ndarray,
    labels: np.ndarray,
    markers: np.ndarray,
    spec,
    seed: int,
    label_index: int,
    device,
    batch_size: int,
    images_name: str,
    encoding: str = "float32",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores, regions) of the synthetic test images under every condition of ``SYNTHETIC_CONDITIONS``
    (``encoding``: the image store's, :func:`synthetic_counterfactuals`).

    Images are regenerated ``batch_size`` at a time (memory bounded by the batch). The random condition shows
    each image with or without the marker by :func:`random_assignment`.
    """
    assign = random_assignment(image_ids, seed)
    parts, regions = [], []
    for start in range(0, len(image_ids), batch_size):
        sl = slice(start, start + batch_size)
        ids = image_ids[sl]
        removed, added, boxes = synthetic_counterfactuals(
            spec, seed, ids, images[sl], markers[sl], images_name, encoding
        )
        regions += [(i, int(m), *b) for i, m, b in zip(ids, markers[sl], boxes)]
        scores = {
            c: model_scores(models, imgs, label_index, device, batch_size)
            for c, imgs in (("original", images[sl]), ("marker_removed", removed), ("marker_added", added))
        }
        scores["marker_random"] = {
            m: np.where(assign[sl], scores["marker_added"][m], scores["marker_removed"][m]) for m in models
        }
        for condition in SYNTHETIC_CONDITIONS:
            for model, s in scores[condition].items():
                parts.append(
                    pd.DataFrame(
                        {
                            "image_id": ids,
                            "label": labels[sl],
                            "marker": markers[sl],
                            "model": model,
                            "condition": condition,
                            "score": s,
                        }
                    )
                )
    return pd.concat(parts, ignore_index=True)[SCORE_COLUMNS], pd.DataFrame(regions, columns=REGION_COLUMNS)


def original_scores(
    models: dict,
    image_ids: list[str],
    images: np.ndarray,
    labels: np.ndarray,
    markers: np.ndarray,
    label_index: int,
    device,
    batch_size: int,
) -> pd.DataFrame:
    """Scores of the test images as they are (user data: no counterfactual images)."""
    parts = []
    for start in range(0, len(image_ids), batch_size):
        sl = slice(start, start + batch_size)
        for model, s in model_scores(models, images[sl], label_index, device, batch_size).items():
            parts.append(
                pd.DataFrame(
                    {
                        "image_id": image_ids[sl],
                        "label": labels[sl],
                        "marker": markers[sl],
                        "model": model,
                        "condition": "original",
                        "score": s,
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)[SCORE_COLUMNS]


def _by_model(scores: pd.DataFrame, model: str) -> pd.DataFrame:
    """One model's scores as a wide table (rows: images in test order; columns: conditions)."""
    sel = scores[scores["model"] == model]
    wide = sel.pivot(index="image_id", columns="condition", values="score")
    first = sel.drop_duplicates("image_id").set_index("image_id")
    return wide.loc[first.index].assign(label=first["label"], marker=first["marker"])


def _auc_rows(
    model: str,
    aucs: dict[str, tuple[float, int]],
    counterfactual: str,
    estimate: float,
    low: float,
    high: float,
    n_valid: int,
    n_test: int,
    min_drop: float,
) -> list[dict]:
    base = {"model": model, "method": "", "control": False, "weights": "trained"}
    rows = [
        {**base, "analysis": "auc", "condition": c, "metric": "auc", "n": n, "value": a} for c, (a, n) in aucs.items()
    ]
    flag = relies_on_shortcut(estimate, low, min_drop)
    for metric, value, n in (
        ("drop", estimate, n_test),
        ("ci_low", low, n_valid),
        ("ci_high", high, n_valid),
        ("min_drop", min_drop, n_test),
        ("relies_on_shortcut", float(flag), n_test),
    ):
        rows.append(
            {**base, "analysis": "auc_drop", "condition": counterfactual, "metric": metric, "n": n, "value": value}
        )
    return rows


def auc_table(scores: pd.DataFrame, n_bootstrap: int, seed: int, alpha: float, min_drop: float) -> pd.DataFrame:
    """(c) and the flag, synthetic data: AUC per model and condition; drop = AUC(original) - AUC(marker_random)
    with its bootstrap interval and the verdict of :func:`relies_on_shortcut`."""
    from saliency_trust.io import stable_seed

    rows = []
    for model in dict.fromkeys(scores["model"]):
        wide = _by_model(scores, model)
        y = wide["label"].to_numpy()
        aucs = {c: (auc(y, wide[c].to_numpy()), len(wide)) for c in SYNTHETIC_CONDITIONS}
        s0, s1 = wide["original"].to_numpy(), wide["marker_random"].to_numpy()
        _, low, high, n_valid = bootstrap_drop(
            y,
            lambda i, y=y, s0=s0, s1=s1: rank_auc(y[i], s0[i]) - rank_auc(y[i], s1[i]),
            n_bootstrap,
            stable_seed(seed, "shortcut-bootstrap", model),
            alpha,
        )
        est = aucs["original"][0] - aucs["marker_random"][0]
        rows += _auc_rows(model, aucs, "marker_random", est, low, high, n_valid, len(wide), min_drop)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def strata_auc_table(scores: pd.DataFrame, n_bootstrap: int, seed: int, alpha: float, min_drop: float) -> pd.DataFrame:
    """(c) and the flag, user data (no generator): AUC on all test images, within the marker-present and the
    marker-absent images, and their size-weighted mean (``marker_stratified``); drop = AUC(original) -
    AUC(marker_stratified) with its bootstrap interval."""
    from saliency_trust.io import stable_seed

    rows = []
    for model in dict.fromkeys(scores["model"]):
        wide = _by_model(scores, model)
        y, s, m = wide["label"].to_numpy(), wide["original"].to_numpy(), wide["marker"].to_numpy()
        aucs = {
            "original": (auc(y, s), len(y)),
            "marker_present": (auc(y[m > 0], s[m > 0]), int((m > 0).sum())),
            "marker_absent": (auc(y[m == 0], s[m == 0]), int((m == 0).sum())),
            "marker_stratified": (stratified_auc(y, s, m), len(y)),
        }
        _, low, high, n_valid = bootstrap_drop(
            y,
            lambda i, y=y, s=s, m=m: rank_auc(y[i], s[i]) - stratified_auc(y[i], s[i], m[i], rank_auc),
            n_bootstrap,
            stable_seed(seed, "shortcut-bootstrap", model),
            alpha,
        )
        est = aucs["original"][0] - aucs["marker_stratified"][0]
        rows += _auc_rows(model, aucs, "marker_stratified", est, low, high, n_valid, len(y), min_drop)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


# ---------------------------------------------------------------- summary and report


def shortcut_summary(aucs: pd.DataFrame, mass: pd.DataFrame, utility: pd.DataFrame | None) -> pd.DataFrame:
    """The long summary table: one dataset-level ``flag`` row, then AUCs, drops, mass and utility rows."""
    drops = aucs[(aucs["analysis"] == "auc_drop") & (aucs["metric"] == "relies_on_shortcut")]
    flag = {
        "analysis": "flag",
        "model": "",
        "method": "",
        "control": False,
        "weights": "trained",
        "condition": drops["condition"].iloc[0] if len(drops) else "",
        "metric": "relies_on_shortcut",
        "n": int(drops["value"].sum()),
        "value": float(drops["value"].max()) if len(drops) else 0.0,
    }
    parts = [pd.DataFrame([flag], columns=SUMMARY_COLUMNS), aucs, mass]
    if utility is not None:
        parts.append(utility)
    return pd.concat([p for p in parts if len(p)], ignore_index=True)[SUMMARY_COLUMNS]


def _value(table: pd.DataFrame, **where) -> float:
    sel = table
    for key, value in where.items():
        sel = sel[sel[key] == value]
    return float(sel["value"].iloc[0]) if len(sel) else float("nan")


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def flag_line(summary: pd.DataFrame, alpha: float) -> str:
    """The one-line verdict: which models rely on the shortcut, with their AUC drop and interval."""
    drops = summary[summary["analysis"] == "auc_drop"]
    if drops.empty:
        return f"{FLAG_CLEAR}: no model was checked."
    cf = drops["condition"].iloc[0]
    level = f"{100 * (1 - alpha):g}% CI"
    parts, flagged = [], []
    for model in dict.fromkeys(drops["model"]):
        d = drops[drops["model"] == model]
        text = (
            f"{model}: AUC {_fmt(_value(summary, analysis='auc', model=model, condition='original'))} -> "
            f"{_fmt(_value(summary, analysis='auc', model=model, condition=cf))}, drop "
            f"{_fmt(_value(d, metric='drop'))} ({level} {_fmt(_value(d, metric='ci_low'))} to "
            f"{_fmt(_value(d, metric='ci_high'))})"
        )
        (flagged if _value(d, metric="relies_on_shortcut") > 0 else parts).append(text)
    min_drop = _value(drops, metric="min_drop")
    what = (
        "the marker assigned at random (marker-balanced counterfactual)"
        if cf == "marker_random"
        else "the AUC within marker strata (no counterfactual images for user data)"
    )
    if flagged:
        return (
            f"{FLAG_RAISED} ({len(flagged)} of {len(flagged) + len(parts)} models; original test set vs "
            f"{what}; drop >= {min_drop:g} with the interval excluding 0): " + "; ".join(flagged) + "."
        )
    return (
        f"{FLAG_CLEAR}: no model's AUC drops by >= {min_drop:g} with an interval excluding 0 on {what}: "
        + "; ".join(parts)
        + "."
    )


def shortcut_markdown(
    dataset: str,
    summary: pd.DataFrame,
    regions: pd.DataFrame,
    confounder: Confounder,
    alpha: float,
    utility_metric: str,
) -> str:
    """shortcut.md: the flag line, the AUC table, where the maps put their mass, utility by marker stratum."""
    lines = [f"# Shortcut check: {dataset}", "", flag_line(summary, alpha), ""]
    where = (
        "the planted marker of the synthetic benchmark, located per image by the generator"
        if confounder.synthetic
        else f"manifest column '{confounder.column}', region {list(confounder.region)}"
    )
    lines += [
        f"Confounder ({confounder.key}): {where}; {int(regions['marker'].sum())} of {len(regions)} test images "
        "carry it.",
        "",
    ]
    aucs = summary[summary["analysis"] == "auc"]
    drops = summary[summary["analysis"] == "auc_drop"]
    conditions = list(dict.fromkeys(aucs["condition"]))
    lines += [
        "## Test AUC by condition",
        "",
        "| Model | " + " | ".join(c.replace("_", " ") for c in conditions) + " | drop [CI] | relies on shortcut |",
        "|---|" + "---|" * (len(conditions) + 2),
    ]
    for model in dict.fromkeys(aucs["model"]):
        d = drops[drops["model"] == model]
        cells = [_fmt(_value(aucs, model=model, condition=c)) for c in conditions]
        ci = f"{_fmt(_value(d, metric='drop'))} [{_fmt(_value(d, metric='ci_low'))}, {_fmt(_value(d, metric='ci_high'))}]"
        lines.append(
            f"| {model} | " + " | ".join(cells) + f" | {ci} | "
            f"{'YES' if _value(d, metric='relies_on_shortcut') > 0 else 'no'} |"
        )
    mass = summary[(summary["analysis"] == "mass") & (summary["model"] == "all")]
    if len(mass):
        lines += [
            "",
            "## Where the maps put their mass (positive test images carrying the marker, all models)",
            "",
            "| Method | mass on marker | mass on lesion | per pixel on marker (x uniform) | per pixel on lesion "
            "(x uniform) | images more on marker | points at marker |",
            "|---|---|---|---|---|---|---|",
        ]
        marked = mass[mass["condition"] == "marker"]
        for method in dict.fromkeys(marked["method"]):
            m = marked[marked["method"] == method]
            name = f"{method} (control)" if m["control"].any() else method
            points = _value(m, metric="points_at_marker")
            lines.append(
                f"| {name} | "
                + " | ".join(_fmt(_value(m, metric=k)) for k in MASS_METRICS)
                + f" | {_fmt(_value(m, metric='images_more_on_marker'), 2)} | "
                + ("n/a" if not np.isfinite(points) else "YES" if points > 0 else "no")
                + " |"
            )
    util = summary[
        (summary["analysis"] == "utility") & (summary["metric"] == utility_metric) & (summary["weights"] == "trained")
    ]
    if len(util):
        lines += [
            "",
            f"## Utility ({utility_metric}) by marker presence, positive test images",
            "",
            "| Model | Method | with marker (n) | without marker (n) |",
            "|---|---|---|---|",
        ]
        for (model, method), g in util.groupby(["model", "method"], sort=False):
            cells = []
            for c in ("marker", "no_marker"):
                sel = g[g["condition"] == c]
                cells.append(f"{_fmt(float(sel['value'].iloc[0]))} ({int(sel['n'].iloc[0])})" if len(sel) else "n/a")
            lines.append(f"| {model} | {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "- Relies on shortcut: AUC(original) - AUC(marker-balanced) >= the minimum drop "
        "(metrics.shortcut.min_auc_drop) and the bootstrap interval of the drop (seeded, paired, positives and "
        "negatives resampled separately) excludes 0.",
        "- Per pixel (x uniform): share of the map's mass in the region divided by the region's share of the "
        "image; 1 = no preference. Points at marker: the mean per-pixel mass on the marker exceeds that on the "
        "lesion.",
        "- Control maps (Adebayo et al. 2018) ignore the model: a bright marker has strong edges, so a control "
        "can point at it without any classifier relying on it.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- stage entry


def run_shortcut_check(
    dataset: str,
    dataset_cfg: dict,
    manifest_path,
    images_path,
    model_paths: dict[str, str],
    maps_paths: list[str],
    map_models: list[str],
    map_methods: list[str],
    utility_path,
    target_label: str | None,
    controls: list[str],
    seed: int,
    min_auc_drop: float,
    n_bootstrap: int,
    alpha: float,
    utility_metric: str,
    device: str,
    batch_size: int,
    threads: int,
    out_csv,
    out_md,
    out_mass,
    out_regions,
) -> None:
    """Stage entry: the shortcut check of one dataset (module docstring), four files."""
    import torch

    from saliency_trust.data.canonical import load_dataset, store_encoding
    from saliency_trust.io import write_csv, write_text
    from saliency_trust.models.train import load_checkpoint, select_device
    from saliency_trust.storage.maps import read_maps

    confounder = confounder_of(dataset, dataset_cfg)
    if confounder is None:
        raise ValueError(
            f"datasets.{dataset}: no confounder to check (set synthetic.shortcut.enabled, or confounder for user data)"
        )
    if len(maps_paths) != len(map_models) or len(maps_paths) != len(map_methods):
        raise ValueError(f"{len(maps_paths)} map files for {len(map_models)} models and {len(map_methods)} methods")
    torch.set_num_threads(max(int(threads), 1))
    dev = select_device(device)
    data = load_dataset(manifest_path, images_path)
    label = target_label or data.label_names[0]
    li = data.label_index(label)
    markers = marker_flags(data.manifest, confounder, str(manifest_path))
    test = data.indices("test")
    ids = data.manifest["image_id"].iloc[test].astype(str).tolist()
    labels = (data.labels()[test, li] > 0).astype(int)
    flags = markers.loc[ids].to_numpy()
    models = {name: load_checkpoint(path, dev)[0] for name, path in model_paths.items()}
    if confounder.synthetic:
        scores, regions = counterfactual_scores(
            models,
            ids,
            data.image_rows(test),
            labels,
            flags,
            confounder.spec,
            seed,
            li,
            dev,
            batch_size,
            str(images_path),
            store_encoding(images_path),
        )
        aucs = auc_table(scores, n_bootstrap, seed, alpha, min_auc_drop)
    else:
        regions = fixed_regions(ids, markers, confounder.region, data.image_shape, confounder.key)
        scores = original_scores(models, ids, data.image_rows(test), labels, flags, li, dev, batch_size)
        aucs = strata_auc_table(scores, n_bootstrap, seed, alpha, min_auc_drop)
    for r in aucs[(aucs["analysis"] == "auc")].itertuples():
        log.info("%s: AUC %s = %.4f (%d images)", r.model, r.condition, r.value, r.n)
    masks_by_id = {data.manifest["image_id"].iloc[i]: data.masks[i, li] > 0 for i in test}
    mass_parts = []
    for path, model, method in zip(maps_paths, map_models, map_methods):
        cache = read_maps(path, method=method)
        mids = list(cache.image_ids)
        unknown = [i for i in mids if i not in masks_by_id]
        if unknown:
            raise KeyError(f"{path}: image '{unknown[0]}' is not a test image of the dataset")
        mass_parts.append(
            mass_table(
                cache.maps,
                mids,
                region_masks(regions, mids, cache.maps.shape[1:]),
                np.stack([masks_by_id[i] for i in mids]),
                markers.loc[mids].to_numpy(),
                model,
                method,
            )
        )
    mass = pd.concat(mass_parts, ignore_index=True) if mass_parts else pd.DataFrame(columns=MASS_COLUMNS)
    utility = None
    if utility_path:
        utility = stratified_utility(pd.read_csv(utility_path, dtype={"image_id": str}), markers, controls)
    summary = shortcut_summary(aucs, mass_summary(mass, controls), utility)
    log.info("%s", flag_line(summary, alpha))
    write_csv(regions, out_regions)
    write_csv(mass, out_mass)
    write_csv(summary, out_csv)
    write_text(shortcut_markdown(dataset, summary, regions, confounder, alpha, utility_metric), out_md)
