"""Snakemake entry: rule detector_maps."""

from saliency_trust.config import setup_logging
from saliency_trust.saliency.baselines import run_detector_map

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_detector_map(
    snakemake.input.manifest,
    snakemake.input.images,
    snakemake.input.model,
    target_label=snakemake.params.target_label,
    device=snakemake.params.device,
    threads=snakemake.threads,
    out_path=snakemake.output[0],
)
