"""Shared figure style: one fixed colour per method and baseline."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

METHOD_COLORS = {
    "GRAD": "#1f77b4",
    "SG": "#aec7e8",
    "IG": "#ff7f0e",
    "SIG": "#ffbb78",
    "GCAM": "#2ca02c",
    "XRAI": "#d62728",
    "GBP": "#9467bd",
    "GGCAM": "#8c564b",
    "IXG": "#e377c2",
    "LRP": "#bcbd22",
    "AVG": "#7f7f7f",
    "UNET": "#17becf",
    "DETECTOR": "#17becf",
    "RATER": "#dbdb8d",
}


def color(group: str) -> str:
    return METHOD_COLORS.get(group, "#333333")
