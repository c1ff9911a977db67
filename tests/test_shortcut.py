"""Shortcut check (metrics/shortcut.py) on hand-computed cases, and the generator's marker override
(known-answer validation of the criteria of Arun et al.; Adebayo et al. 2018)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from saliency_trust.data.synthetic import ShortcutSpec, SyntheticSpec, generate_dataset, generate_image
from saliency_trust.metrics.shortcut import (
    FLAG_CLEAR,
    FLAG_RAISED,
    MASS_COLUMNS,
    SCORE_COLUMNS,
    SUMMARY_COLUMNS,
    Confounder,
    auc,
    auc_table,
    bootstrap_drop,
    confounder_of,
    fixed_regions,
    flag_line,
    marker_flags,
    mass_shares,
    mass_summary,
    mass_table,
    rank_auc,
    region_masks,
    relies_on_shortcut,
    shortcut_markdown,
    shortcut_summary,
    strata_auc_table,
    stratified_auc,
    stratified_utility,
    synthetic_counterfactuals,
)

SHORTCUT = SyntheticSpec(image_size=32, shortcut=ShortcutSpec(enabled=True, p_positive=0.7, p_negative=0.3))
# sha256 of the images of generate_dataset(SHORTCUT with n_images=24, seed 5), recorded before the marker override
SNAPSHOT_IMAGES_SHA = "48bc73d3d0e943d94f8937326f5ce73d07e1dd04438917c10ce526a9593decdb"


# ---------------------------------------------------------------- generator: marker override


def test_images_without_the_override_are_unchanged():
    """Without ``marker`` every image is the one generated before the override existed (snapshot), and an
    override equal to the drawn marker changes nothing."""
    spec = SyntheticSpec(
        n_images=24, image_size=32, shortcut=ShortcutSpec(enabled=True, p_positive=0.7, p_negative=0.3)
    )
    _, images, _, _ = generate_dataset(spec, 5)
    assert hashlib.sha256(images.tobytes()).hexdigest() == SNAPSHOT_IMAGES_SHA
    for i in range(24):
        drawn = generate_image(spec, 5, i)
        same = generate_image(spec, 5, i, marker=drawn.shortcut_marker)
        assert np.array_equal(drawn.image, same.image) and same.marker_box == drawn.marker_box
        assert (drawn.marker_box is not None) == drawn.shortcut_marker


@pytest.mark.parametrize("enabled", [True, False])
def test_forced_marker_changes_only_its_box(enabled):
    spec = SyntheticSpec(image_size=48, shortcut=ShortcutSpec(enabled=enabled))
    for i in range(12):
        off, on = generate_image(spec, 3, i, marker=False), generate_image(spec, 3, i, marker=True)
        assert not off.shortcut_marker and off.marker_box is None and on.shortcut_marker
        x, y, w, h = on.marker_box
        changed = on.image != off.image
        assert changed[y : y + h, x : x + w].any() and not changed.sum() - changed[y : y + h, x : x + w].sum()
        assert np.array_equal(on.masks, off.masks) and on.boxes == off.boxes and np.array_equal(on.labels, off.labels)
        if not enabled:  # the shortcut disabled: no marker drawn, so forcing it off is the image itself
            assert np.array_equal(off.image, generate_image(spec, 3, i).image)


def test_counterfactuals_of_stored_images_and_a_mismatch_named():
    spec = SyntheticSpec(
        n_images=10, image_size=32, shortcut=ShortcutSpec(enabled=True, p_positive=0.5, p_negative=0.5)
    )
    manifest, images, _, _ = generate_dataset(spec, 2)
    ids, flags = manifest["image_id"].tolist(), manifest["shortcut_marker"].to_numpy()
    removed, added, boxes = synthetic_counterfactuals(spec, 2, ids, images, flags, "images.h5")
    for k in range(10):
        assert np.array_equal(images[k], added[k] if flags[k] else removed[k])
        assert boxes[k] == generate_image(spec, 2, k, marker=True).marker_box
    images[3, 10, 10] += 0.5
    with pytest.raises(ValueError, match="images.h5: image 'syn000003' differs from the synthetic generator"):
        synthetic_counterfactuals(spec, 2, ids, images, flags, "images.h5")
    with pytest.raises(ValueError, match="image 'case7' is not a synthetic benchmark id"):
        synthetic_counterfactuals(spec, 2, ["case7"], images[:1], flags[:1], "images.h5")


# ---------------------------------------------------------------- configuration and regions


def test_confounder_of_the_config():
    assert confounder_of("d", {"source": "synthetic", "synthetic": {"shortcut": {"enabled": False}}}) is None
    planted = confounder_of(
        "d", {"source": "synthetic", "synthetic": {"image_size": 32, "shortcut": {"enabled": True}}}
    )
    assert planted.synthetic and planted.column == "shortcut_marker" and planted.key == "datasets.d.synthetic.shortcut"
    user = confounder_of("u", {"source": "generic", "confounder": {"column": "pen", "region": [0, 1, 5, 6]}})
    assert not user.synthetic and user.region == (0, 1, 5, 6) and user.key == "datasets.u.confounder"
    assert confounder_of("u", {"source": "generic"}) is None


def test_generic_adapter_copies_the_confounder_column():
    from saliency_trust.data.adapters import adapter_options

    opts = adapter_options(
        "u",
        {
            "source": "generic",
            "generic": {"labels": ["y"], "extra_columns": ["age"]},
            "confounder": {"column": "pen", "region": [0, 0, 4, 4]},
        },
    )
    assert opts.extra_columns == ("age", "pen")


def test_marker_flags_and_fixed_regions_refuse_bad_input():
    manifest = pd.DataFrame({"image_id": ["a", "b", "c"], "pen": [1, 0, 1]})
    user = Confounder("pen", "datasets.u.confounder", region=(2, 1, 3, 2))
    flags = marker_flags(manifest, user, "manifest.csv")
    assert flags.to_dict() == {"a": 1, "b": 0, "c": 1}
    regions = fixed_regions(["a", "b"], flags, user.region, (8, 8), user.key)
    assert regions.to_dict("records")[1] == {"image_id": "b", "marker": 0, "x": 2, "y": 1, "width": 3, "height": 2}
    masks = region_masks(regions, ["b"], (8, 8))
    assert masks.sum() == 6 and masks[0, 1:3, 2:5].all()
    with pytest.raises(ValueError, match=r"manifest.csv: image 'b' has pen = 'maybe'; datasets.u.confounder"):
        marker_flags(manifest.assign(pen=["1", "maybe", "0"]), user, "manifest.csv")
    with pytest.raises(ValueError, match=r"manifest.csv: no column 'ink' \(datasets.u.confounder.column\)"):
        marker_flags(manifest, Confounder("ink", "datasets.u.confounder", region=(0, 0, 1, 1)), "manifest.csv")
    with pytest.raises(ValueError, match=r"datasets.u.confounder.region = \[6, 0, 3, 2\]: must be"):
        fixed_regions(["a"], flags, (6, 0, 3, 2), (8, 8), user.key)


# ---------------------------------------------------------------- (a) mass shares


def test_mass_shares_on_a_hand_built_map():
    """4 x 4 map: mass 8 in total, 6 of it in the top-left 2 x 2 (a quarter of the image): share 0.75,
    enrichment 3; the lesion (bottom-right pixel) holds 1: share 1/8, enrichment 2. A zero map is uniform."""
    m = np.zeros((2, 4, 4))
    m[0, :2, :2] = 1.5
    m[0, 3, 3] = 1.0
    m[0, 0, 3] = 1.0
    marker = np.zeros((2, 4, 4), bool)
    marker[:, :2, :2] = True
    lesion = np.zeros((2, 4, 4), bool)
    lesion[:, 3, 3] = True
    share, enrichment = mass_shares(m, marker)
    np.testing.assert_allclose(share, [0.75, 0.25])
    np.testing.assert_allclose(enrichment, [3.0, 1.0])
    share, enrichment = mass_shares(m, lesion)
    np.testing.assert_allclose(share, [0.125, 1 / 16])
    np.testing.assert_allclose(enrichment, [2.0, 1.0])
    table = mass_table(m.astype(np.float32), ["a", "b"], marker, lesion, np.array([1, 0]), "cnn-r1", "GRAD")
    assert list(table.columns) == MASS_COLUMNS and len(table) == 8
    wide = table.pivot(index="image_id", columns="metric", values="value")
    np.testing.assert_allclose(wide.loc["a"].to_numpy(), [2.0, 3.0, 0.125, 0.75])  # alphabetical metrics
    with pytest.raises(ValueError, match="non-negative"):
        mass_shares(-m, marker)


def test_mass_summary_points_at_the_marker_only_where_the_mass_per_pixel_is_higher():
    marker = np.zeros((3, 4, 4), bool)
    marker[:, 0, 0] = True
    lesion = np.zeros((3, 4, 4), bool)
    lesion[:, 2:, 2:] = True
    on_marker = np.full((3, 4, 4), 0.1)
    on_marker[:, 0, 0] = 1.0  # marker pixel 10x the rest
    on_lesion = np.full((3, 4, 4), 0.1)
    on_lesion[:, 2:, 2:] = 1.0
    flags = np.array([1, 1, 0])
    mass = pd.concat(
        [
            mass_table(on_marker, ["a", "b", "c"], marker, lesion, flags, "m-r1", "GRAD"),
            mass_table(on_lesion, ["a", "b", "c"], marker, lesion, flags, "m-r1", "EDGE"),
        ]
    )
    summary = mass_summary(mass, controls=["EDGE"])
    assert list(summary.columns) == SUMMARY_COLUMNS

    def get(method, metric, model="m-r1", condition="marker"):
        sel = summary[
            (summary.method == method)
            & (summary.metric == metric)
            & (summary.model == model)
            & (summary.condition == condition)
        ]
        return float(sel.value.iloc[0]), int(sel.n.iloc[0])

    # GRAD: total mass 15 * 0.1 + 1 = 2.5, marker share 0.4 over 1/16 of the image: enrichment 6.4
    assert get("GRAD", "enrichment_marker") == (pytest.approx(6.4), 2)
    assert get("GRAD", "points_at_marker")[0] == 1 and get("GRAD", "images_more_on_marker")[0] == 1
    assert get("EDGE", "points_at_marker")[0] == 0 and get("EDGE", "points_at_marker", model="all")[0] == 0
    assert get("GRAD", "mass_marker", condition="no_marker") == (pytest.approx(0.4), 1)
    assert summary[summary.method == "EDGE"].control.all() and not summary[summary.method == "GRAD"].control.any()


# ---------------------------------------------------------------- (b) utility by marker stratum


def test_stratified_utility_means_by_hand():
    utility = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "a", "b", "c"],
            "model": ["m-r1"] * 3 + ["baseline"] * 3,
            "method": ["GRAD"] * 3 + ["AVG"] * 3,
            "weights": "trained",
            "metric": "pr_auc",
            "value": [0.2, 0.4, 0.9, 0.1, 0.1, 0.3],
        }
    )
    markers = pd.Series([1, 1, 0], index=["a", "b", "c"])
    out = stratified_utility(utility, markers, controls=[])
    assert list(out.columns) == SUMMARY_COLUMNS and set(out.analysis) == {"utility"}
    got = {(r.model, r.condition): (r.n, r.value) for r in out.itertuples()}
    assert got[("m-r1", "marker")] == (2, pytest.approx(0.3)) and got[("m-r1", "no_marker")] == (1, pytest.approx(0.9))
    assert got[("baseline", "marker")] == (2, pytest.approx(0.1)) and got[("baseline", "no_marker")][1] == 0.3
    with pytest.raises(KeyError, match="utility table image 'c' has no marker flag"):
        stratified_utility(utility, markers.drop("c"), controls=[])


# ---------------------------------------------------------------- (c) AUC, bootstrap and the flag


def test_auc_functions_equal_sklearn_ties_included():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        s = rng.integers(0, 5, 40) / 4  # many ties
        if 0 < y.sum() < 40:
            assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            assert rank_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(auc(np.ones(4), np.arange(4))) and np.isnan(rank_auc(np.zeros(4), np.arange(4)))
    # strata: within A perfect (AUC 1, 4 images), within B reversed (AUC 0, 2 images): (4 * 1 + 2 * 0) / 6
    y = np.array([0, 0, 1, 1, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.8, 0.9, 0.9, 0.1, 0.5])
    strata = np.array([0, 0, 0, 0, 1, 1, 2])  # stratum 2 has one class only: left out
    assert stratified_auc(y, s, strata) == pytest.approx(4 / 6)
    assert stratified_auc(y, s, strata, rank_auc) == pytest.approx(4 / 6)


def test_bootstrap_is_seeded_and_stratified_by_label():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(30), np.zeros(30)].astype(int)
    a, b = rng.random(60) + y, rng.random(60)
    drop = lambda i: rank_auc(y[i], a[i]) - rank_auc(y[i], b[i])  # noqa: E731
    first = bootstrap_drop(y, drop, 300, seed=4, alpha=0.05)
    assert first == bootstrap_drop(y, drop, 300, seed=4, alpha=0.05) and first[3] == 300
    assert first[1] <= first[0] <= first[2] and first[1] > 0
    with pytest.raises(ValueError, match="positive and negative"):
        bootstrap_drop(np.ones(5, int), drop, 10, 0, 0.05)
    assert relies_on_shortcut(0.2, 0.01, 0.05) and not relies_on_shortcut(0.04, 0.01, 0.05)
    assert not relies_on_shortcut(0.2, -0.01, 0.05) and not relies_on_shortcut(float("nan"), 0.1, 0.05)


def _planted_scores(n: int, shortcut: bool, seed: int) -> pd.DataFrame:
    """Synthetic scores of one model: with the shortcut, the score reads the marker (which follows the label 90/10)
    and barely the lesion; without, it reads the lesion only and ignores the marker."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    marker = np.where(y > 0, rng.random(n) < 0.9, rng.random(n) < 0.1).astype(int)
    lesion = 0.6 * y + rng.normal(0, 0.5, n)
    assign = rng.random(n) < 0.5
    weight = 2.0 if shortcut else 0.0
    score = {
        "original": lesion + weight * marker,
        "marker_removed": lesion,
        "marker_added": lesion + weight,
        "marker_random": lesion + weight * assign,
    }
    ids = [f"syn{k:06d}" for k in range(n)]
    return pd.concat(
        [
            pd.DataFrame({"image_id": ids, "label": y, "marker": marker, "model": "m-r1", "condition": c, "score": s})
            for c, s in score.items()
        ],
        ignore_index=True,
    )[SCORE_COLUMNS]


@pytest.mark.parametrize("table", [auc_table, strata_auc_table])
def test_flag_raised_on_planted_data_and_not_on_a_null(table):
    for seed in range(3):
        planted = table(_planted_scores(200, True, seed), 400, seed, 0.05, 0.05)
        null = table(_planted_scores(200, False, seed), 400, seed, 0.05, 0.05)
        for result, expected in ((planted, 1.0), (null, 0.0)):
            assert list(result.columns) == SUMMARY_COLUMNS
            flag = result[(result.analysis == "auc_drop") & (result.metric == "relies_on_shortcut")]
            assert flag.value.tolist() == [expected], (table.__name__, seed)
    # AUC rows are sklearn's, and the drop is their difference
    scores = _planted_scores(200, True, 0)
    result = auc_table(scores, 200, 0, 0.05, 0.05)
    orig = scores[scores.condition == "original"]
    rand = scores[scores.condition == "marker_random"]
    aucs = result[result.analysis == "auc"].set_index("condition").value
    assert aucs["original"] == pytest.approx(roc_auc_score(orig.label, orig.score))
    assert aucs["marker_random"] == pytest.approx(roc_auc_score(rand.label, rand.score))
    drop = result[(result.analysis == "auc_drop") & (result.metric == "drop")].value.iloc[0]
    assert drop == pytest.approx(aucs["original"] - aucs["marker_random"])
    assert set(aucs.index) == {"original", "marker_removed", "marker_added", "marker_random"}


def test_summary_and_markdown_carry_the_flag_line():
    confounder = Confounder("shortcut_marker", "datasets.s.synthetic.shortcut", spec=SHORTCUT)
    regions = pd.DataFrame({"image_id": ["a"], "marker": [1], "x": 1, "y": 1, "width": 3, "height": 3})
    for shortcut, line in ((True, FLAG_RAISED), (False, FLAG_CLEAR)):
        aucs = auc_table(_planted_scores(200, shortcut, 0), 200, 0, 0.05, 0.05)
        summary = shortcut_summary(aucs, pd.DataFrame(columns=SUMMARY_COLUMNS), None)
        flag = summary.iloc[0]
        assert (flag.analysis, flag.metric, flag.value) == ("flag", "relies_on_shortcut", float(shortcut))
        assert flag_line(summary, 0.05).startswith(line)
        md = shortcut_markdown("s", summary, regions, confounder, 0.05, "pr_auc")
        assert md.splitlines()[2].startswith(line) and "| m-r1 |" in md
