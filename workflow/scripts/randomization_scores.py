"""Snakemake entry: rule randomization_scores."""

from saliency_trust.config import setup_logging
from saliency_trust.metrics.randomization import run_randomization_scores

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_randomization_scores(
    list(snakemake.input.trained),
    list(snakemake.input.randomized),
    model=snakemake.wildcards.model,
    methods=snakemake.params.methods,
    mode=snakemake.wildcards.mode,
    data_range=snakemake.params.data_range,
    out_path=snakemake.output[0],
    similarity_maps=snakemake.params.similarity_maps,
)
