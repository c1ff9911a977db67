"""Snakemake entry: rule avg_map."""

from saliency_trust.config import setup_logging
from saliency_trust.saliency.baselines import run_avg_map

setup_logging(snakemake.log[0])
run_avg_map(
    snakemake.input.manifest,
    snakemake.input.images,
    target_label=snakemake.params.target_label,
    out_path=snakemake.output[0],
)
