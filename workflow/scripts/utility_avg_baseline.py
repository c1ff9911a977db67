"""Snakemake entry: rule utility_avg_baseline."""
from saliency_trust.config import setup_logging
from saliency_trust.metrics.utility import run_avg_baseline

setup_logging(snakemake.log[0])
run_avg_baseline(
    snakemake.input.manifest,
    snakemake.input.images,
    target_label=snakemake.params.target_label,
    metrics=snakemake.params.metrics,
    out_path=snakemake.output[0],
)
