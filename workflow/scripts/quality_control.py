"""Snakemake entry: rule quality_control."""

from saliency_trust.config import setup_logging
from saliency_trust.qc.stage import run_quality_control

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_quality_control(
    snakemake.input.predictions,
    dict(zip(snakemake.params.methods, snakemake.input.maps)),
    settings=snakemake.params.settings,
    seed=snakemake.params.seed,
    model=snakemake.params.model,
    outputs={key: snakemake.output[key] for key in snakemake.output.keys()},
)
