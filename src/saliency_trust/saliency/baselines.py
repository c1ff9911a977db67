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

from saliency_trust.data.canonical import explained_images

BLOCK = 64  # images read and mapped at a time: memory holds one block (docs/scaling.md)


def mean_mask(masks: np.ndarray) -> np.ndarray:
    """The AVG low baseline: pixel-wise mean of the given masks (train + val images)."""
    return masks.astype(np.float64).mean(axis=0).astype(np.float32)


def streamed_mean_mask(masks, rows: np.ndarray, label_index: int) -> np.ndarray:
    """:func:`mean_mask` of ``masks[rows, label_index]`` read a block at a time (a streamed dataset)."""
    total = np.zeros(masks.shape[2:], np.float64)
    for start in range(0, len(rows), BLOCK):
        total += np.asarray(masks[rows[start : start + BLOCK], label_index], dtype=np.float64).sum(axis=0)
    return (total / len(rows)).astype(np.float32)


def write_map_blocks(out_path, ids: list[str], images, make_maps, method: str, params: dict, sha: str, target: dict):
    """Write a baseline's cache file a block of images at a time: ``make_maps(images)`` -> (maps, raw)."""
    from saliency_trust.storage.maps import MapWriter

    with MapWriter(out_path, ids) as writer:
        for start in range(0, len(ids), BLOCK):
            maps, raw = make_maps(np.asarray(images[start : start + BLOCK]))
            writer.write(np.arange(start, start + len(maps)), maps, raw, method)
        writer.finish(method, params, sha, target)


def run_avg_map(
    manifest_path, images_path, target_label: str | None, out_path, fit_manifest_path=None, fit_images_path=None
) -> None:
    """Stage entry: the AVG map (mean train + val mask) for every positive test image. ``fit_*``: the dataset whose
    train + val masks are averaged when it is another one (an external test set's models_from)."""
    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.io import sha256_file

    data = load_dataset(manifest_path, images_path)
    fit = data if fit_manifest_path is None else load_dataset(fit_manifest_path, fit_images_path)
    label = target_label or data.label_names[0]
    fit_idx = np.concatenate([fit.indices("train"), fit.indices("val")])
    li = fit.label_index(label)
    avg = streamed_mean_mask(fit.masks, fit_idx, li) if fit.streamed else mean_mask(fit.masks[fit_idx, li])
    if avg.shape != data.image_shape:
        raise ValueError(
            f"{images_path}: images of {data.image_shape} px, but the masks averaged from {fit_images_path} "
            f"are {avg.shape}: an external test set needs the image size of its models_from dataset"
        )
    ids, images = explained_images(data, label)
    write_map_blocks(
        out_path,
        ids,
        images,
        lambda x: (np.repeat(avg[None], len(x), axis=0), np.repeat(avg[None, None], len(x), axis=0)),
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
    import torch

    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.io import sha256_file
    from saliency_trust.models.train import select_device
    from saliency_trust.models.unet import load_unet, logits_to_map, predict_masks

    torch.set_num_threads(max(int(threads), 1))
    dev = select_device(device)
    data = load_dataset(manifest_path, images_path)
    label = target_label or data.label_names[0]
    ids, images = explained_images(data, label)
    payload = torch.load(model_path, map_location="cpu", weights_only=True)
    check_baseline_label(payload, label, model_path)
    model = load_unet(model_path, dev)

    def unet_maps(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = predict_masks(model, x, dev)
        return logits_to_map(logits, output), logits[:, None]

    write_map_blocks(
        out_path,
        ids,
        images,
        unet_maps,
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

    import torch

    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.io import sha256_file
    from saliency_trust.models.detector import DETECTOR_METHOD, load_detector, predict_heatmaps
    from saliency_trust.models.train import select_device

    torch.set_num_threads(max(int(threads), 1))
    dev = select_device(device)
    data = load_dataset(manifest_path, images_path)
    label = target_label or data.label_names[0]
    model, settings = load_detector(model_path, dev)
    payload = torch.load(model_path, map_location="cpu", weights_only=True)
    check_baseline_label(payload, label, model_path)
    trained_shape = tuple(payload["image_shape"])
    if trained_shape != data.image_shape:
        raise ValueError(
            f"{model_path}: detector trained on {trained_shape} images, the dataset's are {data.image_shape}"
        )
    ids, images = explained_images(data, label)

    def heat_maps(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heat = predict_heatmaps(model, x, dev, settings.min_score)
        return heat, heat[:, None]

    write_map_blocks(
        out_path,
        ids,
        images,
        heat_maps,
        DETECTOR_METHOD,
        asdict(settings),
        sha256_file(model_path),
        {"label": label, "output": "max box score"},
    )
