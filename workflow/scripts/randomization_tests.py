"""Snakemake entry: rule randomization_tests."""

from saliency_trust.config import setup_logging
from saliency_trust.stats.randomization import run_randomization_tests

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_randomization_tests(
    snakemake.input.scores,
    snakemake.input.thresholds,
    alpha=snakemake.params.alpha,
    out_path=snakemake.output[0],
    test=snakemake.params.test,
)
