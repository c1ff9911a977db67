"""Bootstrap box plot of quality control (Shu et al., INFORMER, Fig. 3; docs/quality-control.md)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from saliency_trust.plots.style import DPI, save_figure

INFORMER_COLOR, BASELINE_COLOR, NO_QC_COLOR = "#4a90d9", "#b0b0b0", "#ffffff"


def plot_bootstrap_f1(
    bootstrap: pd.DataFrame,
    comparisons: pd.DataFrame,
    paths,
    dpi: int = DPI,
    title: str = "Quality control on bootstrap resamples",
    star_baseline: str = "Pred. Entropy",
) -> None:
    """One box per method of the mean F1 over classes on each resample (rows ``label == 'mean'``): INFORMER
    variants blue, baselines grey, no QC white with a dashed median; each INFORMER box carries the stars of its
    paired t-test against ``star_baseline`` (the paper's)."""
    mean = bootstrap[bootstrap["label"] == "mean"]
    methods = list(dict.fromkeys(mean["method"]))
    if not methods:
        raise ValueError("the bootstrap table has no mean-F1 rows")
    data = [mean.loc[mean["method"] == m, "f1"].to_numpy() for m in methods]
    fig, ax = plt.subplots(figsize=(1.4 * len(methods) + 1.5, 4.2))
    boxes = ax.boxplot(data, patch_artist=True, widths=0.6)
    for patch, median, m in zip(boxes["boxes"], boxes["medians"], methods):
        informer = m.startswith("INFORMER")
        patch.set_facecolor(INFORMER_COLOR if informer else NO_QC_COLOR if m == "No QC" else BASELINE_COLOR)
        median.set_color("black")
        if m == "No QC":
            median.set_linestyle("--")
    ax.set_xticks(np.arange(1, len(methods) + 1), methods, rotation=20, ha="right")
    top = max(float(np.max(d)) for d in data if len(d))
    span = max(top - min(float(np.min(d)) for d in data if len(d)), 1e-3)
    for k, m in enumerate(methods, start=1):
        row = comparisons[(comparisons["method"] == m) & (comparisons["baseline"] == star_baseline)]
        if len(row) and isinstance(row["stars"].iloc[0], str) and row["stars"].iloc[0]:
            ax.text(k, top + 0.04 * span, row["stars"].iloc[0], ha="center", va="bottom")
    ax.set_ylim(top=top + 0.15 * span)
    n = mean.groupby("method").size().max()
    ax.set_ylabel(f"mean F1 over classes ({n} bootstrap resamples)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, paths, dpi)
