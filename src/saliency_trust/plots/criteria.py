"""Figures of the randomization and similarity criteria (Arun et al., Figs. 3 and 4)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from saliency_trust.plots.style import DPI, color, save_figure


def plot_randomization(
    scores: pd.DataFrame,
    thresholds: pd.DataFrame,
    methods: list[str],
    paths,
    mode: str = "cascading",
    title: str = "",
    dpi: int = DPI,
) -> None:
    """Mean SSIM to the trained map (95 % CI) at each randomization step, one line per method, with each
    method's degradation threshold dashed in its colour (Fig. 3). One panel per randomized model."""
    sel = scores[(scores["mode"] == mode) & (scores["metric"] == "ssim")]
    if sel.empty:
        raise ValueError(f"no {mode} randomization scores to plot")
    models = list(dict.fromkeys(sel["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        m = sel[sel["model"] == model]
        steps = m[["step", "block"]].drop_duplicates().sort_values("step")
        for method in methods:
            # re-initialization draws averaged per image first: the image is the unit of the interval
            g = m[m["method"] == method].groupby(["step", "image_id"])["value"].mean().groupby(level="step")
            if not len(g):
                continue
            mean, sem = g.mean(), g.sem().fillna(0.0)
            ax.errorbar(
                mean.index,
                mean.to_numpy(),
                yerr=1.96 * sem.to_numpy(),
                color=color(method),
                marker="o",
                ms=3,
                lw=1.5,
                capsize=2,
                label=method,
            )
            thr = thresholds[(thresholds["model"] == model) & (thresholds["method"] == method)]["threshold"]
            if len(thr):
                ax.axhline(float(thr.iloc[0]), color=color(method), ls="--", lw=0.8, alpha=0.8)
        ax.set_xticks(steps["step"], [b.split(".")[-1] for b in steps["block"]], rotation=45, ha="right")
        ax.set_xlabel(f"{mode} randomization: block re-initialized (output first)")
        ax.set_ylabel("SSIM to the trained map")
        ax.set_ylim(-0.05, 1.0)
        ax.set_title(f"{model}")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(loc="upper right", frameon=False, fontsize=8, ncol=2)
    fig.suptitle(title or "Sensitivity to trained weights (dashed: degradation thresholds)")
    save_figure(fig, paths, dpi)


def plot_similarity(
    similarity: pd.DataFrame,
    methods: list[str],
    paths,
    metric: str = "ssim",
    low: float = 0.5,
    title: str = "",
    dpi: int = DPI,
) -> None:
    """Box plots of per-image SSIM per method for repeatability and reproducibility, with the high baseline
    pair and the LOW baseline (0.5) dashed (Fig. 4)."""
    sel = similarity[similarity["metric"] == metric]
    criteria = [c for c in ("repeatability", "reproducibility") if (sel["criterion"] == c).any()]
    if not criteria:
        raise ValueError("no repeatability or reproducibility scores to plot")
    fig, axes = plt.subplots(1, len(criteria), figsize=(6.5 * len(criteria), 4.2), squeeze=False)
    for ax, criterion in zip(axes[0], criteria):
        c = sel[sel["criterion"] == criterion]
        groups = [m for m in methods if (c["method"] == m).any()]
        groups += [b for b in ("UNET", "DETECTOR") if (c["method"] == b).any()]
        data = [c.loc[c["method"] == g, "value"].to_numpy() for g in groups]
        box = ax.boxplot(
            data,
            patch_artist=True,
            showmeans=True,
            widths=0.6,
            meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black"},
            medianprops={"color": "black"},
        )
        for patch, g in zip(box["boxes"], groups):
            patch.set_facecolor(color(g))
            patch.set_alpha(0.8)
        ax.set_xticks(np.arange(1, len(groups) + 1), groups, rotation=45, ha="right")
        ax.axhline(low, ls="--", color="#7f7f7f", lw=1, label=f"LOW ({low})")
        ax.set_ylim(-0.05, 1.0)
        ax.set_ylabel(metric.upper() if metric == "ssim" else metric)
        ax.set_title(criterion.capitalize())
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper right", frameon=False)
    fig.suptitle(title or "Repeatability and reproducibility of the maps")
    save_figure(fig, paths, dpi)
