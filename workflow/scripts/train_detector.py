"""Snakemake entry: rule train_detector."""

from saliency_trust.config import setup_logging
from saliency_trust.models.detector import run_train_detector

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_train_detector(
    snakemake.input.manifest,
    snakemake.input.images,
    snakemake.input.boxes,
    target_label=snakemake.params.target_label,
    settings=snakemake.params.settings,
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    threads=snakemake.threads,
    model_path=snakemake.output.model,
    history_path=snakemake.output.history,
    metrics_path=snakemake.output.metrics,
)
