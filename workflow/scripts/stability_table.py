"""Snakemake entry: rule stability_table."""

from saliency_trust.config import setup_logging
from saliency_trust.stats.stability import run_stability

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_stability(
    dict(zip(snakemake.params.seeds, snakemake.input)),
    csv_path=snakemake.output.csv,
    md_path=snakemake.output.md,
    tex_path=snakemake.output.tex,
    html_path=snakemake.output.html,
    seeds_path=snakemake.output.seeds,
    dataset=snakemake.wildcards.dataset,
    small_n=snakemake.params.small_n,
)
