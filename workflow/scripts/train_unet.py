"""Snakemake entry: rule train_unet."""

from saliency_trust.config import setup_logging
from saliency_trust.models.unet import run_train_unet

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_train_unet(
    snakemake.input.manifest,
    snakemake.input.images,
    target_label=snakemake.params.target_label,
    settings=snakemake.params.settings,
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    threads=snakemake.threads,
    model_path=snakemake.output.model,
    history_path=snakemake.output.history,
    metrics_path=snakemake.output.metrics,
)
