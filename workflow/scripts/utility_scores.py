"""Snakemake entry: rules utility_scores, utility_scores_randomized and utility_baselines."""

from saliency_trust.config import setup_logging
from saliency_trust.metrics.utility import run_utility

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_utility(
    snakemake.input.manifest,
    snakemake.input.images,
    list(snakemake.input.maps),
    model=snakemake.wildcards.get("model", "baseline"),
    methods=snakemake.params.methods,
    target_label=snakemake.params.target_label,
    metrics=snakemake.params.metrics,
    out_path=snakemake.output[0],
    randomized=snakemake.params.randomized,
)
