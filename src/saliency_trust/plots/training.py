"""Training curves of the classifiers and the high baseline (docs/outputs.md): loss and validation score per epoch."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from saliency_trust.plots.style import DPI, save_figure


def plot_training_curves(
    histories: dict[str, pd.DataFrame],
    paths,
    best_epochs: dict[str, int] | None = None,
    baselines: dict[str, pd.DataFrame] | None = None,
    dpi: int = DPI,
    title: str = "",
) -> None:
    """Per-epoch train (solid) and validation (dashed) loss, and validation AUC with the kept epoch marked,
    one colour per model; a third panel shows the baselines' validation score (U-Net Dice, detector AP)."""
    if not histories:
        raise ValueError("no training history to plot")
    baselines = {k: v for k, v in (baselines or {}).items() if len(v)}
    n_panels = 3 if baselines else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(4.6 * n_panels, 3.6), squeeze=False)
    loss_ax, auc_ax = axes[0][0], axes[0][1]
    palette = plt.get_cmap("tab10")
    for k, (model, h) in enumerate(histories.items()):
        c = palette(k % 10)
        loss_ax.plot(h["epoch"], h["train_loss"], color=c, label=f"{model} train")
        if "val_loss" in h:
            loss_ax.plot(h["epoch"], h["val_loss"], color=c, ls="--", label=f"{model} val")
        auc_ax.plot(h["epoch"], h["val_auc"], color=c, marker="o", ms=3, label=model)
        best = (best_epochs or {}).get(model)
        if best is not None and (h["epoch"] == best).any():
            auc_ax.plot([best], h.loc[h["epoch"] == best, "val_auc"], marker="*", ms=12, color=c, mec="black")
    loss_ax.set(xlabel="epoch", ylabel="loss (BCE, log scale)", title="Loss", yscale="log")
    auc_ax.set(xlabel="epoch", ylabel="validation AUC", title="Validation AUC (star: kept epoch)")
    loss_ax.legend(fontsize=7, frameon=False)
    auc_ax.legend(fontsize=7, frameon=False)
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    if baselines:
        ax = axes[0][2]
        for k, (name, h) in enumerate(baselines.items()):
            score = next((c for c in h.columns if c.startswith("val_")), None)
            if score is None:
                raise ValueError(f"baseline history {name} has no validation column (val_*)")
            ax.plot(
                h["epoch"],
                h[score],
                color=palette((len(histories) + k) % 10),
                marker="o",
                ms=3,
                label=f"{name} ({score})",
            )
        ax.set(xlabel="epoch", ylabel="validation score", title="High baseline")
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(title or "Training curves")
    save_figure(fig, paths, dpi)
