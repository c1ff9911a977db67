"""Utility box plots per method with both baselines (Arun et al., Fig. 2)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from saliency_trust.plots.style import DPI, color, save_figure

METRIC_LABELS = {
    "pr_auc": "AUPRC (trapezoidal)",
    "ap": "Average precision",
    "iou": "IoU (Otsu)",
    "dice": "Dice (Otsu)",
    "iou_box": "IoU (Otsu boxes)",
    "dice_box": "Dice (Otsu boxes)",
    "topk": "Top-k overlap",
}
BASELINE_GROUPS = ("AVG", "UNET", "DETECTOR", "RATER")


def plot_utility(
    utility: pd.DataFrame, metric: str, methods: list[str], paths, title: str = "", dpi: int = DPI
) -> None:
    """Box plot (median line, mean marker) of per-image utility of trained maps for each method and baseline."""
    sel = utility[utility["metric"] == metric]
    if "weights" in sel:  # the randomized models' maps are not part of this figure
        sel = sel[sel["weights"] != "randomized"]
    groups = [m for m in methods if (sel["method"] == m).any()]
    groups += [b for b in BASELINE_GROUPS if (sel["method"] == b).any()]
    data = [sel.loc[sel["method"] == g, "value"].to_numpy() for g in groups]
    fig, ax = plt.subplots(figsize=(1.1 * len(groups) + 2, 4))
    box = ax.boxplot(
        data,
        patch_artist=True,
        showmeans=True,
        widths=0.6,
        meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black"},
        medianprops={"color": "black"},
    )
    ax.set_xticks(range(1, len(groups) + 1), groups)
    for patch, g in zip(box["boxes"], groups):
        patch.set_facecolor(color(g))
        patch.set_alpha(0.8)
    avg = sel.loc[sel["method"] == "AVG", "value"]
    if len(avg):
        ax.axhline(avg.mean(), ls="--", color=color("AVG"), lw=1, label="AVG mean")
        ax.legend(loc="best", frameon=False)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_ylim(0, 1)
    ax.set_title(title or "Localization utility (positive test images)")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, paths, dpi)
