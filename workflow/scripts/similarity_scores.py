"""Snakemake entry: rule similarity_scores."""

from saliency_trust.config import setup_logging
from saliency_trust.metrics.similarity import run_similarity

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_similarity(
    list(snakemake.input),
    models=snakemake.params.models,
    methods=snakemake.params.methods,
    pairs=snakemake.params.pairs,
    data_range=snakemake.params.data_range,
    out_path=snakemake.output[0],
    similarity_maps=snakemake.params.similarity_maps,
)
