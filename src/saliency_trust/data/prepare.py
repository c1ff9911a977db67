"""Stage entry: write the canonical dataset of one config dataset (SPEC 3)."""

from __future__ import annotations

import logging

from saliency_trust.data.canonical import write_dataset
from saliency_trust.data.splits import assign_splits, check_splits
from saliency_trust.data.synthetic import SyntheticSpec, generate_dataset

log = logging.getLogger(__name__)


def prepare_synthetic(dataset_cfg: dict, seed: int, manifest_path, images_path, boxes_path) -> None:
    """Generate the synthetic benchmark, assign splits and write the canonical files."""
    spec = SyntheticSpec.from_config(dataset_cfg.get("synthetic", {}))
    splits = dataset_cfg.get("splits", {})
    manifest, images, masks, boxes = generate_dataset(spec, seed)
    manifest.insert(1, "split", assign_splits(manifest["image_id"], seed, **splits))
    check_splits(manifest, spec.label_names)
    counts = manifest.groupby("split")[spec.label_names].agg(["sum", "count"])
    log.info("synthetic benchmark: %d images of %d px; positives per split:\n%s", len(manifest), spec.image_size, counts)
    write_dataset(manifest, images, masks, boxes, spec.label_names, manifest_path, images_path, boxes_path, source="synthetic")
