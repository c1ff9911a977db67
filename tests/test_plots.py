"""Figures: the right content goes into each panel (Arun et al., Figs. 2-4)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from saliency_trust.plots import criteria
from saliency_trust.plots.utility import plot_utility

matplotlib.use("Agg")
METHODS = ["GRAD", "GCAM"]


@pytest.fixture
def captured(monkeypatch):
    """Keep the figure a plot function would save, and still write the file."""
    figs = []
    real_save = criteria.save_figure

    def keep(fig, paths, dpi=150):
        figs.append(fig)
        fig.canvas.draw()
        real_save(fig, paths, dpi)

    monkeypatch.setattr(criteria, "save_figure", keep)
    return figs


def _randomization(rng):
    rows = []
    for step, block in enumerate(["fc", "block2", "block1"], start=1):
        for method, drop in (("GRAD", 0.3), ("GCAM", 0.2)):
            for i in range(6):
                rows.append((f"i{i}", "m-r1", method, "cascading", step, block, "ssim",
                             1.0 - drop * step + 0.01 * rng.standard_normal()))
    return pd.DataFrame(rows, columns=["image_id", "model", "method", "mode", "step", "block", "metric", "value"])


def test_randomization_figure_has_a_line_and_a_threshold_per_method(tmp_path, captured):
    scores = _randomization(np.random.default_rng(0))
    thresholds = pd.DataFrame({"model": "m-r1", "method": METHODS, "n_pairs": 50, "threshold": [0.25, 0.3],
                               "sd": 0.1})
    out = tmp_path / "rand.png"
    criteria.plot_randomization(scores, thresholds, METHODS, out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    ax = captured[0].axes[0]
    dashed = sorted(round(float(line.get_ydata()[0]), 3) for line in ax.get_lines() if line.get_linestyle() == "--")
    assert dashed == [0.25, 0.3]
    means = {t.get_label(): t for t in ax.containers}
    assert set(means) == set(METHODS)
    grad_y = means["GRAD"].lines[0].get_ydata()
    expected = scores[scores.method == "GRAD"].groupby("step")["value"].mean().to_numpy()
    np.testing.assert_allclose(grad_y, expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fc", "block2", "block1"]


def test_randomization_figure_without_scores_raises(tmp_path):
    empty = _randomization(np.random.default_rng(0)).iloc[:0]
    with pytest.raises(ValueError, match="no cascading"):
        criteria.plot_randomization(empty, pd.DataFrame(columns=["model", "method", "threshold"]), METHODS,
                                    tmp_path / "x.png")


def test_similarity_figure_boxes_per_method_and_high_baseline(tmp_path, captured):
    rows = []
    for crit in ("repeatability", "reproducibility"):
        for method, level in (("GRAD", 0.2), ("GCAM", 0.6), ("UNET", 0.8)):
            for i in range(5):
                rows.append((f"i{i}", crit, "a", "b", method, "ssim", level + 0.01 * i))
                rows.append((f"i{i}", crit, "a", "b", method, "iou", 0.0))
    sim = pd.DataFrame(rows, columns=["image_id", "criterion", "model_a", "model_b", "method", "metric", "value"])
    criteria.plot_similarity(sim, METHODS, tmp_path / "sim.png")
    fig = captured[0]
    assert [ax.get_title() for ax in fig.axes] == ["Repeatability", "Reproducibility"]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["GRAD", "GCAM", "UNET"]
    medians = [line.get_ydata()[0] for line in ax.get_lines() if line.get_color() == "black"
               and len(line.get_xdata()) == 2 and line.get_xdata()[0] != line.get_xdata()[1]]
    assert any(abs(m - 0.62) < 1e-9 for m in medians)  # GCAM median of 0.60..0.64
    assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == 0.5 for line in ax.get_lines())


def test_utility_figure_ignores_randomized_models_maps(tmp_path):
    rng = np.random.default_rng(1)
    rows = [(f"i{i}", "m", g, "trained", "pr_auc", float(rng.random())) for i in range(8)
            for g in ("GRAD", "GCAM", "AVG", "UNET")]
    trained = pd.DataFrame(rows, columns=["image_id", "model", "method", "weights", "metric", "value"])
    randomized = trained[trained.method.isin(METHODS)].assign(weights="randomized", value=0.99)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_utility(trained, "pr_auc", METHODS, a)
    plot_utility(pd.concat([trained, randomized]), "pr_auc", METHODS, b)
    assert a.read_bytes() == b.read_bytes()
