"""Shared figure style: one fixed colour per method and baseline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import logging  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402

from saliency_trust.io import atomic_path  # noqa: E402

log = logging.getLogger(__name__)

DPI = 150
# No creation date in the files, so that reruns give identical figures.
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}}

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
    "EDGE": "#525252",
    "AVG": "#7f7f7f",
    "UNET": "#17becf",
    "DETECTOR": "#17becf",
    "RATER": "#dbdb8d",
}


def color(group: str) -> str:
    return METHOD_COLORS.get(group, "#333333")


def save_figure(fig, paths: str | Path | Sequence[str | Path], dpi: int = DPI) -> None:
    """Write ``fig`` to every path (the format from each suffix: png, pdf, svg) atomically, then close it."""
    fig.tight_layout()
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower() or "png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=_METADATA.get(fmt))
        log.info("wrote %s", path)
    plt.close(fig)


def check_colormap(name: str) -> str:
    """The colormap name, or a ValueError naming the config key and a few valid names."""
    if name not in matplotlib.colormaps:
        raise ValueError(
            f"plots.colormap: unknown matplotlib colormap '{name}' (for example inferno, viridis, magma, jet, gray)"
        )
    return name
