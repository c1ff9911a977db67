"""Snakemake entry: rule evaluate_model."""

from saliency_trust.config import setup_logging
from saliency_trust.models.train import run_evaluation

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_evaluation(
    snakemake.input.manifest,
    snakemake.input.images,
    snakemake.input.model,
    snakemake.input.training_metrics,
    snakemake.output[0],
    device=snakemake.params.device,
)
