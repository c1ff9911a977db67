"""Snakemake entry: rule utility_scores."""
from saliency_trust.config import setup_logging
from saliency_trust.metrics.utility import run_utility

setup_logging(snakemake.log[0])
run_utility(
    snakemake.input.manifest,
    snakemake.input.images,
    snakemake.input.maps,
    model=snakemake.wildcards.model,
    method=snakemake.wildcards.method,
    target_label=snakemake.params.target_label,
    metrics=snakemake.params.metrics,
    out_path=snakemake.output[0],
)
