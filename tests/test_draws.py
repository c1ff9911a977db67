"""Re-initialization draws of the randomization criterion: the crossed image x draw test, the draws' seeds,
their cache axis, their SSIM and utility rows."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from saliency_trust.metrics.randomization import RANDOMIZATION_COLUMNS, THRESHOLD_COLUMNS, randomization_ssim
from saliency_trust.metrics.similarity import ssim
from saliency_trust.metrics.utility import UTILITY_COLUMNS, pr_auc, randomized_utility, top_k_overlap
from saliency_trust.saliency.compute import draw_seeds
from saliency_trust.stats.randomization import (
    crossed_mean_variance,
    degradation_test,
    draw_table,
    randomization_tests,
)
from saliency_trust.storage.maps import MapStore, compute_randomized_maps, read_maps_of, read_randomized_maps


def _crossed(rng, n_img: int, n_draw: int, mu=0.3, sd_img=0.1, sd_draw=0.05, sd_e=0.03, draw_effects=None):
    a = rng.normal(0, sd_img, n_img)[:, None]
    b = rng.normal(0, sd_draw, n_draw)[None, :] if draw_effects is None else np.asarray(draw_effects)[None, :]
    return mu + a + b + rng.normal(0, sd_e, (n_img, n_draw))


# ------------------------------------------------------------------ crossed model: hand-computed and library


def test_crossed_variance_hand_computed_two_by_two():
    # y = [[1, 2], [3, 5]]: grand mean 2.75; row means 1.5, 4; column means 2, 3.5
    # MS_image = 2 x ((1.5-2.75)^2 + (4-2.75)^2) / 1 = 6.25; MS_draw = 2 x (0.75^2 + 0.75^2) = 2.25
    # residuals +-0.25 -> MS_error = 4 x 0.0625 / 1 = 0.25; Var(mean) = (6.25 + 2.25 - 0.25) / 4 = 2.0625
    res = crossed_mean_variance([[1, 2], [3, 5]])
    assert res["mean"] == pytest.approx(2.75)
    assert res["var"] == pytest.approx(2.0625)
    assert res["var_image"] == pytest.approx((6.25 - 0.25) / 2)
    assert res["var_draw"] == pytest.approx((2.25 - 0.25) / 2)
    assert res["var_residual"] == pytest.approx(0.25)
    # Satterthwaite: 8.25^2 / (6.25^2 + 2.25^2 + 0.25^2) with one df each
    assert res["df"] == pytest.approx(8.25**2 / (6.25**2 + 2.25**2 + 0.25**2))


def test_crossed_variance_one_draw_is_the_one_sample_case():
    v = np.array([0.1, 0.4, 0.35, 0.2, 0.3])
    res = crossed_mean_variance(v)
    assert res["var"] == pytest.approx(v.var(ddof=1) / len(v))
    assert res["df"] == len(v) - 1
    np.testing.assert_allclose(crossed_mean_variance(v[:, None])["var"], res["var"])


def test_crossed_variance_negative_component_is_zeroed():
    # draw means identical -> MS_draw = 0 < MS_error: the draw component is zero, Var = (MS_image) / (I J)
    y = np.array([[0.1, 0.3], [0.5, 0.3], [0.2, 0.2]])
    y = y - y.mean(axis=0) + y.mean()  # equal column means
    res = crossed_mean_variance(y)
    i, j = y.shape
    row = y.mean(axis=1)
    ms_a = j * ((row - y.mean()) ** 2).sum() / (i - 1)
    assert res["var_draw"] == 0.0
    assert res["var"] == pytest.approx(ms_a / (i * j))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crossed_variance_equals_statsmodels_reml_crossed_mixed_model(seed):
    """For a balanced table with positive components, REML equals the ANOVA estimates: the standard error of
    the intercept of statsmodels' crossed-random-effects MixedLM equals sqrt(Var(mean))."""
    rng = np.random.default_rng(seed)
    y = _crossed(rng, 14, 5, sd_img=0.12, sd_draw=0.08, sd_e=0.04)
    ours = crossed_mean_variance(y)
    assert ours["var_image"] > 0 and ours["var_draw"] > 0
    df = pd.DataFrame({"y": y.ravel(), "image": np.repeat(np.arange(14), 5), "draw": np.tile(np.arange(5), 14), "g": 1})
    model = sm.MixedLM.from_formula(
        "y ~ 1", groups="g", re_formula="0", data=df, vc_formula={"image": "0 + C(image)", "draw": "0 + C(draw)"}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(reml=True, method=["lbfgs"])
    assert fit.fe_params["Intercept"] == pytest.approx(ours["mean"], abs=1e-8)
    assert fit.bse_fe["Intercept"] == pytest.approx(np.sqrt(ours["var"]), rel=1e-3)
    names = list(fit.model.exog_vc.names)
    comps = dict(zip(names, fit.vcomp))
    assert comps["image"] == pytest.approx(ours["var_image"], rel=1e-3)
    assert comps["draw"] == pytest.approx(ours["var_draw"], rel=1e-3)
    assert fit.scale == pytest.approx(ours["var_residual"], rel=1e-3)


def test_crossed_model_keeps_nominal_false_positive_rate_over_draws():
    """Seeded simulation under H0 (true mean at the threshold) with a real draw effect: the crossed test keeps
    about alpha, while pooling image x draw rows as independent values rejects far more often."""
    rng = np.random.default_rng(42)
    alpha, runs = 0.05, 400
    crossed_hits = pooled_hits = 0
    for _ in range(runs):
        y = _crossed(rng, 16, 3, mu=0.3, sd_img=0.05, sd_draw=0.1, sd_e=0.03)
        crossed_hits += degradation_test(y, 0.3, 0.0, 50, "one_sample", alpha)["p_value"] < alpha
        pooled_hits += stats.ttest_1samp(y.ravel(), 0.3, alternative="less").pvalue < alpha
    assert crossed_hits / runs < 2 * alpha
    assert pooled_hits / runs > 3 * alpha


# ------------------------------------------------------------------ planted data: an effect in one draw only


def test_effect_living_in_one_draw_is_not_significant():
    """Draw 1's maps drop far below the threshold; draws 2 and 3 sit on it. One draw alone (the papers' single
    re-initialization) calls the drop significant; the crossed test over the three draws does not."""
    rng = np.random.default_rng(7)
    threshold = 0.3
    y = _crossed(rng, 16, 3, mu=threshold, sd_img=0.04, sd_e=0.02, draw_effects=[-0.2, 0.0, 0.0])
    first_draw_alone = degradation_test(y[:, 0], threshold, 0.02, 50, "welch")
    assert first_draw_alone["p_value"] < 1e-6
    over_draws = degradation_test(y, threshold, 0.02, 50, "welch")
    assert over_draws["p_value"] > 0.05
    assert over_draws["estimate"] < -0.05  # the mean drop is there, carried by one draw
    assert over_draws["sd_draw"] > over_draws["sd_image"]
    # the same drop in every draw is significant over draws too
    every = _crossed(rng, 16, 3, mu=threshold - 0.2, sd_img=0.04, sd_e=0.02, draw_effects=[0.0, 0.01, -0.01])
    assert degradation_test(every, threshold, 0.02, 50, "welch")["p_value"] < 1e-3


def test_welch_over_draws_adds_the_threshold_variance():
    rng = np.random.default_rng(3)
    y = _crossed(rng, 12, 3)
    c = crossed_mean_variance(y)
    res = degradation_test(y, 0.5, 0.2, 50, "welch")
    v2 = 0.2**2 / 50
    assert res["se"] == pytest.approx(np.sqrt(c["var"] + v2))
    assert res["df"] == pytest.approx((c["var"] + v2) ** 2 / (c["var"] ** 2 / c["df"] + v2**2 / 49))
    assert res["estimate"] == pytest.approx(y.mean() - 0.5)
    assert res["p_value"] == pytest.approx(stats.t.cdf(res["estimate"] / res["se"], res["df"]))


def test_randomization_tests_use_the_draws_and_name_a_missing_image():
    rng = np.random.default_rng(5)
    y = _crossed(rng, 6, 3)
    rows = [
        (f"im{i}", "cnn", "gradcam", "cascading", d + 1, 1, "fc", "ssim", y[i, d]) for i in range(6) for d in range(3)
    ]
    scores = pd.DataFrame(rows, columns=RANDOMIZATION_COLUMNS)
    thresholds = pd.DataFrame([("cnn", "gradcam", 50, 0.5, 0.1)], columns=THRESHOLD_COLUMNS)
    row = randomization_tests(scores, thresholds).iloc[0]
    assert row["n_images"] == 6 and row["n_draws"] == 3
    ref = degradation_test(y, 0.5, 0.1, 50, "welch")
    assert row["p_value"] == pytest.approx(ref["p_value"]) and row["se"] == pytest.approx(ref["se"])
    with pytest.raises(ValueError, match="im4"):
        draw_table(scores.drop(index=scores.index[(scores["image_id"] == "im4") & (scores["draw"] == 2)]))


# ------------------------------------------------------------------ seeds, cache axis, SSIM rows


def test_draw_seeds_first_is_the_run_seed_and_all_differ():
    assert draw_seeds(11, 1) == [11]
    seeds = draw_seeds(11, 4)
    assert seeds[0] == 11 and len(set(seeds)) == 4
    assert draw_seeds(11, 4) == seeds and draw_seeds(12, 4)[1:] != seeds[1:]
    with pytest.raises(ValueError, match="randomization.draws"):
        draw_seeds(11, 0)


def _maps(rng, *shape):
    m = rng.random(shape).astype(np.float32)
    return m


def test_cache_holds_a_draw_axis_and_reuses_the_draws_it_has(tmp_path):
    rng = np.random.default_rng(0)
    ids, steps = ["a", "b", "c"], ["fc", "block4"]
    seeds = [5, 9, 13]
    maps = _maps(rng, 3, 2, 3, 8, 8)  # D x S x N x H x W, draw d of seed seeds[d]
    calls = []
    path = tmp_path / "m.h5"
    store = MapStore(tmp_path / "store", "gradcam", {}, "sha", {})

    def run(draws):
        path.unlink(missing_ok=True)  # Snakemake removes a rerun job's outputs: reuse is through the store

        def compute_step(d, k, rows):
            calls.append((draws[d], k, list(rows)))
            m = maps[seeds.index(draws[d]), k][rows]
            return m, m[:, None]

        return compute_randomized_maps(path, "gradcam", {}, "sha", {}, ids, steps, compute_step, draws, store=store)

    assert run([5, 9]) == 2 * 2 * 3
    assert calls == [(5, 0, [0, 1, 2]), (5, 1, [0, 1, 2]), (9, 0, [0, 1, 2]), (9, 1, [0, 1, 2])]
    got_ids, got_steps, got = read_randomized_maps(path)
    assert got.shape == (2, 2, 3, 8, 8)
    np.testing.assert_array_equal(got, maps[:2])
    with h5py.File(path) as h5:
        assert h5.attrs["draws"] == "[5, 9]"
        assert h5["raw"].shape == (2, 2, 3, 1, 8, 8)
    np.testing.assert_array_equal(read_maps_of(path, ["c", "a"]), maps[:2, :, [2, 0]])
    calls.clear()
    assert run([5, 9]) == 0
    assert calls == []
    assert run([5]) == 0  # fewer draws: the file holds the first only
    assert read_randomized_maps(path)[2].shape == (1, 2, 3, 8, 8)
    np.testing.assert_array_equal(read_randomized_maps(path)[2], maps[:1])
    assert run([5, 9, 13]) == 2 * 3  # one more draw: only its maps are computed
    assert calls == [(13, 0, [0, 1, 2]), (13, 1, [0, 1, 2])]
    np.testing.assert_array_equal(read_randomized_maps(path)[2], maps)
    with h5py.File(path) as h5:
        assert h5.attrs["draws"] == "[5, 9, 13]"


def test_randomization_ssim_has_one_row_per_draw_step_and_image():
    rng = np.random.default_rng(1)
    ids, steps = ["x", "y"], ["fc", "block4", "block3"]
    trained = {i: _maps(rng, 16, 16) for i in ids}
    step_maps = _maps(rng, 3, 3, 2, 16, 16)
    table = randomization_ssim(trained, ids, steps, step_maps, "cnn", "gradcam", "cascading")
    assert list(table.columns) == RANDOMIZATION_COLUMNS and len(table) == 3 * 3 * 2
    for _, r in table.iterrows():
        ref = ssim(step_maps[r["draw"] - 1, r["step"] - 1, ids.index(r["image_id"])], trained[r["image_id"]])
        assert r["block"] == steps[r["step"] - 1]
        assert r["value"] == pytest.approx(ref, abs=1e-6)
    one = randomization_ssim(trained, ids, steps, step_maps[0], "cnn", "gradcam", "cascading")
    assert (one["draw"] == 1).all() and len(one) == 6


def test_randomized_utility_is_the_per_image_mean_over_draws_of_the_last_step():
    rng = np.random.default_rng(2)
    ids = ["p", "q", "r"]
    masks = {i: (rng.random((12, 12)) > 0.7) for i in ids}
    step_maps = _maps(rng, 3, 2, 3, 12, 12)  # 3 draws, 2 steps
    table = randomized_utility(ids, step_maps, {i: masks[i] for i in ids[:2]}, "cnn", "GRAD", ("pr_auc", "topk"))
    assert list(table.columns) == UTILITY_COLUMNS and len(table) == 2 * 2  # images with a mask only
    assert (table["weights"] == "randomized").all()
    for _, r in table.iterrows():
        j = ids.index(r["image_id"])
        fn = pr_auc if r["metric"] == "pr_auc" else top_k_overlap
        expected = np.mean([fn(step_maps[d, -1, j], masks[r["image_id"]], r["image_id"]) for d in range(3)])
        assert r["value"] == pytest.approx(expected)
