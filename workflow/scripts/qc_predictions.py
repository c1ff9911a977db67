"""Snakemake entry: rule qc_predictions."""

from saliency_trust.config import setup_logging
from saliency_trust.qc.inference import run_predictions

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_predictions(
    snakemake.input.manifest,
    snakemake.input.images,
    snakemake.input.model,
    tta=snakemake.params.tta,
    seed=snakemake.params.seed,
    batch_size=snakemake.params.batch_size,
    device=snakemake.params.device,
    threads=snakemake.threads,
    out_path=snakemake.output[0],
    with_tta=snakemake.params.with_tta,
)
