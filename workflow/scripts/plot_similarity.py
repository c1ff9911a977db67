"""Snakemake entry: rule plot_similarity."""

import pandas as pd

from saliency_trust.config import setup_logging
from saliency_trust.plots.criteria import plot_similarity

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
plot_similarity(
    pd.read_csv(snakemake.input[0], dtype={"image_id": str}),
    methods=snakemake.params.methods,
    paths=[snakemake.output.png, snakemake.output.pdf],
    low=snakemake.params.low,
    dpi=snakemake.params.style["dpi"],
    title=f"Repeatability and reproducibility - {snakemake.wildcards.dataset}",
)
