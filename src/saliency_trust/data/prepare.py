"""Stage entry: write the canonical dataset of one config dataset (docs/own-data.md)."""

from __future__ import annotations

import logging

import numpy as np

from saliency_trust.config import runs_regex
from saliency_trust.data.canonical import (
    BOX_COLUMNS,
    DEFAULT_ENCODING,
    WRITE_BATCH,
    ImageStoreWriter,
    validate_manifest,
)
from saliency_trust.data.fingerprint import write_fingerprints
from saliency_trust.data.splits import SPLITS, assign_splits, check_splits
from saliency_trust.data.synthetic import SyntheticSpec, generate_items, test_only
from saliency_trust.io import atomic_path, write_csv

log = logging.getLogger(__name__)


def prepare_synthetic(
    dataset_cfg: dict,
    seed: int,
    manifest_path,
    images_path,
    boxes_path,
    fingerprints_path=None,
    encoding: str = DEFAULT_ENCODING,
) -> None:
    """Generate the synthetic benchmark, assign splits (``test_images``: test) and write the canonical files
    and their fingerprints (:mod:`saliency_trust.data.fingerprint`). Images are written as they are generated,
    a batch at a time, so memory does not grow with ``n_images`` (docs/scaling.md)."""
    import h5py
    import pandas as pd

    spec = SyntheticSpec.from_config(dataset_cfg.get("synthetic", {}))
    splits = dataset_cfg.get("splits", {})
    external = bool(dataset_cfg.get("evaluate"))
    rows, box_rows, batch = [], [], []
    with atomic_path(images_path) as tmp, h5py.File(tmp, "w") as h5:
        writer = ImageStoreWriter(h5, (spec.image_size, spec.image_size), len(spec.label_names), encoding)

        def flush() -> None:
            if batch:
                writer.append([b[0] for b in batch], np.stack([b[1] for b in batch]), np.stack([b[2] for b in batch]))
                batch.clear()

        for row, image, masks, boxes in generate_items(spec, seed):
            rows.append(row)
            box_rows += boxes
            batch.append((row["image_id"], image, masks))
            if len(batch) == WRITE_BATCH:
                flush()
        flush()
        manifest = pd.DataFrame(rows)
        split = assign_splits(manifest["image_id"], seed, **splits)
        split[test_only(manifest["image_id"])] = "test"
        if external:  # an external test set (evaluate.models_from): every image is a test image
            split[:] = "test"
        manifest.insert(1, "split", split)
        check_splits(manifest, spec.label_names, ("test",) if external else SPLITS)
        validate_manifest(manifest, spec.label_names)
        writer.finish(spec.label_names, "synthetic")
    counts = manifest.groupby("split")[spec.label_names].agg(["sum", "count"])
    log.info(
        "synthetic benchmark: %d images of %d px (stored as %s); positives per split:\n%s",
        len(manifest),
        spec.image_size,
        encoding,
        counts,
    )
    write_csv(pd.DataFrame(box_rows, columns=BOX_COLUMNS), boxes_path)
    write_csv(manifest, manifest_path)
    if fingerprints_path is not None:
        write_fingerprints(manifest_path, images_path, boxes_path, fingerprints_path)


def prepare_dataset(
    name: str,
    dataset_cfg: dict,
    seed: int,
    manifest_path,
    images_path,
    boxes_path,
    skipped_path,
    workers: int = 1,
    fingerprints_path=None,
    encoding: str = DEFAULT_ENCODING,
) -> None:
    """Convert a dataset on disk (SIIM-ACR, RSNA, MURA, CheXpert or generic; docs/own-data.md) to canonical form,
    and write its fingerprints (:mod:`saliency_trust.data.fingerprint`)."""
    from saliency_trust.data.adapters import adapter_options, context, convert_options, get_adapter
    from saliency_trust.data.adapters.convert import convert_collection

    ctx = context(name, dataset_cfg)
    opts = convert_options(dataset_cfg)
    collection = get_adapter(ctx.source).collect(ctx, adapter_options(name, dataset_cfg))
    log.info(
        "%s (%s): %d images listed under %s, labels %s",
        name,
        ctx.source,
        len(collection.items),
        ctx.root,
        collection.label_names,
    )
    target = dataset_cfg.get("target_label")
    if target and target not in collection.label_names:
        raise ValueError(f"datasets.{name}.target_label '{target}' is not one of the labels {collection.label_names}")
    convert_collection(
        collection,
        opts,
        ctx.root,
        seed,
        dataset_cfg.get("splits", {}),
        manifest_path,
        images_path,
        boxes_path,
        skipped_path,
        source=ctx.source,
        workers=workers,
        all_test=bool(dataset_cfg.get("evaluate")),
        encoding=encoding,
    )
    if fingerprints_path is not None:
        write_fingerprints(manifest_path, images_path, boxes_path, fingerprints_path)


def dataset_regex(datasets: dict, synthetic: bool, seeded: bool = False) -> str:
    """Wildcard constraint matching exactly the runs of the synthetic (or the adapted) datasets of the config;
    ``seeded``: the stability mode's runs ``{dataset}/seed-{s}``.

    Keeps the rules ``synthetic_dataset`` and ``prepare_dataset`` unambiguous.
    """
    return runs_regex([n for n, d in datasets.items() if (d.get("source") == "synthetic") == synthetic], seeded)
