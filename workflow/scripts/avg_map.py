"""Snakemake entry: rule avg_map."""

from saliency_trust.config import setup_logging
from saliency_trust.saliency.baselines import run_avg_map

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_avg_map(
    snakemake.input.manifest,
    snakemake.input.images,
    target_label=snakemake.params.target_label,
    out_path=snakemake.output[0],
    fit_manifest_path=getattr(snakemake.input, "fit_manifest", None),  # an external test set's models_from data
    fit_images_path=getattr(snakemake.input, "fit_images", None),
)
