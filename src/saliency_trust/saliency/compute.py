"""Batched computation of saliency maps for a set of images (SPEC 5)."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from saliency_trust.saliency.methods import ExplainContext, TargetOutput, get_method
from saliency_trust.saliency.postprocess import POSTPROCESSORS

log = logging.getLogger(__name__)


def compute_saliency(
    model: nn.Module,
    arch: str,
    images: np.ndarray,
    method_key: str,
    params: dict,
    target: int,
    output: str = "logit",
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Explain ``images`` (N x H x W in [0, 1]) for output ``target``.

    Returns (raw N x 1 x H x W, maps N x H x W in [0, 1]).
    """
    method = get_method(method_key)
    model = model.to(device).eval()
    ctx = ExplainContext(TargetOutput(model, output), arch)
    raws = []
    t0 = time.perf_counter()
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).unsqueeze(1).to(device)
        x.requires_grad_(True)
        raw = method.attribute(ctx, x, target, params).detach().float().cpu().numpy()
        raws.append(raw)
        done = start + len(x)
        log.info("%s: %d/%d images (%.1f images/s)", method_key, done, len(images), done / (time.perf_counter() - t0))
    raw = np.concatenate(raws) if raws else np.zeros((0, 1, *images.shape[1:]), np.float32)
    return raw, POSTPROCESSORS[method.postprocess](raw)


def explained_images(data, target_label: str) -> tuple[list[str], np.ndarray]:
    """Positive test images of the target label: (ids, N x H x W images)."""
    idx = data.positive_indices("test", target_label)
    if len(idx) == 0:
        raise ValueError(f"the test split has no positive images for label '{target_label}'")
    return data.manifest["image_id"].iloc[idx].tolist(), data.images[idx]


def run_saliency(manifest_path, images_path, model_path, method_key: str, params: dict, target_label: str | None,
                 output: str, batch_size: int, device: str, threads: int, out_path) -> None:
    """Stage entry: maps of one model and method for every positive test image, cached in HDF5."""
    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.io import sha256_file
    from saliency_trust.models.train import load_checkpoint, select_device
    from saliency_trust.saliency.cache import write_maps
    from saliency_trust.saliency.methods import resolve_params

    torch.set_num_threads(max(int(threads), 1))
    params = resolve_params(method_key, params)
    dev = select_device(device)
    data = load_dataset(manifest_path, images_path)
    label = target_label or data.label_names[0]
    ids, images = explained_images(data, label)
    model, payload = load_checkpoint(model_path, dev)
    raw, maps = compute_saliency(model, payload["arch"], images, method_key, params, data.label_index(label), output, batch_size, dev)
    flat = maps.reshape(len(maps), -1)
    constant = np.flatnonzero(flat.max(axis=1) == flat.min(axis=1))
    if len(constant):
        log.warning("%s: %d constant map(s) (scored as all-zero maps), e.g. image '%s'", method_key, len(constant), ids[constant[0]])
    write_maps(out_path, ids, maps, raw, method_key, params, sha256_file(model_path), {"label": label, "output": output})
