"""Snakemake entry: rule train_model."""

from saliency_trust.config import setup_logging
from saliency_trust.models.train import run_training

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_training(
    snakemake.input.manifest,
    snakemake.input.images,
    arch=snakemake.params.arch,
    settings=snakemake.params.settings,
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    threads=snakemake.threads,
    model_path=snakemake.output.model,
    history_path=snakemake.output.history,
    metrics_path=snakemake.output.metrics,
)
