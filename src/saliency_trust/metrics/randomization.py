"""Sensitivity to trained weights (docs/criteria.md; Adebayo et al. 2018; Arun et al., "Cascading randomization").

Per image and randomization step: SSIM between the map of the randomized model
and the map of the trained model. The degradation threshold is the mean SSIM
of ``n_pairs`` seeded random pairs of *different* images' trained maps: a map
that is no more similar to the trained one than two unrelated images' maps are
to each other has lost what the trained weights put in it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from saliency_trust.io import stable_seed
from saliency_trust.metrics.similarity import check_similarity_maps, compare_maps, signed_raw

RANDOMIZATION_COLUMNS = ["image_id", "model", "method", "mode", "draw", "step", "block", "metric", "value"]
THRESHOLD_COLUMNS = ["model", "method", "n_pairs", "threshold", "sd"]


def randomization_ssim(
    trained: dict[str, np.ndarray],
    image_ids: list[str],
    steps: list[str],
    step_maps: np.ndarray,
    model: str,
    method: str,
    mode: str,
    data_range: float = 1.0,
    kind: str = "processed",
) -> pd.DataFrame:
    """Long table of SSIM(step map, trained map) for every draw, image and step (draws and steps numbered from 1).

    ``step_maps``: D x S x N x H x W (re-initialization draws x steps x images), or S x N x H x W for one draw.
    """
    missing = [i for i in image_ids if i not in trained]
    if missing:
        raise KeyError(f"no trained {method} map of model {model} for image '{missing[0]}'")
    ref = np.stack([trained[i] for i in image_ids])
    if step_maps.ndim == ref.ndim + 1:
        step_maps = step_maps[None]
    if step_maps.shape[1:3] != (len(steps), len(image_ids)):
        raise ValueError(
            f"{method}/{model}: {step_maps.shape[1:3]} step maps for {len(steps)} steps x {len(image_ids)} images"
        )
    n_draws, n_steps, n = step_maps.shape[0], len(steps), len(image_ids)
    values = compare_maps(
        step_maps.reshape(n_draws * n_steps * n, *ref.shape[1:]),
        np.tile(ref, (n_draws * n_steps, 1, 1)),
        kind,
        data_range,
    )
    return pd.DataFrame(
        {
            "image_id": np.tile(image_ids, n_draws * n_steps),
            "model": model,
            "method": method,
            "mode": mode,
            "draw": np.repeat(np.arange(1, n_draws + 1), n_steps * n),
            "step": np.tile(np.repeat(np.arange(1, n_steps + 1), n), n_draws),
            "block": np.tile(np.repeat(steps, n), n_draws),
            "metric": "ssim",
            "value": values,
        }
    )[RANDOMIZATION_COLUMNS]


def random_pairs(n_images: int, n_pairs: int, seed: int) -> np.ndarray:
    """``n_pairs`` x 2 indices of seeded random pairs of different images."""
    if n_images < 2:
        raise ValueError(f"the degradation threshold needs at least 2 images, got {n_images}")
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n_images, n_pairs)
    second = (first + rng.integers(1, n_images, n_pairs)) % n_images  # uniform over the other images
    return np.stack([first, second], axis=1)


def degradation_threshold(
    maps: np.ndarray, n_pairs: int, seed: int, data_range: float = 1.0, kind: str = "processed"
) -> tuple[float, float]:
    """(mean, sd) SSIM over seeded random pairs of different images' maps (N x H x W)."""
    pairs = random_pairs(len(maps), n_pairs, seed)
    values = compare_maps(maps[pairs[:, 0]], maps[pairs[:, 1]], kind, data_range)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def threshold_table(
    trained_maps: dict[tuple[str, str], np.ndarray],
    n_pairs: int,
    seed: int,
    data_range: float = 1.0,
    kind: str = "processed",
) -> pd.DataFrame:
    """Degradation threshold per (model, method) from each one's trained maps."""
    rows = []
    for (model, method), maps in trained_maps.items():
        mean, sd = degradation_threshold(maps, n_pairs, stable_seed(seed, "threshold", model, method), data_range, kind)
        rows.append((model, method, n_pairs, mean, sd))
    return pd.DataFrame(rows, columns=THRESHOLD_COLUMNS)


def run_randomization_scores(
    trained_paths: list[str],
    randomized_paths: list[str],
    model: str,
    methods: list[str],
    mode: str,
    data_range: float,
    out_path,
    similarity_maps: str = "processed",
) -> None:
    """Stage entry: SSIM of every step's map to the trained map, one row per image x step x method."""
    from saliency_trust.io import write_csv
    from saliency_trust.storage.maps import read_maps, read_randomized_maps

    if not len(trained_paths) == len(randomized_paths) == len(methods):
        raise ValueError("trained_paths, randomized_paths and methods must have the same length")
    check_similarity_maps(similarity_maps)
    raw = similarity_maps == "raw"
    tables = []
    for trained_path, randomized_path, method in zip(trained_paths, randomized_paths, methods):
        cached = read_maps(trained_path, method=method, with_raw=raw)
        trained = dict(zip(cached.image_ids, signed_raw(cached.raw))) if raw else cached.by_id()
        ids, steps, maps = read_randomized_maps(randomized_path, method=method, dataset="raw" if raw else "map")
        tables.append(
            randomization_ssim(
                trained, ids, steps, signed_raw(maps) if raw else maps, model, method, mode, data_range, similarity_maps
            )
        )
    write_csv(pd.concat(tables, ignore_index=True), out_path)


def run_threshold(
    map_paths: list[str],
    models: list[str],
    methods: list[str],
    n_pairs: int,
    seed: int,
    data_range: float,
    out_path,
    similarity_maps: str = "processed",
) -> None:
    """Stage entry: degradation thresholds of every (model, method) in ``map_paths`` (same order)."""
    from saliency_trust.io import write_csv
    from saliency_trust.storage.maps import read_maps

    if not len(map_paths) == len(models) == len(methods):
        raise ValueError("map_paths, models and methods must have the same length")
    check_similarity_maps(similarity_maps)
    raw = similarity_maps == "raw"
    trained = {}
    for p, mo, me in zip(map_paths, models, methods):
        cached = read_maps(p, method=me, with_raw=raw)
        trained[mo, me] = signed_raw(cached.raw) if raw else cached.maps
    write_csv(threshold_table(trained, n_pairs, seed, data_range, similarity_maps), out_path)
