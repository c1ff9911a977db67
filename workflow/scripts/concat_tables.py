"""Snakemake entry: concatenate tidy tables (rule utility_table)."""

from saliency_trust.config import setup_logging
from saliency_trust.io import concat_csv

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
concat_csv(list(snakemake.input), snakemake.output[0])
