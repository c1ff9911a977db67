"""Tests of saliency_trust.stats.mixed and saliency_trust.stats.pass_fail."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multicomp import pairwise_tukeyhsd

from saliency_trust.stats.mixed import (
    GroupMeansFit,
    compare_to_reference,
    fit_group_means_lmm,
    tukey_pairwise,
)
from saliency_trust.stats.pass_fail import (
    AVG,
    PASS_FAIL_COLUMNS,
    StatsOptions,
    pass_fail_markdown,
    utility_groups,
    utility_vs_avg,
)

# ---------------------------------------------------------------- helpers


def _one_way(seed: int, n_per_group: int = 12, means=(0.0, 0.3, 0.35, 1.0), sd: float = 0.5):
    rng = np.random.default_rng(seed)
    groups = [f"g{k}" for k in range(len(means))]
    y = np.concatenate([m + sd * rng.standard_normal(n_per_group) for m in means])
    g = np.repeat(groups, n_per_group)
    return y, g, groups


def _ols_cell_means_fit(y: np.ndarray, g: np.ndarray, groups: list[str]) -> GroupMeansFit:
    """GroupMeansFit of an OLS cell-means fit of a balanced one-way design."""
    k, n_obs = len(groups), len(y)
    n = n_obs // k
    means = np.array([y[g == name].mean() for name in groups])
    resid = y - means[[groups.index(x) for x in g]]
    s2 = float(resid @ resid / (n_obs - k))
    return GroupMeansFit(groups=groups, means=means, cov=s2 / n * np.eye(k), df=float(n_obs - k))


def _simulate_lmm(seed: int, n_images: int = 60, means=(0.2, 0.2, 0.35, 0.2), sd_image=0.2, sd_noise=0.05):
    rng = np.random.default_rng(seed)
    names = ["A", "B", "C", "D"]
    intercept = sd_image * rng.standard_normal(n_images)
    rows = [
        (f"im{i:03d}", name, mu + intercept[i] + sd_noise * rng.standard_normal())
        for i in range(n_images)
        for name, mu in zip(names, means)
    ]
    return pd.DataFrame(rows, columns=["image_id", "group", "value"]), names, np.array(means)


@pytest.fixture(scope="module")
def planted():
    data, names, means = _simulate_lmm(seed=0)
    return data, names, means, fit_group_means_lmm(data)


# ---------------------------------------------------------------- (a) Tukey vs statsmodels


@pytest.mark.parametrize("seed", [0, 1])
def test_tukey_matches_statsmodels_pairwise_tukeyhsd(seed):
    y, g, groups = _one_way(seed)
    fit = _ols_cell_means_fit(y, g, groups)
    ours = tukey_pairwise(fit, alpha=0.05)
    ref = pairwise_tukeyhsd(y, g, alpha=0.05)
    assert list(ref.groupsunique) == groups
    assert len(ours) == len(ref.meandiffs) == 6
    # pairs come in the same (i < j) order; statsmodels reports group2 - group1,
    # tukey_pairwise reports group1 - group2
    ref_pairs = [(groups[i], groups[j]) for i in range(4) for j in range(i + 1, 4)]
    assert list(zip(ours["group1"], ours["group2"])) == ref_pairs
    np.testing.assert_allclose(ours["estimate"], -ref.meandiffs, atol=1e-10)
    np.testing.assert_allclose(ours["p_adj"], ref.pvalues, atol=1e-3)
    np.testing.assert_allclose(ours["ci_low"], -ref.confint[:, 1], atol=1e-3)
    np.testing.assert_allclose(ours["ci_high"], -ref.confint[:, 0], atol=1e-3)
    # the significance decisions agree too
    np.testing.assert_array_equal(ours["p_adj"] < 0.05, ref.reject)
    assert (ours["p_adj"] < 0.05).any() and (ours["p_adj"] > 0.05).any()  # both outcomes exercised


def test_tukey_with_two_groups_equals_two_sided_t_test():
    """For k = 2, P(Q_{2,df} >= sqrt(2)|t|) = P(|T_df| >= |t|): the pooled two-sample t-test."""
    y, g, groups = _one_way(3, n_per_group=15, means=(0.0, 0.4))
    fit = _ols_cell_means_fit(y, g, groups)
    row = tukey_pairwise(fit).iloc[0]
    ref = stats.ttest_ind(y[g == "g0"], y[g == "g1"], equal_var=True)
    assert row["t"] == pytest.approx(ref.statistic, rel=1e-10)
    assert row["p_adj"] == pytest.approx(ref.pvalue, rel=1e-6)
    # CI = estimate +/- t_{0.975, df} * se for k = 2
    half = stats.t.ppf(0.975, fit.df) * row["se"]
    assert row["ci_low"] == pytest.approx(row["estimate"] - half, rel=1e-6)
    assert row["ci_high"] == pytest.approx(row["estimate"] + half, rel=1e-6)


def test_tukey_hand_built_fit_and_reference_signs():
    fit = GroupMeansFit(groups=["A", "B", "C"], means=np.array([1.0, 3.0, 2.0]), cov=0.01 * np.eye(3), df=30.0)
    pairs = tukey_pairwise(fit)
    est = dict(zip(zip(pairs.group1, pairs.group2), pairs.estimate))
    assert est == pytest.approx({("A", "B"): -2.0, ("A", "C"): -1.0, ("B", "C"): 1.0})
    np.testing.assert_allclose(pairs["se"], np.sqrt(0.02))
    comp = compare_to_reference(fit, "A").set_index("group")
    assert list(comp.index) == ["B", "C"] and (comp["reference"] == "A").all()
    assert comp.loc["B", "estimate"] == pytest.approx(2.0)
    assert comp.loc["C", "estimate"] == pytest.approx(1.0)
    assert (comp["ci_low"] < comp["estimate"]).all() and (comp["estimate"] < comp["ci_high"]).all()
    np.testing.assert_allclose(comp["ci_high"] - comp["estimate"], comp["estimate"] - comp["ci_low"])
    # reference in second position (group2) flips too: C vs B = -1
    comp_c = compare_to_reference(fit, "C").set_index("group")
    assert comp_c.loc["B", "estimate"] == pytest.approx(1.0)
    assert comp_c.loc["A", "estimate"] == pytest.approx(-1.0)
    # p-values are symmetric in the pair order
    assert comp_c.loc["A", "p_adj"] == pytest.approx(comp.loc["C", "p_adj"])


def test_tukey_needs_two_groups():
    with pytest.raises(ValueError):
        tukey_pairwise(GroupMeansFit(groups=["A"], means=np.array([1.0]), cov=np.eye(1), df=10.0))


# ---------------------------------------------------------------- (b) planted effect


def test_lmm_recovers_planted_effect(planted):
    data, names, true_means, fit = planted
    assert fit.converged is True
    assert fit.optimizer in ("lbfgs", "bfgs", "powell", "nm")
    assert fit.groups == names
    assert fit.n_obs == 240 and fit.n_subjects == 60
    # means: se ~ sqrt((0.2^2 + 0.05^2) / 60) ~ 0.027 -> 4 se tolerance
    np.testing.assert_allclose(fit.means, true_means, atol=0.11)
    # variance components: image sd 0.2, noise sd 0.05
    assert 0.02 < fit.subject_variance < 0.07
    assert fit.residual_variance == pytest.approx(0.05**2, rel=0.3)
    comp = compare_to_reference(fit, "A").set_index("group")
    assert list(comp.index) == ["B", "C", "D"]
    assert comp.loc["C", "p_adj"] < 0.001
    assert comp.loc["B", "p_adj"] > 0.05 and comp.loc["D", "p_adj"] > 0.05
    for group, true in (("B", 0.0), ("C", 0.15), ("D", 0.0)):
        assert comp.loc[group, "ci_low"] <= true <= comp.loc[group, "ci_high"], group
    # difference se ~ 0.05 * sqrt(2 / 60) ~ 0.0091
    np.testing.assert_allclose(comp["se"], 0.05 * np.sqrt(2 / 60), rtol=0.25)


def test_lmm_group_order_argument(planted):
    data, _, true_means, _ = planted
    fit = fit_group_means_lmm(data, groups=["C", "A"])  # subset and reorder
    assert fit.groups == ["C", "A"]
    assert fit.n_obs == 120
    assert fit.means[0] - fit.means[1] == pytest.approx(0.15, abs=0.04)


# ---------------------------------------------------------------- (c) balanced design


def test_balanced_lmm_differences_equal_raw_mean_differences(planted):
    data, names, _, fit = planted
    raw = data.groupby("group")["value"].mean().loc[names].to_numpy()
    np.testing.assert_allclose(fit.means - fit.means[0], raw - raw[0], atol=1e-8)
    np.testing.assert_allclose(fit.means, raw, atol=1e-6)
    # error df of the randomized block design: (k - 1)(n - 1)
    assert fit.df == (4 - 1) * (60 - 1)


def test_balanced_lmm_matches_two_way_anova(planted):
    """In a complete balanced block design the REML residual variance is the two-way ANOVA
    residual mean square, and a difference's se is sqrt(2 MSE / n)."""
    data, names, _, fit = planted
    table = data.pivot(index="image_id", columns="group", values="value")[names].to_numpy()
    n, k = table.shape
    resid = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + table.mean()
    mse = float((resid**2).sum() / ((n - 1) * (k - 1)))
    assert fit.residual_variance == pytest.approx(mse, rel=1e-4)
    pairs = tukey_pairwise(fit)
    np.testing.assert_allclose(pairs["se"], np.sqrt(2 * mse / n), rtol=1e-4)
    # subject variance = (MS_images - MSE) / k
    ms_images = k * float(((table.mean(axis=1) - table.mean()) ** 2).sum()) / (n - 1)
    assert fit.subject_variance == pytest.approx((ms_images - mse) / k, rel=1e-3)


def test_lmm_missing_group_raises(planted):
    data, _, _, _ = planted
    with pytest.raises(ValueError, match="Z"):
        fit_group_means_lmm(data, groups=["A", "Z"])


def test_lmm_drops_nan_values(planted):
    data, names, _, fit = planted
    noisy = data.copy()
    noisy.loc[noisy.index[:3], "value"] = np.nan
    fit2 = fit_group_means_lmm(noisy)
    assert fit2.n_obs == 237
    assert np.isfinite(fit2.means).all()


# ---------------------------------------------------------------- (d) PASS / FAIL


METHODS = ["good", "bad", "same"]
MODELS = ["m1", "m2"]


@pytest.fixture(scope="module")
def utility_long():
    """Long utility table: AVG baseline plus three methods for two models, plus rows that
    must be ignored (another metric and an unlisted model)."""
    rng = np.random.default_rng(5)
    n = 30
    base = 0.3 + 0.1 * rng.standard_normal(n)
    shift = {"good": 0.15, "bad": -0.15, "same": 0.0}
    rows = []
    for i in range(n):
        iid = f"img{i:02d}"
        for metric in ("pr_auc", "ap"):
            rows.append((iid, "baseline", AVG, metric, base[i]))
            for model in [*MODELS, "m3"]:
                for method in METHODS:
                    v = base[i] + shift[method] + 0.03 * rng.standard_normal()
                    if model == "m3" or metric == "ap":
                        v = 0.99 if method == "bad" else 0.0  # would flip verdicts if used
                    rows.append((iid, model, method, metric, v))
    return pd.DataFrame(rows, columns=["image_id", "model", "method", "metric", "value"])


@pytest.fixture(scope="module")
def verdicts(utility_long):
    groups = utility_groups(utility_long, MODELS, METHODS, "pr_auc")
    fit = fit_group_means_lmm(groups, groups=[AVG, *METHODS])
    return groups, fit, utility_vs_avg(fit, 0.05, "pr_auc", MODELS)


def test_utility_groups_selects_metric_models_and_baseline(utility_long, verdicts):
    groups, _, _ = verdicts
    assert (groups["metric"] == "pr_auc").all()
    assert set(groups["model"]) == {"m1", "m2", "baseline"}
    assert len(groups) == 30 * (1 + len(METHODS) * len(MODELS))
    is_base = groups["method"] == AVG
    assert (groups.loc[is_base, "group"] == AVG).all() and is_base.sum() == 30
    assert (groups.loc[~is_base, "group"] == groups.loc[~is_base, "method"]).all()
    # values are untouched
    merged = groups.merge(utility_long, on=["image_id", "model", "method", "metric"], suffixes=("", "_orig"))
    np.testing.assert_array_equal(merged["value"], merged["value_orig"])


def test_utility_vs_avg_verdicts(utility_long, verdicts):
    _, fit, table = verdicts
    assert list(table.columns[:6]) == ["method", "criterion", "baseline", "estimate", "p_value", "verdict"]
    assert list(table.columns) == PASS_FAIL_COLUMNS
    t = table.set_index("method")
    assert sorted(t.index) == sorted(METHODS)
    assert t.loc["good", "verdict"] == "PASS"
    assert t.loc["bad", "verdict"] == "FAIL"
    assert t.loc["same", "verdict"] == "FAIL"
    # why: good is significantly above, bad significantly *below*, same not significant
    assert t.loc["good", "estimate"] > 0 and t.loc["good", "p_value"] < 0.001
    assert t.loc["bad", "estimate"] < 0 and t.loc["bad", "p_value"] < 0.001
    assert t.loc["same", "p_value"] > 0.05
    # estimates are method - AVG and match the raw mean differences (balanced design)
    sel = utility_long[(utility_long.metric == "pr_auc") & utility_long.model.isin([*MODELS, "baseline"])]
    raw = sel.groupby("method")["value"].mean()
    for m in METHODS:
        assert t.loc[m, "estimate"] == pytest.approx(raw[m] - raw[AVG], abs=1e-6)
        assert t.loc[m, "ci_low"] < t.loc[m, "estimate"] < t.loc[m, "ci_high"]
    assert t.loc["good", "estimate"] == pytest.approx(0.15, abs=0.03)
    assert (t["criterion"] == "utility").all() and (t["baseline"] == AVG).all()
    assert (t["metric"] == "pr_auc").all() and (t["models"] == "m1;m2").all()
    assert (t["n_images"] == 30).all() and t["converged"].all()


def test_utility_vs_avg_decision_rule_on_hand_built_fit():
    """PASS needs estimate > 0 AND p < alpha; a non-significant gain FAILs."""
    se2 = 0.01**2
    fit = GroupMeansFit(
        groups=[AVG, "big", "tiny", "below"],
        means=np.array([0.30, 0.40, 0.305, 0.20]),
        cov=se2 * np.eye(4),
        df=100.0,
        n_subjects=40,
    )
    t = utility_vs_avg(fit, 0.05, "ap", ["m"]).set_index("method")
    assert t.loc["big", "verdict"] == "PASS"
    assert t.loc["tiny", "verdict"] == "FAIL" and t.loc["tiny", "estimate"] > 0
    assert t.loc["below", "verdict"] == "FAIL"
    assert t.loc["big", "estimate"] == pytest.approx(0.10)
    # a looser alpha can turn a gain into a PASS only if p < alpha
    p_tiny = t.loc["tiny", "p_value"]
    assert p_tiny > 0.05
    t2 = utility_vs_avg(fit, min(0.999, p_tiny + 0.01), "ap", ["m"]).set_index("method")
    assert t2.loc["tiny", "verdict"] == "PASS"


# ---------------------------------------------------------------- (e) Markdown


def test_pass_fail_markdown_layout(verdicts):
    _, _, table = verdicts
    aucs = pd.DataFrame({"model": ["m1", "m2"], "val_auc": [0.9123, 0.8], "test_auc": [0.88749, 0.7]})
    md = pass_fail_markdown(table, aucs, 0.05)
    lines = md.splitlines()
    assert lines[0] == "| Method | Utility vs AVG |"
    assert re.fullmatch(r"\|(---\|){2}", lines[1])
    rows = [ln for ln in lines[2:] if ln.startswith("| ") and not ln.startswith("| Model")]
    method_rows = rows[: len(METHODS)]
    assert [r.split("|")[1].strip() for r in method_rows] == list(table["method"])
    t = table.set_index("method")
    for r in method_rows:
        name, cell = (c.strip() for c in r.strip("|").split("|"))
        m = re.fullmatch(r"(PASS|FAIL) \(([+-]\d\.\d{3}), (p<0\.001|p=\d\.\d{3})\)", cell)
        assert m, cell
        assert m.group(1) == t.loc[name, "verdict"]
        assert float(m.group(2)) == pytest.approx(t.loc[name, "estimate"], abs=5e-4)
        if m.group(3) != "p<0.001":
            assert float(m.group(3)[2:]) == pytest.approx(t.loc[name, "p_value"], abs=5e-4)
        else:
            assert t.loc[name, "p_value"] < 0.001
    assert "| good | PASS (+0.1" in md
    assert "alpha = 0.05" in md
    assert "| Model | Val AUC | Test AUC |" in md
    assert "| m1 | 0.912 | 0.887 |" in md and "| m2 | 0.800 | 0.700 |" in md
    assert "WARNING" not in md
    assert md.endswith("\n")


def test_pass_fail_markdown_warns_when_not_converged(verdicts):
    _, _, table = verdicts
    bad = table.assign(converged=False)
    md = pass_fail_markdown(bad, pd.DataFrame({"model": ["m1"], "val_auc": [0.5], "test_auc": [0.5]}), 0.01)
    assert "WARNING" in md and "did not converge" in md
    assert "alpha = 0.01" in md


# ---------------------------------------------------------------- (f) errors


def test_utility_groups_without_avg_rows_raises(utility_long):
    no_avg = utility_long[utility_long["method"] != AVG]
    with pytest.raises(ValueError, match=AVG):
        utility_groups(no_avg, MODELS, METHODS, "pr_auc")
    # AVG rows of another metric do not count
    only_ap_avg = utility_long[~((utility_long["method"] == AVG) & (utility_long["metric"] == "pr_auc"))]
    with pytest.raises(ValueError, match="pr_auc"):
        utility_groups(only_ap_avg, MODELS, METHODS, "pr_auc")


def test_utility_groups_missing_method_raises(utility_long):
    with pytest.raises(ValueError, match="gradcam"):
        utility_groups(utility_long, MODELS, [*METHODS, "gradcam"], "pr_auc")
    # a method present only for an unlisted model is missing too
    only_m3 = utility_long[~((utility_long["method"] == "same") & utility_long["model"].isin(MODELS))]
    with pytest.raises(ValueError, match="same"):
        utility_groups(only_m3, MODELS, METHODS, "pr_auc")


def test_compare_to_reference_unknown_reference_gives_no_rows():
    fit = GroupMeansFit(groups=["A", "B"], means=np.array([0.0, 1.0]), cov=np.eye(2), df=5.0)
    assert compare_to_reference(fit, "A")["group"].tolist() == ["B"]
    assert len(compare_to_reference(fit, "nope")) == 0


def test_lmm_is_not_fooled_by_an_optimizer_that_claims_convergence_at_a_bad_point():
    """Regression: on this utility table statsmodels' lbfgs reports convergence with a zero
    variance component and absurd means (infinite log-likelihood). The fit must match the
    statsmodels formula interface's default REML fit, which is sound here."""
    import statsmodels.formula.api as smf
    from conftest import REPO

    data = pd.read_csv(REPO / "tests/data/utility_lbfgs_regression.csv")
    groups = ["AVG", "GRAD", "IG", "GCAM"]
    fit = fit_group_means_lmm(data, groups=groups)
    ref = smf.mixedlm("value ~ 0 + C(group)", data, groups=data["image_id"]).fit(reml=True)
    ref_means = [ref.fe_params[f"C(group)[{g}]"] for g in groups]
    np.testing.assert_allclose(fit.means, ref_means, atol=1e-5)
    ref_se = [ref.bse[f"C(group)[{g}]"] for g in groups]
    np.testing.assert_allclose(np.sqrt(np.diag(fit.cov)), ref_se, rtol=1e-3)
    assert fit.converged and fit.optimizer != "lbfgs"
    assert any(m.startswith("lbfgs") for m in fit.messages)  # the bad attempt is reported, not hidden


# ---------------------------------------------------------------- (g) the other Table 2 columns


def test_above_constant_is_a_one_sided_t_on_the_model_df():
    from scipy import stats as st

    from saliency_trust.stats.pass_fail import above_constant

    fit = GroupMeansFit(
        groups=["a", "b", "c"], means=np.array([0.70, 0.505, 0.30]), cov=0.01**2 * np.eye(3), df=50.0, n_subjects=20
    )
    t = above_constant(fit, ["a", "b", "c"], 0.5, 0.05, "repeatability", "LOW", "ssim", ["m1~m2"]).set_index("method")
    assert list(t["verdict"]) == ["PASS", "FAIL", "FAIL"]
    assert t.loc["b", "estimate"] == pytest.approx(0.005)
    assert t.loc["b", "p_value"] == pytest.approx(st.t.sf(0.5, 50))  # t = 0.005 / 0.01
    assert t.loc["a", "p_value"] == pytest.approx(st.t.sf(20.0, 50))
    # the interval is the one-sided bound that matches the one-sided decision
    lower = st.t.ppf(0.95, 50) * 0.01
    assert t.loc["c", "ci_low"] == pytest.approx(-0.2 - lower) and t.loc["c", "ci_high"] == np.inf
    assert ((t["ci_low"] > 0) == (t["verdict"] == "PASS")).all()


def test_not_worse_rule_fails_only_significantly_worse_methods():
    from saliency_trust.stats.pass_fail import versus_baseline

    fit = GroupMeansFit(
        groups=["HIGH", "better", "close", "worse"],
        means=np.array([0.6, 0.7, 0.595, 0.4]),
        cov=0.01**2 * np.eye(4),
        df=100.0,
        n_subjects=30,
    )
    t = versus_baseline(fit, "HIGH", 0.05, "reproducibility", "not_worse", "ssim", ["p"]).set_index("method")
    assert t.loc["better", "verdict"] == "PASS" and t.loc["close", "verdict"] == "PASS"
    assert t.loc["worse", "verdict"] == "FAIL" and t.loc["worse", "estimate"] == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="rule"):
        versus_baseline(fit, "HIGH", 0.05, "x", "sideways", "ssim", ["p"])


def _similarity_long(rng, n=25):
    rows = []
    level = {"stable": 0.85, "coin": 0.47, "UNET": 0.75}
    pairs = [
        ("repeatability", "a-r1", "a-r2"),
        ("repeatability", "b-r1", "b-r2"),  # b is not a primary model
        ("reproducibility", "a-r1", "b-r1"),
        ("reproducibility", "a-r2", "b-r1"),
    ]
    for i in range(n):
        base = 0.05 * rng.standard_normal()
        for crit, ma, mb in pairs:
            for method in ("stable", "coin"):
                v = level[method] + base + 0.02 * rng.standard_normal()
                if (ma, mb) == ("b-r1", "b-r2"):
                    v = 0.0  # must be ignored for the primary models' repeatability
                for metric in ("ssim", "iou"):
                    rows.append((f"i{i}", crit, ma, mb, method, metric, v if metric == "ssim" else 0.99))
        for crit in ("repeatability", "reproducibility"):
            rows.append((f"i{i}", crit, "unet-r1", "unet-r2", "UNET", "ssim", level["UNET"] + base))
    return pd.DataFrame(rows, columns=["image_id", "criterion", "model_a", "model_b", "method", "metric", "value"])


def test_similarity_verdicts_against_low_and_high():
    from saliency_trust.stats.pass_fail import similarity_verdicts

    sim = _similarity_long(np.random.default_rng(3))
    table, fit = similarity_verdicts(sim, "repeatability", ["stable", "coin"], "UNET", 0.05, ["a-r1", "a-r2"])
    t = table.set_index(["method", "baseline"])
    assert t.loc[("stable", "LOW"), "verdict"] == "PASS" and t.loc[("coin", "LOW"), "verdict"] == "FAIL"
    assert t.loc[("stable", "UNET"), "verdict"] == "PASS" and t.loc[("coin", "UNET"), "verdict"] == "FAIL"
    # only the primary replicates' pair and the U-Net pair enter (the b pair of zeros is ignored)
    raw = sim[(sim.metric == "ssim") & (sim.criterion == "repeatability") & (sim.model_a == "a-r1")]
    assert t.loc[("stable", "LOW"), "estimate"] == pytest.approx(
        raw[raw.method == "stable"].value.mean() - 0.5, abs=1e-6
    )
    assert set(table["models"]) == {"a-r1~a-r2"} and (table["metric"] == "ssim").all()
    # the paper's design: one reproducibility pair (first primary replicate with the other architecture)
    repro, _ = similarity_verdicts(sim, "reproducibility", ["stable", "coin"], "UNET", 0.05, ["a-r1", "a-r2"])
    assert set(repro["models"]) == {"a-r1~b-r1"}
    pooled, _ = similarity_verdicts(
        sim,
        "reproducibility",
        ["stable", "coin"],
        "UNET",
        0.05,
        ["a-r1", "a-r2"],
        options=StatsOptions(pooling="image_means"),
    )
    assert set(pooled["models"]) == {"a-r1~b-r1;a-r2~b-r1"}
    assert (pooled["n_images"] == 25).all()  # per-image means: each image counted once
    with pytest.raises(ValueError, match="missing"):
        similarity_verdicts(sim, "repeatability", ["stable", "missing"], None, 0.05, ["a-r1", "a-r2"])


def test_randomization_verdicts_use_the_last_cascading_step():
    from saliency_trust.stats.pass_fail import randomization_verdicts

    tests = pd.DataFrame(
        {
            "model": "m",
            "method": ["G", "G", "H", "H", "G"],
            "mode": ["cascading"] * 4 + ["independent"],
            "step": [1, 2, 1, 2, 9],
            "block": ["fc", "b1", "fc", "b1", "x"],
            "n_images": 16,
            "mean_ssim": [0.5, 0.1, 0.2, 0.45, 0.0],
            "sd": 0.04,
            "threshold": [0.3, 0.3, 0.4, 0.4, 0.3],
            "threshold_sd": 0.1,
            "threshold_n": 50,
            "test": "welch",
            "estimate": [0.2, -0.2, -0.2, 0.05, -0.3],
            "se": 0.02,
            "df": 60.0,
            "statistic": 0.0,
            "p_value": [0.9, 1e-6, 0.01, 0.99, 0.0],
            "ci_high": [0.23, -0.17, -0.17, 0.08, -0.27],
            "mde": 0.057,
            "below": False,
        }
    )
    t = randomization_verdicts(tests, "m", ["G", "H"], 0.05).set_index("method")
    assert t.loc["G", "verdict"] == "PASS" and t.loc["G", "estimate"] == pytest.approx(-0.2)
    assert t.loc["H", "verdict"] == "FAIL" and t.loc["H", "estimate"] == pytest.approx(0.05)
    assert t.loc["G", "se"] == pytest.approx(0.02) and (t["baseline"] == "threshold").all()
    assert t.loc["G", "ci_low"] == -np.inf and t.loc["G", "ci_high"] == pytest.approx(-0.17)
    assert t.loc["G", "test"].startswith("Welch") and t.loc["G", "df"] == 60.0
    with pytest.raises(ValueError, match="Q"):
        randomization_verdicts(tests, "m", ["Q"], 0.05)


def test_markdown_shows_only_the_columns_present_in_paper_order():
    rows = pd.DataFrame(
        {
            "method": ["G", "G", "G"],
            "criterion": ["repeatability", "utility", "randomization"],
            "baseline": ["UNET", "AVG", "threshold"],
            "estimate": [0.1, 0.2, -0.3],
            "p_value": [0.5, 0.001, 0.0001],
            "verdict": ["PASS", "PASS", "PASS"],
            "se": 0.01,
            "ci_low": 0.0,
            "ci_high": 0.0,
            "metric": "m",
            "models": "x",
            "n_images": 3,
            "converged": True,
        }
    )
    md = pass_fail_markdown(rows, pd.DataFrame({"model": ["x"], "val_auc": [0.9], "test_auc": [0.9]}), 0.05)
    assert md.splitlines()[0] == "| Method | Utility vs AVG | Randomization | Repeatability vs high |"
    assert "| G | PASS (+0.200, p=0.001) | PASS (-0.300, p<0.001) | PASS (+0.100, p=0.500) |" in md


# ---------------------------------------------------------------- decision rules, question tables, outputs


def _trained_random_long(seed=5, n=30):
    """Planted: method 'learns' loses 0.3 utility when randomized, method 'blind' loses nothing."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        base = 0.1 * rng.standard_normal()
        for method, drop in (("learns", 0.3), ("blind", 0.0)):
            trained = 0.5 + base + 0.03 * rng.standard_normal()
            rows.append((f"i{i}", "m-r1", method, "trained", "pr_auc", trained))
            rows.append(
                (f"i{i}", "m-r1", method, "randomized", "pr_auc", trained - drop + 0.03 * rng.standard_normal())
            )
            rows.append((f"i{i}", "m-r2", method, "trained", "pr_auc", 0.0))  # another model: must be ignored
    # trained maps of images the randomized model did not explain: left out of the comparison
    rows += [(f"extra{i}", "m-r1", m, "trained", "pr_auc", 0.99) for i in range(5) for m in ("learns", "blind")]
    return pd.DataFrame(rows, columns=["image_id", "model", "method", "weights", "metric", "value"])


def test_trained_vs_random_recovers_the_planted_drop():
    from saliency_trust.stats.pass_fail import trained_vs_random

    data = _trained_random_long()
    table, fit = trained_vs_random(data, "m-r1", ["learns", "blind"], "pr_auc", 0.05)
    t = table.set_index("method")
    assert t.loc["learns", "verdict"] == "PASS" and t.loc["blind", "verdict"] == "FAIL"
    # balanced design: the LMM contrast equals the raw paired mean difference on the shared images
    sel = data[(data.model == "m-r1") & ~data.image_id.str.startswith("extra")]
    for method in ("learns", "blind"):
        m = sel[sel.method == method].pivot(index="image_id", columns="weights", values="value")
        assert t.loc[method, "estimate"] == pytest.approx((m.trained - m.randomized).mean(), abs=1e-6)
    assert fit.n_subjects == 30 and (table["baseline"] == "random").all() and (table["models"] == "m-r1").all()
    assert list(table.columns) == PASS_FAIL_COLUMNS
    with pytest.raises(ValueError, match="randomized-model rows of model m-r2"):
        trained_vs_random(data, "m-r2", ["learns"], "pr_auc", 0.05)


def test_not_worse_rule_turns_a_non_significant_loss_into_a_pass():
    from saliency_trust.stats.pass_fail import trained_vs_random

    data = _trained_random_long()
    strict, _ = trained_vs_random(data, "m-r1", ["learns", "blind"], "pr_auc", 0.05, rule="better")
    lenient, _ = trained_vs_random(data, "m-r1", ["learns", "blind"], "pr_auc", 0.05, rule="not_worse")
    assert strict.set_index("method").loc["blind", "verdict"] == "FAIL"
    assert lenient.set_index("method").loc["blind", "verdict"] == "PASS"


def test_decision_rules_validate_and_change_the_low_baseline():
    from saliency_trust.stats.pass_fail import DecisionRules, similarity_verdicts

    with pytest.raises(ValueError, match="stats.rules.utility_vs_avg"):
        DecisionRules(utility_vs_avg="maybe")
    with pytest.raises(ValueError, match="low_ssim"):
        DecisionRules(low_ssim=2.0)
    assert DecisionRules.from_config(None) == DecisionRules()
    sim = _similarity_long(np.random.default_rng(3))
    default, _ = similarity_verdicts(sim, "repeatability", ["stable", "coin"], "UNET", 0.05, ["a-r1", "a-r2"])
    low, _ = similarity_verdicts(
        sim,
        "repeatability",
        ["stable", "coin"],
        "UNET",
        0.05,
        ["a-r1", "a-r2"],
        DecisionRules(low_ssim=0.3, similarity_vs_high="better"),
    )
    d, lo = default.set_index(["method", "baseline"]), low.set_index(["method", "baseline"])
    assert d.loc[("coin", "LOW"), "verdict"] == "FAIL" and lo.loc[("coin", "LOW"), "verdict"] == "PASS"
    assert lo.loc[("coin", "LOW"), "estimate"] == pytest.approx(d.loc[("coin", "LOW"), "estimate"] + 0.2)
    # "better" than the U-Net pair: stable (0.85 vs 0.75) passes, and no method passes merely by not being worse
    assert lo.loc[("stable", "UNET"), "verdict"] == "PASS" and lo.loc[("coin", "UNET"), "verdict"] == "FAIL"


def _table2_rows():
    return pd.DataFrame(
        {
            "method": ["G_1", "G_1", "H"],
            "criterion": ["utility", "randomization", "utility"],
            "baseline": ["AVG", "threshold", "AVG"],
            "estimate": [0.2, -0.3, -0.01],
            "p_value": [0.001, 0.0001, 0.9],
            "verdict": ["PASS", "PASS", "FAIL"],
            "se": 0.01,
            "ci_low": -0.1,
            "ci_high": 0.1,
            "metric": "pr_auc",
            "models": "x",
            "n_images": 40,
            "converged": True,
        }
    )


AUCS = pd.DataFrame({"model": ["simple_cnn-r1"], "val_auc": [0.9], "test_auc": [0.95]})


def test_latex_table_layout_and_escaping():
    from saliency_trust.stats.pass_fail import latex_escape, pass_fail_latex

    assert latex_escape("a_b & 50% <x>") == r"a\_b \& 50\% \textless{}x\textgreater{}"
    tex = pass_fail_latex(_table2_rows(), AUCS, 0.05, caption="On my_data.")
    lines = tex.splitlines()
    assert r"\begin{tabular}{lcc}" in lines and lines[-1] == r"\end{table}"
    body = [line for line in lines if line.endswith(r"\\")]
    assert body[0] == r"Method & Utility vs AVG & Randomization \\"
    assert body[1] == r"G\_1 & PASS (+0.200, p=0.001) & PASS (-0.300, p\textless{}0.001) \\"
    assert body[2] == r"H & FAIL (-0.010, p=0.900) & n/a \\"
    assert all(line.count("&") == 2 for line in body)
    assert r"On my\_data." in tex and r"simple\_cnn-r1: 0.950" in tex
    assert tex.count("{") - tex.count(r"\{") == tex.count("}") - tex.count(r"\}")  # braces balance


def test_html_table_marks_verdicts_and_lists_question_tables():
    from html.parser import HTMLParser

    from saliency_trust.stats.pass_fail import pass_fail_html

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.cells, self.tags, self._cls = [], [], None

        def handle_starttag(self, tag, attrs):
            if tag in ("meta", "br"):  # void elements have no end tag
                return
            self.tags.append(tag)
            if tag == "td":
                self._cls = dict(attrs).get("class")

        def handle_data(self, data):
            if self.tags and self.tags[-1] == "td" and data.strip():
                self.cells.append((self._cls, data.strip()))

        def handle_endtag(self, tag):
            self.tags.pop()

    rows = _table2_rows()
    page = pass_fail_html(
        rows, AUCS, 0.05, questions={"utility_vs_avg": rows[rows.criterion == "utility"]}, title="PASS/FAIL - <x>"
    )
    parser = Cells()
    parser.feed(page)
    assert parser.tags == []  # every tag closed
    assert ("pass", "PASS (+0.200, p=0.001)") in parser.cells and ("fail", "FAIL (-0.010, p=0.900)") in parser.cells
    assert ("na", "n/a") in parser.cells
    assert "Does the map localize better than the average mask (AVG)?" in page
    assert "[-0.100, +0.100]" in page and "&lt;x&gt;" in page and "<script" not in page


def test_cross_dataset_summary_counts_passes_per_dataset():
    from saliency_trust.stats.pass_fail import cross_dataset_summary

    a = _table2_rows()
    b = a.assign(verdict=["FAIL", "PASS", "PASS"])
    long, md = cross_dataset_summary({"siim": a, "rsna": b})
    assert list(long.columns[:2]) == ["dataset", "method"] and len(long) == 6
    lines = md.splitlines()
    assert lines[0] == "| Method | Dataset | Utility vs AVG | Randomization | PASS |"
    assert "| G_1 | siim | PASS | PASS | 2/2 |" in lines and "| G_1 | rsna | FAIL | PASS | 1/2 |" in lines
    assert "| H | siim | FAIL | n/a | 0/1 |" in lines
    with pytest.raises(ValueError, match="at least one"):
        cross_dataset_summary({})


def test_question_tables_follow_the_config():
    from saliency_trust.config import question_tables

    config = {
        "baselines": {"high": "unet"},
        "randomization": {"modes": ["cascading"], "models": "primary"},
        "models": [{"arch": "simple_cnn", "replicates": 2}],
        "stats": {"primary_architecture": None},
    }
    assert question_tables(config) == [
        "utility_vs_avg",
        "utility_vs_high",
        "utility_trained_vs_random",
        "similarity_vs_baselines",
    ]
    config |= {
        "baselines": {"high": "none"},
        "randomization": {"modes": ["independent"], "models": "primary"},
        "models": [{"arch": "simple_cnn", "replicates": 1}],
    }
    assert question_tables(config) == ["utility_vs_avg"]
