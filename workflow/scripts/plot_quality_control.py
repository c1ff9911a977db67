"""Snakemake entry: rule plot_quality_control."""

import pandas as pd

from saliency_trust.config import setup_logging
from saliency_trust.plots.quality_control import plot_bootstrap_f1

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
plot_bootstrap_f1(
    pd.read_csv(snakemake.input.bootstrap),
    pd.read_csv(snakemake.input.comparisons),
    paths=[snakemake.output.png, snakemake.output.pdf],
    dpi=snakemake.params.style["dpi"],
    title=f"Quality control on bootstrap resamples - {snakemake.wildcards.dataset}",
)
