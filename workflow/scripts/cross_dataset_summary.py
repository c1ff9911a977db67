"""Snakemake entry: rule cross_dataset_summary."""

from saliency_trust.config import setup_logging
from saliency_trust.stats.pass_fail import run_cross_dataset_summary

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_cross_dataset_summary(
    dict(zip(snakemake.params.datasets, snakemake.input)),
    csv_path=snakemake.output.csv,
    md_path=snakemake.output.md,
)
