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
                rows.append(
                    (
                        f"i{i}",
                        "m-r1",
                        method,
                        "cascading",
                        step,
                        block,
                        "ssim",
                        1.0 - drop * step + 0.01 * rng.standard_normal(),
                    )
                )
    return pd.DataFrame(rows, columns=["image_id", "model", "method", "mode", "step", "block", "metric", "value"])


def test_randomization_figure_has_a_line_and_a_threshold_per_method(tmp_path, captured):
    scores = _randomization(np.random.default_rng(0))
    thresholds = pd.DataFrame({"model": "m-r1", "method": METHODS, "n_pairs": 50, "threshold": [0.25, 0.3], "sd": 0.1})
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
        criteria.plot_randomization(
            empty, pd.DataFrame(columns=["model", "method", "threshold"]), METHODS, tmp_path / "x.png"
        )


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
    medians = [
        line.get_ydata()[0]
        for line in ax.get_lines()
        if line.get_color() == "black" and len(line.get_xdata()) == 2 and line.get_xdata()[0] != line.get_xdata()[1]
    ]
    assert any(abs(m - 0.62) < 1e-9 for m in medians)  # GCAM median of 0.60..0.64
    assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == 0.5 for line in ax.get_lines())


def test_utility_figure_ignores_randomized_models_maps(tmp_path):
    rng = np.random.default_rng(1)
    rows = [
        (f"i{i}", "m", g, "trained", "pr_auc", float(rng.random()))
        for i in range(8)
        for g in ("GRAD", "GCAM", "AVG", "UNET")
    ]
    trained = pd.DataFrame(rows, columns=["image_id", "model", "method", "weights", "metric", "value"])
    randomized = trained[trained.method.isin(METHODS)].assign(weights="randomized", value=0.99)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_utility(trained, "pr_auc", METHODS, a)
    plot_utility(pd.concat([trained, randomized]), "pr_auc", METHODS, b)
    assert a.read_bytes() == b.read_bytes()


# ---------------------------------------------------------------- example panels, training curves, files


def _write_store(path, ids, size=8):
    import json

    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        h5["image_id"] = np.array(ids, dtype="S")
        h5["image"] = rng.random((len(ids), size, size), dtype=np.float32)
        masks = np.zeros((len(ids), 2, size, size), np.uint8)
        for k in range(len(ids)):
            masks[k, 1, k % size, :] = 1  # label 'b' of image k: row k
        h5["mask"] = masks
        h5.attrs["label_names"] = json.dumps(["a", "b"])
    return path


def test_read_images_returns_the_requested_ids_in_order(tmp_path):
    import h5py

    from saliency_trust.data.canonical import read_images

    path = _write_store(tmp_path / "images.h5", ["x0", "x1", "x2", "x3"])
    images, masks = read_images(path, ["x3", "x0", "x2"], "b")
    with h5py.File(path) as h5:
        assert np.array_equal(images, h5["image"][:][[3, 0, 2]])
    assert [int(np.flatnonzero(m.any(axis=1))[0]) for m in masks] == [3, 0, 2]
    first, none = read_images(path, ["x1"], with_masks=False)
    assert none is None and first.shape == (1, 8, 8)
    assert not read_images(path, ["x1"])[1].any()  # label None: the first label 'a', empty here
    with pytest.raises(KeyError, match="nope"):
        read_images(path, ["nope"])
    with pytest.raises(KeyError, match="label 'c'"):
        read_images(path, ["x1"], "c")


def test_read_maps_of_selects_images_of_trained_and_randomized_caches(tmp_path):
    import h5py

    from saliency_trust.storage.maps import read_cached_ids, read_maps_of, write_maps

    ids = ["a", "b", "c"]
    maps = np.arange(3 * 4 * 4, dtype=np.float32).reshape(3, 4, 4)
    write_maps(tmp_path / "m.h5", ids, maps, maps[:, None], "GRAD", {}, "0" * 64, {"label": "x"})
    assert read_cached_ids(tmp_path / "m.h5") == ids
    assert np.array_equal(read_maps_of(tmp_path / "m.h5", ["c", "a"]), maps[[2, 0]])
    stepped = np.stack([np.stack([maps, maps + 100]), np.stack([maps + 200, maps + 300])])  # 2 draws x 2 steps
    with h5py.File(tmp_path / "r.h5", "w") as h5:  # the randomized layout: draw and step axes first, 'steps'
        h5.create_dataset("image_id", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        h5["map"] = stepped
        h5.attrs["steps"] = '["fc", "conv"]'
    got = read_maps_of(tmp_path / "r.h5", ["b", "a"])
    assert got.shape == (2, 2, 2, 4, 4) and np.array_equal(got, stepped[:, :, [1, 0]])
    with pytest.raises(KeyError, match="zz"):
        read_maps_of(tmp_path / "m.h5", ["zz"])


def test_choose_examples_is_seeded_and_order_free():
    from saliency_trust.plots.examples import choose_examples

    ids = [f"i{k}" for k in range(20)]
    first = choose_examples(ids, 3, seed=1, dataset="d")
    assert first == choose_examples(list(reversed(ids)), 3, seed=1, dataset="d") and len(set(first)) == 3
    assert first == sorted(first, key=ids.index)
    assert any(choose_examples(ids, 3, seed=s, dataset="d") != first for s in range(2, 6))
    with pytest.raises(ValueError, match="n_examples"):
        choose_examples(ids[:2], 3, seed=1, dataset="d")


def test_steps_to_show_keeps_the_last_step():
    from saliency_trust.plots.examples import steps_to_show

    assert steps_to_show(4, 6) == [0, 1, 2, 3]
    shown = steps_to_show(17, 6)
    assert len(shown) == 6 and shown[0] == 0 and shown[-1] == 16 and shown == sorted(set(shown))


def _capture(monkeypatch, module):
    figs = []
    real = module.save_figure

    def keep(fig, paths, dpi=150):
        fig.canvas.draw()
        figs.append(fig)
        real(fig, paths, dpi)

    monkeypatch.setattr(module, "save_figure", keep)
    return figs


def test_example_panel_has_a_map_per_model_and_method_with_scores(tmp_path, monkeypatch):
    from saliency_trust.plots import examples

    figs = _capture(monkeypatch, examples)
    rng = np.random.default_rng(0)
    maps = {(m, me): rng.random((8, 8)) for m in ("a-r1", "a-r2") for me in ("GRAD", "GCAM")}
    maps |= {("baselines", "AVG"): rng.random((8, 8)), ("baselines", "UNET-r1"): rng.random((8, 8))}
    utility = pd.DataFrame(
        {
            "image_id": "x",
            "model": ["a-r1", "baseline"],
            "method": ["GCAM", "UNET"],
            "weights": "trained",
            "metric": "pr_auc",
            "value": [0.42, 0.91],
        }
    )
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 1
    paths = [tmp_path / "e.png", tmp_path / "e.pdf"]
    examples.plot_example_panel(rng.random((8, 8)), mask, maps, "x", paths, utility=utility)
    assert all(p.stat().st_size > 0 for p in paths) and paths[1].read_bytes().startswith(b"%PDF")
    axes = figs[0].axes
    assert len(axes) == 3 * 3  # rows: two models + baselines; columns: image + two methods
    titles = [ax.get_title() for ax in axes]
    assert "GCAM\npr_auc 0.42" in titles and "UNET-r1\npr_auc 0.91" in titles and "GRAD" in titles
    assert sum(len(ax.images) for ax in axes) == 3 + 6  # the image in each row and six maps
    assert len(axes[0].collections) >= 1  # the ground-truth outline
    with pytest.raises(ValueError, match="plots.colormap"):
        examples.plot_example_panel(mask, mask, maps, "x", paths, colormap="no_such_map")


def test_randomization_panel_titles_steps_with_their_ssim(tmp_path, monkeypatch):
    from saliency_trust.plots import examples

    figs = _capture(monkeypatch, examples)
    rng = np.random.default_rng(1)
    steps = ["fc", "layer4", "layer3", "layer2", "layer1", "stem"]
    ssim = pd.DataFrame({"image_id": "x", "method": "GCAM", "step": range(1, 7), "value": np.linspace(0.9, 0.0, 6)})
    examples.plot_randomization_panel(
        rng.random((8, 8)),
        None,
        {"GCAM": rng.random((8, 8))},
        {"GCAM": rng.random((6, 8, 8))},
        steps,
        "x",
        tmp_path / "r.png",
        ssim=ssim,
        max_steps_shown=3,
    )
    titles = [ax.get_title() for ax in figs[0].axes]
    assert len(figs[0].axes) == 2 + 3 and titles[1] == "GCAM\ntrained"
    assert titles[2] == "+fc\nSSIM 0.90" and titles[-1] == "all random\nSSIM 0.00"


def test_training_curves_mark_the_kept_epoch(tmp_path, monkeypatch):
    from saliency_trust.plots import training

    figs = _capture(monkeypatch, training)
    h = pd.DataFrame(
        {"epoch": [1, 2, 3], "train_loss": [0.7, 0.5, 0.4], "val_loss": [0.7, 0.6, 0.65], "val_auc": [0.7, 0.85, 0.8]}
    )
    unet = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.8], "val_dice": [0.4, 0.6]})
    training.plot_training_curves({"m-r1": h}, tmp_path / "t.png", best_epochs={"m-r1": 2}, baselines={"unet-r1": unet})
    loss_ax, auc_ax, base_ax = figs[0].axes
    assert len(loss_ax.get_lines()) == 2 and loss_ax.get_yscale() == "log"
    star = [line for line in auc_ax.get_lines() if line.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_xdata()) == [2] and list(star[0].get_ydata()) == [0.85]
    assert list(base_ax.get_lines()[0].get_ydata()) == [0.4, 0.6]
    with pytest.raises(ValueError, match="no training history"):
        training.plot_training_curves({}, tmp_path / "t.png")


def test_saved_figures_are_identical_across_reruns(tmp_path):
    import matplotlib.pyplot as plt

    from saliency_trust.plots.style import save_figure

    def draw(stem):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        save_figure(fig, [tmp_path / f"{stem}.png", tmp_path / f"{stem}.pdf"], dpi=72)

    draw("a")
    draw("b")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
