"""Entry points of the quality-control branch that run the model (INFORMER; docs/quality-control.md).

- :func:`run_class_maps`: one map per class of every validation and test image, for one saliency method, in the
  HDF5 cache format (``map`` N x L x H x W post-processed, ``raw`` N x L x C x H x W attributions);
- :func:`run_predictions`: the model's sigmoid outputs, their predictive entropy and the TTA spread.

Images are read and explained a batch at a time.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from saliency_trust.io import stable_seed, write_csv
from saliency_trust.qc import QC_SPLITS
from saliency_trust.qc.scores import TTASettings, predictive_entropy

log = logging.getLogger(__name__)


def qc_rows(manifest: pd.DataFrame) -> np.ndarray:
    """Rows of the validation and test images, in manifest order."""
    return np.flatnonzero(manifest["split"].isin(QC_SPLITS).to_numpy())


def _check_multi_label(label_names: list[str], where) -> None:
    if len(label_names) < 2:
        raise ValueError(
            f"{where}: quality control (qc.datasets) needs a multi-label dataset; this one has the single label "
            f"{label_names}"
        )


def run_class_maps(
    manifest_path,
    images_path,
    model_path,
    method_key: str,
    params: dict,
    batch_size: int,
    max_batch_inputs: int,
    amp: bool,
    device: str,
    threads: int,
    seed: int,
    out_path,
) -> None:
    """Stage entry: class maps (every class's logit explained) of every validation and test image."""
    import torch

    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.io import sha256_file
    from saliency_trust.models.train import load_checkpoint, select_device
    from saliency_trust.saliency.compute import compute_saliency
    from saliency_trust.saliency.methods import resolve_params
    from saliency_trust.storage.maps import compute_maps

    torch.set_num_threads(max(int(threads), 1))
    params = resolve_params(method_key, params)
    dev = select_device(device)
    data = load_dataset(manifest_path, images_path)
    model, payload = load_checkpoint(model_path, dev)
    labels = list(payload["label_names"])
    _check_multi_label(labels, model_path)
    rows = qc_rows(data.manifest)
    ids = data.manifest["image_id"].iloc[rows].astype(str).tolist()
    images = data.image_rows(rows)

    def compute(batch: list[int]) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(images[batch])
        raws, maps = [], []
        for target in range(len(labels)):
            raw, processed = compute_saliency(
                model,
                payload["arch"],
                x,
                method_key,
                params,
                target,
                "logit",
                batch_size,
                dev,
                [ids[k] for k in batch],
                None,
                seed,
                max_batch_inputs,
                amp,
                progress=False,
            )
            raws.append(raw)
            maps.append(processed)
        return np.stack(maps, axis=1), np.stack(raws, axis=1)

    target = {"labels": labels, "output": "logit", "seed": seed, "splits": list(QC_SPLITS)}
    compute_maps(
        out_path,
        method_key,
        params,
        sha256_file(model_path),
        target,
        ids,
        ids,  # no map store here: the entries only order the images, so no pass over the pixels for their keys
        compute,
        None,
        batch_size,
        f"{method_key} class maps",
    )


def run_predictions(
    manifest_path,
    images_path,
    model_path,
    tta: dict,
    seed: int,
    batch_size: int,
    device: str,
    threads: int,
    out_path,
    with_tta: bool = True,
) -> None:
    """Stage entry: one row per validation/test image and class: truth, sigmoid output, predictive entropy and
    the spread of the sigmoid output over the seeded TTA passes (empty without ``with_tta``: TTA is not a
    baseline). TTA passes are run ``batch_size`` at a time."""
    import torch

    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.models.train import load_checkpoint, predict, select_device
    from saliency_trust.qc.augmentation import tta_probabilities, tta_spread

    torch.set_num_threads(max(int(threads), 1))
    settings = TTASettings(**tta)
    dev = select_device(device)
    data = load_dataset(manifest_path, images_path)
    model, payload = load_checkpoint(model_path, dev)
    labels = list(payload["label_names"])
    _check_multi_label(labels, model_path)
    missing = [name for name in labels if name not in data.label_names]
    if missing:
        raise ValueError(f"{manifest_path}: no column for the label(s) {missing} that {model_path} predicts")
    rows = qc_rows(data.manifest)
    ids = data.manifest["image_id"].iloc[rows].astype(str).tolist()
    images = data.image_rows(rows)
    probability = [np.zeros((0, len(labels)), np.float32)]  # predict gives float32: the CSV keeps its digits
    spread = [np.zeros((0, len(labels)))]
    for start in range(0, len(rows), batch_size):  # each batch is read once for both
        batch = np.asarray(images[start : start + batch_size])
        probability.append(predict(model, batch, dev, batch_size))
        if with_tta:
            seeds = [stable_seed(seed, "tta", i) for i in ids[start : start + batch_size]]
            spread.append(tta_spread(tta_probabilities(model, batch, seeds, settings, dev, batch_size)))
        else:
            spread.append(np.full((len(batch), len(labels)), np.nan))
    probability, spread = np.concatenate(probability), np.concatenate(spread)
    truth = data.manifest[labels].to_numpy()[rows].astype(int)
    split = data.manifest["split"].to_numpy()[rows]
    out = pd.DataFrame(
        {
            "image_id": np.repeat(ids, len(labels)),
            "split": np.repeat(split, len(labels)),
            "label": np.tile(labels, len(rows)),
            "truth": truth.ravel(),
            "probability": probability.ravel(),
            "entropy": predictive_entropy(probability).ravel(),
            "tta_spread": spread.ravel(),
        }
    )
    log.info(
        "%d images x %d classes predicted (%s)",
        len(rows),
        len(labels),
        f"{settings.passes} TTA passes each" if with_tta else "no TTA: not a baseline",
    )
    write_csv(out, out_path)
