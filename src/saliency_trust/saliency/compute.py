"""Batched computation of saliency maps, and the saliency stage entry points (docs/saliency.md)."""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import torch
from torch import nn

from saliency_trust.data.canonical import explained_images
from saliency_trust.data.splits import split_uniform
from saliency_trust.io import Progress, stable_seed
from saliency_trust.saliency.methods import ExplainContext, NonFiniteOutputError, TargetOutput, get_method
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
    image_ids: list[str] | None = None,
    segments: np.ndarray | None = None,
    seed: int = 0,
    max_batch_inputs: int = 64,
    amp: bool = False,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Explain ``images`` (N x H x W in [0, 1]) for output ``target``.

    ``image_ids`` and ``seed`` fix each image's SmoothGrad noise (independent of
    batching); ``segments`` (N x levels x H x W) are the XRAI label images;
    ``max_batch_inputs`` caps the inputs per forward pass; ``amp`` enables CUDA
    autocast (ignored on the CPU); ``progress`` logs a line per batch. Returns (raw N x 1 x H x W, maps N x H x W in [0, 1]).
    On the CPU, the process's C library is told to keep freed memory for the next pass
    (:func:`~saliency_trust.saliency.methods.reuse_freed_memory`).
    """
    from saliency_trust.saliency.methods import reuse_freed_memory

    method = get_method(method_key)
    device = torch.device(device)
    if device.type == "cpu":
        reuse_freed_memory()
    model = model.to(device).eval()
    # Gradients are needed w.r.t. the input only: frozen weights spare autograd the weight gradients.
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        raw = _attribute_batches(
            model,
            arch,
            images,
            method_key,
            params,
            target,
            output,
            batch_size,
            device,
            image_ids,
            segments,
            seed,
            max_batch_inputs,
            amp,
            progress,
        )
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return raw, POSTPROCESSORS[method.postprocess](raw)


def _attribute_batches(
    model,
    arch,
    images,
    method_key,
    params,
    target,
    output,
    batch_size,
    device,
    image_ids,
    segments,
    seed,
    max_batch_inputs,
    amp,
    log_progress=True,
) -> np.ndarray:
    method = get_method(method_key)
    ids = list(image_ids) if image_ids is not None else [str(i) for i in range(len(images))]
    raws = []
    progress = Progress(method_key, len(images), every=0.0, logger=log) if log_progress else None  # a line per batch
    autocast = (
        torch.autocast("cuda", dtype=torch.float16) if amp and device.type == "cuda" else contextlib.nullcontext()
    )
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        ctx = ExplainContext(
            TargetOutput(model, output),
            arch,
            noise_seeds=[stable_seed(seed, method_key, i) for i in ids[start:stop]],
            segments=list(segments[start:stop]) if segments is not None else None,
            max_batch_inputs=max_batch_inputs,
        )
        x = torch.from_numpy(np.ascontiguousarray(images[start:stop])).unsqueeze(1).to(device)
        x.requires_grad_(True)
        try:
            with autocast:
                raw = method.attribute(ctx, x, target, params)
            ctx.forward.check_finite()  # the outputs of all its passes, read once per batch
        except NonFiniteOutputError:
            with torch.no_grad():
                finite = torch.isfinite(model(x.detach())).flatten(1).all(dim=1).cpu().numpy()
            raise FloatingPointError(
                f"{method_key}: the model outputs NaN/inf for image "
                f"'{ids[start + int(np.argmin(finite))]}'; its checkpoint is broken: retrain it "
                "(delete its model.pt)"
            ) from None
        raw = raw.detach().float().cpu().numpy()
        bad = ~np.isfinite(raw.reshape(len(raw), -1)).all(axis=1)
        if bad.any():
            raise FloatingPointError(
                f"{method_key}: the attribution of image '{ids[start + int(np.argmax(bad))]}' is NaN/inf"
            )
        raws.append(raw)
        if progress is not None:
            progress.update(stop)
    return np.concatenate(raws) if raws else np.zeros((0, 1, *images.shape[1:]), np.float32)


def model_output(payload: dict, label: str, model_path) -> int:
    """The output of a trained model (checkpoint ``payload``) that predicts ``label``: found by name, so that an
    external test set explains the right output whatever the order of its own labels."""
    names = list(payload["label_names"])
    if label not in names:
        raise KeyError(f"{model_path}: the model predicts {names}, not the target label '{label}'")
    return names.index(label)


def explained_keys(ids: list[str], images, block: int = 256) -> list[str]:
    """The map store's key (:func:`~saliency_trust.storage.maps.image_key`) of each explained image, read a
    block at a time."""
    from saliency_trust.storage.maps import image_key

    keys = []
    for start in range(0, len(ids), block):
        pixels = np.asarray(images[start : start + block])
        keys += [image_key(i, img) for i, img in zip(ids[start : start + block], pixels)]
    return keys


def method_segments(method_key: str, segments_path, image_ids: list[str]) -> np.ndarray | None:
    """The XRAI segments of ``image_ids`` (one batch) when the method uses them, else None."""
    from saliency_trust.storage.maps import read_segments

    if not get_method(method_key).uses_segments:
        return None
    if segments_path is None:
        raise ValueError(f"method {method_key} needs the XRAI segments file")
    return read_segments(segments_path, image_ids)


def run_saliency(
    manifest_path,
    images_path,
    model_path,
    method_key: str,
    params: dict,
    target_label: str | None,
    output: str,
    batch_size: int,
    device: str,
    threads: int,
    out_path,
    seed: int = 0,
    max_batch_inputs: int = 64,
    amp: bool = False,
    segments_path=None,
    control: bool = False,
    store_root=None,
) -> None:
    """Stage entry: maps of one model and method for every positive test image, cached in HDF5.

    ``control``: the method is configured as a control map (``saliency.controls``) and must be one.
    ``store_root``: the folder of the :class:`~saliency_trust.storage.maps.MapStore` (None: no reuse); only the
    images it lacks are explained (docs/new-data.md).
    """
    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.io import sha256_file
    from saliency_trust.models.train import load_checkpoint, select_device
    from saliency_trust.saliency.methods import check_control, resolve_params
    from saliency_trust.storage.maps import MapStore, compute_maps

    if control:
        check_control(method_key)
    torch.set_num_threads(max(int(threads), 1))
    params = resolve_params(method_key, params)
    dev = select_device(device)
    data = load_dataset(manifest_path, images_path)
    label = target_label or data.label_names[0]
    ids, images = explained_images(data, label)
    target = {"label": label, "output": output, "seed": seed}
    model_sha = sha256_file(model_path)
    store_target = {**target, "amp": bool(amp and dev.type == "cuda")}  # float16 maps are other maps
    store = MapStore(store_root, method_key, params, model_sha, store_target) if store_root else None
    loaded = {}

    def compute(rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        if not loaded:
            loaded["model"], loaded["payload"] = load_checkpoint(model_path, dev)
        segments = method_segments(method_key, segments_path, [ids[k] for k in rows])
        raw, maps = compute_saliency(
            loaded["model"],
            loaded["payload"]["arch"],
            np.asarray(images[rows]),
            method_key,
            params,
            model_output(loaded["payload"], label, model_path),
            output,
            batch_size,
            dev,
            [ids[k] for k in rows],
            segments,
            seed,
            max_batch_inputs,
            amp,
            progress=False,  # the store logs the progress of the job
        )
        return maps, raw

    keys = explained_keys(ids, images)
    compute_maps(out_path, method_key, params, model_sha, target, ids, keys, compute, store, batch_size, method_key)


def randomization_subset(image_ids: list[str], n_images: int, seed: int) -> list[str]:
    """A seeded subset of ``n_images`` ids (all when 0 or more than there are), in their original order: the ids
    with the smallest hash of ``(seed, id)``, so that new images leave the subset as it was unless one of them
    hashes lower (docs/new-data.md)."""
    if n_images <= 0 or n_images >= len(image_ids):
        return list(image_ids)
    ranked = sorted(image_ids, key=lambda i: split_uniform(f"randomization-images:{i}", seed))
    keep = set(ranked[:n_images])
    return [i for i in image_ids if i in keep]


def run_randomized_saliency(
    manifest_path,
    images_path,
    model_path,
    method_key: str,
    params: dict,
    target_label: str | None,
    output: str,
    batch_size: int,
    device: str,
    threads: int,
    out_path,
    mode: str,
    init: str,
    n_images: int,
    seed: int = 0,
    max_batch_inputs: int = 64,
    amp: bool = False,
    segments_path=None,
    control: bool = False,
    draws: int = 1,
    store_root=None,
) -> None:
    """Stage entry: maps of one method at every randomization step of one model (docs/criteria.md), one cache file.

    Step k re-initializes the blocks :func:`saliency_trust.models.randomize.blocks_of_step` gives
    (cascading: the k blocks nearest the output; independent: block k alone), with ``draws`` seeded
    re-initializations (:func:`draw_seeds`). ``control`` as in :func:`run_saliency` (a control map is the
    same at every step: Adebayo et al. 2018). ``store_root`` as in :func:`run_saliency`.
    """
    from saliency_trust.data.canonical import load_dataset
    from saliency_trust.io import sha256_file
    from saliency_trust.models.randomize import blocks_of_step, randomization_blocks, randomized_model
    from saliency_trust.models.train import load_checkpoint, select_device
    from saliency_trust.saliency.methods import check_control, resolve_params
    from saliency_trust.storage.maps import MapStore, compute_randomized_maps, randomized_store_target

    if control:
        check_control(method_key)
    torch.set_num_threads(max(int(threads), 1))
    params = resolve_params(method_key, params)
    dev = select_device(device)
    data = load_dataset(manifest_path, images_path)
    label = target_label or data.label_names[0]
    all_ids, all_images = explained_images(data, label)
    ids = randomization_subset(all_ids, n_images, seed)
    position = {i: k for k, i in enumerate(all_ids)}
    images = data.image_rows(data.positive_indices("test", label)[[position[i] for i in ids]])
    model, payload = load_checkpoint(model_path, dev)
    arch = payload["arch"]
    steps = randomization_blocks(arch)
    target = {
        "label": label,
        "output": output,
        "seed": seed,
        "randomization": {"mode": mode, "init": init, "n_images": n_images},
    }
    seeds = draw_seeds(seed, draws)
    t0 = time.perf_counter()

    model_sha = sha256_file(model_path)
    store_target = {**randomized_store_target(target), "amp": bool(amp and dev.type == "cuda")}
    store = MapStore(store_root, method_key, params, model_sha, store_target) if store_root else None
    current = {}

    def compute_step(d: int, k: int, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        blocks = blocks_of_step(arch, mode, k + 1)
        if current.get("step") != (d, k):  # the randomized model of a draw and step, built once
            current["step"], current["model"] = (d, k), randomized_model(model, arch, blocks, seeds[d], init)
        raw, maps = compute_saliency(
            current["model"],
            arch,
            np.asarray(images[rows]),
            method_key,
            params,
            model_output(payload, label, model_path),
            output,
            batch_size,
            dev,
            [ids[r] for r in rows],
            method_segments(method_key, segments_path, [ids[r] for r in rows]),
            seed,
            max_batch_inputs,
            amp,
            progress=False,  # a line per draw and step below
        )
        log.info(
            "%s %s draw %d/%d step %d/%d (%s re-initialized): %d maps, %.1f s so far",
            method_key,
            mode,
            d + 1,
            len(seeds),
            k + 1,
            len(steps),
            ", ".join(blocks),
            len(rows),
            time.perf_counter() - t0,
        )
        return maps, raw

    keys = explained_keys(ids, images)
    compute_randomized_maps(
        out_path, method_key, params, model_sha, target, ids, steps, compute_step, seeds, keys, store, batch_size
    )


def draw_seeds(seed: int, draws: int) -> list[int]:
    """Re-initialization seeds of ``draws`` randomization draws: the first is ``seed`` itself (so one draw is the
    single re-initialization of the papers), the others derived from it."""
    if draws < 1:
        raise ValueError(f"randomization.draws must be at least 1, got {draws}")
    return [seed] + [stable_seed(seed, "randomization-draw", d) for d in range(2, draws + 1)]
