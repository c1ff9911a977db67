"""Snakemake entry: rule plot_training_curves."""

import json

import pandas as pd

from saliency_trust.config import setup_logging
from saliency_trust.plots.training import plot_training_curves

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
plot_training_curves(
    {m: pd.read_csv(p) for m, p in zip(snakemake.params.models, snakemake.input.histories)},
    paths=[snakemake.output.png, snakemake.output.pdf],
    best_epochs={m: json.load(open(p))["best_epoch"] for m, p in zip(snakemake.params.models, snakemake.input.metrics)},
    baselines={b: pd.read_csv(p) for b, p in zip(snakemake.params.baselines, snakemake.input.baselines)},
    dpi=snakemake.params.style["dpi"],
    title=f"Training curves - {snakemake.wildcards.dataset}",
)
