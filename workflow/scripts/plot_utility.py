"""Snakemake entry: rule plot_utility."""

import pandas as pd

from saliency_trust.config import setup_logging
from saliency_trust.plots.utility import plot_utility

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
plot_utility(
    pd.read_csv(snakemake.input[0], dtype={"image_id": str}),
    metric=snakemake.params.metric,
    methods=snakemake.params.methods,
    paths=[snakemake.output.png, snakemake.output.pdf],
    dpi=snakemake.params.style["dpi"],
    title=f"Localization utility - {snakemake.wildcards.dataset}",
)
