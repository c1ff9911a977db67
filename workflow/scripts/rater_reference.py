"""Snakemake entry: rule rater_reference."""

from saliency_trust.config import setup_logging
from saliency_trust.metrics.raters import run_rater_reference

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_rater_reference(
    snakemake.input.manifest,
    snakemake.input.images,
    snakemake.input.boxes,
    target_label=snakemake.params.target_label,
    metrics=snakemake.params.metrics,
    out_path=snakemake.output.table,
    per_rater_path=snakemake.output.per_rater,
)
