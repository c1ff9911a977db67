"""Snakemake entry: rule randomization_threshold."""

from saliency_trust.config import setup_logging
from saliency_trust.metrics.randomization import run_threshold

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_threshold(
    list(snakemake.input),
    models=snakemake.params.models,
    methods=snakemake.params.methods,
    n_pairs=snakemake.params.n_pairs,
    seed=snakemake.params.seed,
    data_range=snakemake.params.data_range,
    out_path=snakemake.output[0],
    similarity_maps=snakemake.params.similarity_maps,
)
