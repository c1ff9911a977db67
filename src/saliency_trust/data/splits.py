"""Deterministic, stable train/val/test splits (docs/own-data.md).

Each image's split is a function of ``(seed, image_id)`` only: a SHA-256 hash of
both is mapped to a number ``u`` in [0, 1) and compared with fixed cut points.
Adding new images therefore never moves an existing image to another split, so
new data never reshuffles what earlier models were trained on.

The default follows the papers: 10 % of all images go to test, then 10 % of the
rest to validation (the "90/10 then 90/10" split). Because the hash is
independent of the label, every label stratum is cut at the same points and gets
the same expected proportions (stratified in expectation); :func:`check_splits`
refuses a split that ends up without positive or negative images.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def split_uniform(image_id: str, seed: int) -> float:
    """Map ``(seed, image_id)`` to a uniform number in [0, 1)."""
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(
    image_ids: list[str] | pd.Index,
    seed: int,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
) -> np.ndarray:
    """Return an array of ``"train" | "val" | "test"`` for the given image ids.

    ``val_fraction`` is the fraction of the non-test images that go to validation.
    """
    if not 0 < test_fraction < 1 or not 0 < val_fraction < 1:
        raise ValueError(
            f"splits: test_fraction and val_fraction must lie in (0, 1), got {test_fraction}, {val_fraction}"
        )
    u = np.array([split_uniform(str(i), seed) for i in image_ids])
    val_cut = test_fraction + (1.0 - test_fraction) * val_fraction
    return np.where(u < test_fraction, "test", np.where(u < val_cut, "val", "train"))


def check_splits(manifest: pd.DataFrame, label_names: list[str], splits: tuple[str, ...] = SPLITS) -> None:
    """Raise a ValueError naming the split and label if one of ``splits`` lacks positives or negatives."""
    for split in splits:
        part = manifest[manifest["split"] == split]
        if part.empty:
            raise ValueError(f"split '{split}' has no images; add images or change the split fractions")
        for label in label_names:
            n_pos = int(part[label].sum())
            if n_pos == 0 or n_pos == len(part):
                kind = "positive" if n_pos == 0 else "negative"
                raise ValueError(
                    f"split '{split}' has no {kind} images for label '{label}' ({len(part)} images); "
                    "add images or change the split fractions / seed"
                )
