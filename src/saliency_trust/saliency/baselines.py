"""Maps of the baselines, in the saliency cache format (docs/criteria.md; Arun et al., "Baselines").

Written to ``results/{dataset}/saliency/baselines/{name}.h5`` with the layout of
:mod:`saliency_trust.storage.maps`, so every metric scores them exactly like
saliency maps:

- ``AVG``: the low utility baseline, the pixel-wise mean of the target label's
  ground-truth masks over the training and validation images (the same map for
  every test image);
- ``UNET-r{k}``: the high baseline, replicate k of the U-Net
  (:mod:`saliency_trust.models.unet`): map = sigmoid of the per-pixel logit
  (``output: probability``) or the paper's final image, round(255 x sigmoid) / 255
  (``output: uint8``); raw = the logit;
- ``DETECTOR-r{k}``: the high baseline from boxes, replicate k of the detector
  (:mod:`saliency_trust.models.detector`): map = the highest score of the boxes
  covering each pixel; raw = the same with a channel axis.
"""

from __future__ import annotations

import numpy as np
import torch

from saliency_trust.saliency.compute import explained_images


def mean_mask(masks: np.ndarray) -> np.ndarray:
    """The AVG low baseline: pixel-wise mean of the given masks (train + val images)."""
    return masks.astype(np.float64).mean(axis=0).astype(np.float32)


def run_avg_map(
    manifest_path, images_path, target_label: str | None, out_path, fit_manifest_path=None, fit_images_path=None
) -> None:
    """Stage entry: the AVG map (mean train + val mask) for every positive test image. ``fit_*``: the dataset whose
    train + val masks are averaged when it is another one (an external test set's models_from)."""
    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.io import sha256_file
    from saliency_trust.storage.maps import write_maps

    data = load_dataset(manifest_path, images_path)
    fit = data if fit_manifest_path is None else load_dataset(fit_manifest_path, fit_images_path)
    label = target_label or data.label_names[0]
    fit_idx = np.concatenate([fit.indices("train"), fit.indices("val")])
    avg = mean_mask(fit.masks[fit_idx, fit.label_index(label)])
    if avg.shape != data.images.shape[1:]:
        raise ValueError(
            f"{images_path}: images of {data.images.shape[1:]} px, but the masks averaged from {fit_images_path} "
            f"are {avg.shape}: an external test set needs the image size of its models_from dataset"
        )
    ids, _ = explained_images(data, label)
    maps = np.repeat(avg[None], len(ids), axis=0)
    write_maps(
        out_path,
        ids,
        maps,
        maps[:, None],
        "AVG",
        {"fit_splits": ["train", "val"]},
        sha256_file(images_path if fit_images_path is None else fit_images_path),
        {"label": label},
    )


def check_baseline_label(payload: dict, label: str, model_path) -> None:
    """A U-Net or detector localizes the label it was trained on: refuse maps of another label (an external test
    set whose target label differs from its models_from dataset's)."""
    if payload.get("label", label) != label:
        raise ValueError(
            f"{model_path}: trained to localize '{payload['label']}', but the maps are asked for '{label}': set the "
            "same target_label for the dataset and its evaluate.models_from dataset"
        )


def run_unet_map(
    manifest_path,
    images_path,
    model_path,
    target_label: str | None,
    device: str,
    threads: int,
    out_path,
    output: str = "uint8",
) -> None:
    """Stage entry: U-Net heat maps (``output``: uint8 or probability) of every positive test image."""
    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.io import sha256_file
    from saliency_trust.models.train import select_device
    from saliency_trust.models.unet import load_unet, logits_to_map, predict_masks
    from saliency_trust.storage.maps import write_maps

    torch.set_num_threads(max(int(threads), 1))
    dev = select_device(device)
    data = load_dataset(manifest_path, images_path)
    label = target_label or data.label_names[0]
    ids, images = explained_images(data, label)
    payload = torch.load(model_path, map_location="cpu", weights_only=True)
    check_baseline_label(payload, label, model_path)
    logits = predict_masks(load_unet(model_path, dev), images, dev)
    write_maps(
        out_path,
        ids,
        logits_to_map(logits, output),
        logits[:, None],
        "UNET",
        payload["settings"],
        sha256_file(model_path),
        {"label": label, "output": output},
    )


def run_detector_map(
    manifest_path, images_path, model_path, target_label: str | None, device: str, threads: int, out_path
) -> None:
    """Stage entry: detector heat maps (method ``DETECTOR``) of every positive test image."""
    from dataclasses import asdict

    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.io import sha256_file
    from saliency_trust.models.detector import DETECTOR_METHOD, load_detector, predict_heatmaps
    from saliency_trust.models.train import select_device
    from saliency_trust.storage.maps import write_maps

    torch.set_num_threads(max(int(threads), 1))
    dev = select_device(device)
    data = load_dataset(manifest_path, images_path)
    label = target_label or data.label_names[0]
    model, settings = load_detector(model_path, dev)
    payload = torch.load(model_path, map_location="cpu", weights_only=True)
    check_baseline_label(payload, label, model_path)
    trained_shape = tuple(payload["image_shape"])
    if trained_shape != tuple(data.images.shape[1:]):
        raise ValueError(
            f"{model_path}: detector trained on {trained_shape} images, the dataset's are "
            f"{tuple(data.images.shape[1:])}"
        )
    ids, images = explained_images(data, label)
    heat = predict_heatmaps(model, images, dev, settings.min_score)
    write_maps(
        out_path,
        ids,
        heat,
        heat[:, None],
        DETECTOR_METHOD,
        asdict(settings),
        sha256_file(model_path),
        {"label": label, "output": "max box score"},
    )
