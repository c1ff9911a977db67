"""Snakemake entry: rule constant_maps."""

from saliency_trust.config import setup_logging
from saliency_trust.storage.maps import run_constant_maps

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_constant_maps(list(snakemake.input), snakemake.output[0])
