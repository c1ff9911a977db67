"""Snakemake entry: rule plot_randomization."""

import pandas as pd

from saliency_trust.config import setup_logging
from saliency_trust.plots.criteria import plot_randomization

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
plot_randomization(
    pd.read_csv(snakemake.input.scores, dtype={"image_id": str}),
    pd.read_csv(snakemake.input.thresholds),
    methods=snakemake.params.methods,
    paths=[snakemake.output.png, snakemake.output.pdf],
    dpi=snakemake.params.style["dpi"],
    title=f"Cascading randomization - {snakemake.wildcards.dataset} (dashed: degradation thresholds)",
)
