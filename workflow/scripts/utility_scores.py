"""Snakemake entry: rules utility_scores, utility_scores_randomized and utility_baseline."""
from saliency_trust.config import setup_logging
from saliency_trust.metrics.utility import run_utility

setup_logging(snakemake.log[0])
wildcards = dict(snakemake.wildcards)
baseline = wildcards.get("baseline")
run_utility(
    snakemake.input.manifest,
    snakemake.input.images,
    snakemake.input.maps,
    model="baseline" if baseline else wildcards["model"],
    method=baseline.split("-r")[0] if baseline else wildcards["method"],
    target_label=snakemake.params.target_label,
    metrics=snakemake.params.metrics,
    out_path=snakemake.output[0],
    randomized=snakemake.params.randomized,
)
