"""Snakemake entry: rule xrai_segments."""

from saliency_trust.config import setup_logging
from saliency_trust.saliency.xrai import run_segments

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_segments(snakemake.input.manifest, snakemake.input.images, snakemake.params.target_label, snakemake.output[0])
