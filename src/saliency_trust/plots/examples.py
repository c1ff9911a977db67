"""Example panels (docs/outputs.md; Arun et al., Figs. 1 and 3): one image's maps from every model and method, and
one image's maps degrading under cascading randomization."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from saliency_trust.io import stable_seed
from saliency_trust.plots.style import DPI, check_colormap, save_figure


def choose_examples(candidate_ids: list[str], n: int, seed: int, dataset: str) -> list[str]:
    """``n`` seeded example image ids among ``candidate_ids`` (sorted, so the choice does not depend on
    the order of the caches)."""
    pool = sorted(set(candidate_ids))
    if n > len(pool):
        raise ValueError(f"plots.n_examples = {n} but only {len(pool)} positive test images were explained")
    rng = np.random.default_rng(stable_seed(seed, "examples", dataset))
    return [pool[k] for k in sorted(rng.choice(len(pool), size=n, replace=False))]


def _show_image(ax, image: np.ndarray, mask: np.ndarray | None, title: str) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors="#00e5ff", linewidths=1.0)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def _show_map(ax, sal: np.ndarray, cmap: str, title: str) -> None:
    ax.imshow(sal, cmap=cmap, vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def _score_label(scores: pd.DataFrame | None, image_id: str, model: str, method: str, metric: str) -> str:
    """``metric value`` of one map from the utility table (trained weights), or '' when absent."""
    if scores is None or scores.empty:
        return ""
    hit = scores[
        (scores["image_id"] == image_id)
        & (scores["model"] == model)
        & (scores["method"] == method)
        & (scores["metric"] == metric)
        & (scores["weights"] != "randomized")
    ]
    return f"\n{metric} {hit['value'].iloc[0]:.2f}" if len(hit) else ""


BASELINES_ROW = "baselines"


def plot_example_panel(
    image: np.ndarray,
    mask: np.ndarray | None,
    maps: dict[tuple[str, str], np.ndarray],
    image_id: str,
    paths,
    utility: pd.DataFrame | None = None,
    metric: str = "pr_auc",
    colormap: str = "inferno",
    dpi: int = DPI,
    title: str = "",
) -> None:
    """One image with its ground-truth outline, then every method's map per model (rows = models, e.g.
    replicates and architectures; columns = methods), each titled with its utility score.

    ``maps`` maps (row, method) to an H x W map in [0, 1]. The row ``baselines`` holds baseline maps
    (AVG, UNET-r1, ...), drawn left to right, scored as the utility table's ``baseline`` rows.
    """
    check_colormap(colormap)
    rows = list(dict.fromkeys(r for r, _ in maps))
    methods = list(dict.fromkeys(m for r, m in maps if r != BASELINES_ROW))
    n_cols = max([len(methods)] + [sum(r == BASELINES_ROW for r, _ in maps)]) + 1
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.6 * n_cols, 1.75 * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        _show_image(axes[i][0], image, mask, f"{image_id}\n{row}" if i == 0 else row)
        if row == BASELINES_ROW:
            cells = [(m, "baseline", m.split("-r")[0]) for r, m in maps if r == row]
        else:
            cells = [(m, row, m) if (row, m) in maps else (None, None, None) for m in methods]
        for j in range(1, n_cols):
            method, score_model, score_method = cells[j - 1] if j - 1 < len(cells) else (None, None, None)
            if method is None:
                axes[i][j].set_axis_off()
                continue
            _show_map(
                axes[i][j],
                maps[(row, method)],
                colormap,
                method + _score_label(utility, image_id, score_model, score_method, metric),
            )
    fig.suptitle(title or f"Saliency maps of {image_id} (outline: ground truth)", fontsize=10)
    save_figure(fig, paths, dpi)


def steps_to_show(n_steps: int, max_shown: int) -> list[int]:
    """Indices (0-based) of at most ``max_shown`` randomization steps, evenly spread, always the last one."""
    if n_steps <= max_shown:
        return list(range(n_steps))
    return sorted({int(round(k)) for k in np.linspace(0, n_steps - 1, max_shown)})


def plot_randomization_panel(
    image: np.ndarray,
    mask: np.ndarray | None,
    trained: dict[str, np.ndarray],
    randomized: dict[str, np.ndarray],
    steps: list[str],
    image_id: str,
    paths,
    ssim: pd.DataFrame | None = None,
    max_steps_shown: int = 6,
    colormap: str = "inferno",
    dpi: int = DPI,
    title: str = "",
) -> None:
    """One image's maps as the model's blocks are re-initialized from the output (rows = methods; columns =
    image, trained map, then the steps), each step titled with its SSIM to the trained map (Fig. 3 panel).

    ``randomized[method]`` is S x H x W (one map per step, in ``steps`` order)."""
    check_colormap(colormap)
    methods = [m for m in trained if m in randomized]
    shown = steps_to_show(len(steps), max_steps_shown)
    fig, axes = plt.subplots(
        len(methods), len(shown) + 2, figsize=(1.6 * (len(shown) + 2), 1.75 * len(methods)), squeeze=False
    )
    for i, method in enumerate(methods):
        _show_image(axes[i][0], image, mask, image_id if i == 0 else "")
        _show_map(axes[i][1], trained[method], colormap, f"{method}\ntrained")
        for j, s in enumerate(shown, start=2):
            label = f"+{steps[s].split('.')[-1]}" if s < len(steps) - 1 else "all random"
            if ssim is not None:
                hit = ssim[(ssim["method"] == method) & (ssim["step"] == s + 1) & (ssim["image_id"] == image_id)]
                if len(hit):
                    label += f"\nSSIM {hit['value'].iloc[0]:.2f}"
            _show_map(axes[i][j], randomized[method][s], colormap, label)
    fig.suptitle(title or f"Cascading randomization of {image_id} (blocks re-initialized from the output)", fontsize=10)
    save_figure(fig, paths, dpi)


def run_example_panels(
    images_path: str,
    maps: dict[tuple[str, str], str],
    paths: list[list[str]],
    label: str | None,
    seed: int,
    dataset: str,
    utility_path: str | None = None,
    metric: str = "pr_auc",
    colormap: str = "inferno",
    dpi: int = DPI,
    has_masks: bool = True,
) -> None:
    """Stage entry: ``len(paths)`` example panels of seeded positive test images explained by every model.

    ``maps`` maps (row, method) to a cache file; ``paths[k]`` are the files (png, pdf) of example ``k``."""
    from saliency_trust.data.canonical import read_images
    from saliency_trust.storage.maps import read_cached_ids, read_maps_of

    common = None
    for path in maps.values():
        ids = set(read_cached_ids(path))
        common = ids if common is None else common & ids
    chosen = choose_examples(sorted(common or []), len(paths), seed, dataset)
    images, masks = read_images(images_path, chosen, label, with_masks=has_masks)
    loaded = {key: read_maps_of(path, chosen) for key, path in maps.items()}
    utility = pd.read_csv(utility_path, dtype={"image_id": str}) if utility_path else None
    for k, (image_id, out) in enumerate(zip(chosen, paths)):
        plot_example_panel(
            images[k],
            masks[k] if has_masks else None,
            {key: m[k] for key, m in loaded.items()},
            image_id,
            out,
            utility=utility,
            metric=metric,
            colormap=colormap,
            dpi=dpi,
        )


def run_randomization_panel(
    images_path: str,
    trained: dict[str, str],
    randomized: dict[str, str],
    paths: list[str],
    label: str | None,
    seed: int,
    dataset: str,
    scores_path: str | None = None,
    model: str = "",
    max_steps_shown: int = 6,
    colormap: str = "inferno",
    dpi: int = DPI,
    has_masks: bool = True,
) -> None:
    """Stage entry: the degradation panel of one seeded image of the randomized model's explained subset."""
    from saliency_trust.data.canonical import read_images
    from saliency_trust.storage.maps import read_cached_ids, read_maps_of, read_steps

    first = next(iter(randomized.values()))
    (image_id,) = choose_examples(read_cached_ids(first), 1, seed, f"{dataset}:randomization")
    steps = read_steps(first)
    images, masks = read_images(images_path, [image_id], label, with_masks=has_masks)
    trained_maps = {m: read_maps_of(p, [image_id])[0] for m, p in trained.items()}
    random_maps = {m: read_maps_of(p, [image_id])[0, :, 0] for m, p in randomized.items()}  # the first draw
    scores = None
    if scores_path:
        scores = pd.read_csv(scores_path, dtype={"image_id": str})
        scores = scores[
            (scores["model"] == model)
            & (scores["mode"] == "cascading")
            & (scores["metric"] == "ssim")
            & (scores["draw"] == 1 if "draw" in scores else True)
        ]
    plot_randomization_panel(
        images[0],
        masks[0] if has_masks else None,
        trained_maps,
        random_maps,
        steps,
        image_id,
        paths,
        ssim=scores,
        max_steps_shown=max_steps_shown,
        colormap=colormap,
        dpi=dpi,
        title=f"Cascading randomization of {model}: {image_id} (blocks re-initialized from the output)",
    )
