"""Verdicts that mean what Arun et al.'s verdicts mean: agreement with stored R outputs, the paper's design
against pseudo-replication, the Welch randomization test, Holm-adjusted planned contrasts, the per-method
test against LOW, the 'better' rule against the high baseline, and control rows.

Simulations are seeded; "nominal rate" checks use a binomial band around alpha."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from saliency_trust.stats import design
from saliency_trust.stats.mixed import GroupMeansFit, fit_group_means_lmm, tukey_pairwise
from saliency_trust.stats.pass_fail import (
    AVG,
    PASS_FAIL_COLUMNS,
    DecisionRules,
    StatsOptions,
    above_constant,
    above_constant_one_sample,
    decide,
    holm_contrasts,
    pass_fail_markdown,
    similarity_verdicts,
    table_notes,
)
from saliency_trust.stats.randomization import degradation_test

R_DIR = Path(__file__).parent / "data" / "r_reference"


def _upper_band(alpha: float, n: int) -> float:
    """Upper end of a 99.9 % binomial band of a rejection rate at the nominal alpha over n simulations."""
    return stats.binom.ppf(0.999, n, alpha) / n


# ------------------------------------------------------------------ stored R outputs


def test_tukey_matches_r_tukeyhsd_on_warpbreaks():
    """TukeyHSD(aov(breaks ~ wool + tension, warpbreaks), "tension"): wool is the block (random intercept)."""
    data = pd.read_csv(R_DIR / "warpbreaks.csv").rename(
        columns={"breaks": "value", "tension": "group", "wool": "image_id"}
    )
    fit = fit_group_means_lmm(data, groups=["L", "M", "H"])
    assert fit.df == 50 and fit.converged
    ours = tukey_pairwise(fit).set_index(["group1", "group2"])
    ref = pd.read_csv(R_DIR / "warpbreaks_tukeyhsd.csv").set_index("comparison")
    for comparison, r in ref.iterrows():
        g1, g2 = comparison.split("-")  # R reports g1 - g2; ours lists (L, M), (L, H), (M, H)
        key, sign = ((g1, g2), 1) if (g1, g2) in ours.index else ((g2, g1), -1)
        row = ours.loc[key]
        assert sign * row.estimate == pytest.approx(r["diff"], abs=1e-5)
        assert row.p_adj == pytest.approx(r.p_adj, abs=5e-7)
        lo, hi = sorted((sign * row.ci_low, sign * row.ci_high))
        assert lo == pytest.approx(r.lwr, abs=1e-4) and hi == pytest.approx(r.upr, abs=1e-4)


def test_mixed_model_matches_r_lme_on_machines():
    """lme(score ~ Machine, random = ~1 | Worker) = lmer(score ~ Machine + (1 | Worker)), REML."""
    data = pd.read_csv(R_DIR / "Machines.csv").rename(
        columns={"score": "value", "Machine": "group", "Worker": "image_id"}
    )
    fit = fit_group_means_lmm(data, groups=["A", "B", "C"])
    ref = pd.read_csv(R_DIR / "Machines_lme.csv").set_index("term")
    assert fit.means[0] == pytest.approx(ref.loc["(Intercept)", "value"], abs=1e-5)
    assert np.sqrt(fit.cov[0, 0]) == pytest.approx(ref.loc["(Intercept)", "std_error"], abs=1e-5)
    for k, term in ((1, "MachineB"), (2, "MachineC")):
        c = np.zeros(3)
        c[k], c[0] = 1, -1
        assert c @ fit.means == pytest.approx(ref.loc[term, "value"], abs=1e-5)
        # balanced design: the worker effects cancel, se = sqrt(2 sigma^2 / 18) with R's residual sd
        assert np.sqrt(c @ fit.cov @ c) == pytest.approx(
            np.sqrt(2 * ref.loc["sd_Residual", "value"] ** 2 / 18), abs=1e-6
        )
    assert fit.df == ref.loc["MachineB", "df"]
    assert np.sqrt(fit.subject_variance) == pytest.approx(ref.loc["sd_Worker", "value"], abs=1e-5)
    assert np.sqrt(fit.residual_variance) == pytest.approx(ref.loc["sd_Residual", "value"], abs=1e-5)


# ------------------------------------------------------------------ the paper's design vs pseudo-replication


def test_design_picks_one_model_and_one_pair_like_the_paper():
    primary = ["inception_v3-r1", "inception_v3-r2", "inception_v3-r3"]
    available = [
        ("inception_v3-r1", "inception_v3-r2"),
        ("inception_v3-r1", "inception_v3-r3"),
        ("inception_v3-r2", "inception_v3-r3"),
        ("inception_v3-r1", "densenet121-r2"),
        ("inception_v3-r1", "densenet121-r1"),
        ("inception_v3-r2", "densenet121-r1"),
    ]
    assert design.utility_models(primary, "none") == ["inception_v3-r1"]
    assert design.utility_models(primary, "image_means") == primary
    assert design.similarity_pairs(available, "repeatability", primary, "none") == [available[0]]
    assert design.similarity_pairs(available, "reproducibility", primary, "none") == [
        ("inception_v3-r1", "densenet121-r1")
    ]
    assert design.similarity_pairs(available, "repeatability", primary, "image_means") == available[:3]
    assert len(design.similarity_pairs(available, "reproducibility", primary, "image_means")) == 3
    with pytest.raises(ValueError, match="stats.pooling"):
        design.utility_models(primary, "rows")
    with pytest.raises(ValueError, match="no repeatability model pair"):
        design.similarity_pairs(available[3:], "repeatability", primary, "none")


def test_image_means_average_replicates_once_per_image():
    rows = pd.DataFrame(
        {
            "image_id": ["a", "a", "b", "b", "a"],
            "group": ["G", "G", "G", "G", "H"],
            "value": [0.2, 0.4, 0.5, np.nan, 0.9],
        }
    )
    out = design.image_means(rows).set_index(["image_id", "group"])
    assert out.loc[("a", "G"), "value"] == pytest.approx(0.3) and out.loc[("a", "G"), "n_replicates"] == 2
    assert out.loc[("b", "G"), "value"] == 0.5 and out.loc[("a", "H"), "n_replicates"] == 1


def _replicated_null(rng, n_images=15, n_replicates=3):
    """No true method effect; each image's method effect (image x method interaction) is shared by the
    replicates, plus replicate noise: the case where counting each replicate as a row pseudo-replicates."""
    rows = []
    for i in range(n_images):
        base = 0.3 + 0.1 * rng.standard_normal()
        inter = 0.1 * rng.standard_normal()
        rows.append((f"i{i}", "baseline", AVG, base + 0.03 * rng.standard_normal()))
        for r in range(1, n_replicates + 1):
            rows.append((f"i{i}", f"m-r{r}", "G", base + inter + 0.03 * rng.standard_normal()))
    return pd.DataFrame(rows, columns=["image_id", "model", "group", "value"])


def _contrast_p(fit: GroupMeansFit) -> float:
    c = np.array([1.0, -1.0])
    t = (c @ fit.means) / np.sqrt(c @ fit.cov @ c)
    return float(2 * stats.t.sf(abs(t), fit.df))


def _additive_anova_p(data: pd.DataFrame) -> float:
    """p of G - AVG from ``value ~ group + image`` by least squares: what the REML random-intercept model gives
    for these balanced layouts (checked against fit_group_means_lmm below), fast enough for simulations."""
    groups = (data["group"] == "G").to_numpy(float)
    images = pd.get_dummies(data["image_id"]).to_numpy(float)
    x = np.column_stack([groups, images])
    y = data["value"].to_numpy(float)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    df = len(y) - np.linalg.matrix_rank(x)
    sigma2 = ((y - x @ beta) ** 2).sum() / df
    cov = sigma2 * np.linalg.pinv(x.T @ x)
    return float(2 * stats.t.sf(abs(beta[0]) / np.sqrt(cov[0, 0]), df))


@pytest.mark.filterwarnings("ignore")
def test_the_fast_reference_equals_the_mixed_model_on_these_designs():
    data = _replicated_null(np.random.default_rng(1))
    for rows in (data, design.image_means(data)):
        assert _additive_anova_p(rows) == pytest.approx(
            _contrast_p(fit_group_means_lmm(rows, groups=["G", AVG])), rel=1e-3
        )


def test_pooling_replicates_as_rows_inflates_false_positives_but_image_means_do_not():
    rng = np.random.default_rng(2024)
    n_sim, alpha = 1000, 0.05
    naive = means = single = 0
    for _ in range(n_sim):
        data = _replicated_null(rng)
        naive += _additive_anova_p(data) < alpha
        means += _additive_anova_p(design.image_means(data)) < alpha
        single += _additive_anova_p(data[data["model"].isin(["baseline", "m-r1"])]) < alpha
    band = _upper_band(alpha, n_sim)
    assert means / n_sim <= band and single / n_sim <= band
    assert naive / n_sim > 2 * alpha  # what the old design did: standard errors shrink with the replicates


@pytest.mark.filterwarnings("ignore")
def test_image_means_find_a_planted_method_effect():
    rng = np.random.default_rng(7)
    data = _replicated_null(rng, n_images=30)
    data.loc[data["group"] == "G", "value"] += 0.15
    fit = fit_group_means_lmm(design.image_means(data), groups=["G", AVG])
    assert fit.n_obs == 60 and _contrast_p(fit) < 1e-4


# ------------------------------------------------------------------ randomization: the threshold is an estimate


def test_welch_keeps_the_nominal_rate_when_the_threshold_is_estimated_but_one_sample_does_not():
    """Null: the maps are exactly as similar as two unrelated images' maps; the threshold is the mean of 50
    pair SSIMs with sd 0.2 (Table S1 magnitude), the images' SSIMs have sd 0.05 over 16 images."""
    rng = np.random.default_rng(11)
    n_sim, alpha, true = 2000, 0.05, 0.3
    welch = one_sample = 0
    for _ in range(n_sim):
        pairs = rng.normal(true, 0.2, 50)
        values = rng.normal(true, 0.05, 16)
        args = (values, pairs.mean(), pairs.std(ddof=1), 50)
        welch += degradation_test(*args, "welch")["p_value"] < alpha
        one_sample += degradation_test(*args, "one_sample")["p_value"] < alpha
    assert welch / n_sim <= _upper_band(alpha, n_sim)
    assert one_sample / n_sim > 3 * alpha


def test_welch_finds_a_planted_degradation_and_reports_power():
    rng = np.random.default_rng(12)
    pairs = rng.normal(0.3, 0.2, 50)
    values = rng.normal(0.1, 0.05, 16)
    res = degradation_test(values, pairs.mean(), pairs.std(ddof=1), 50, "welch")
    assert res["p_value"] < 1e-4 and res["ci_high"] < 0
    # a 0.03 drop on 16 images is below the minimum detectable effect: FAIL means "not shown"
    small = degradation_test(rng.normal(0.27, 0.05, 16), pairs.mean(), pairs.std(ddof=1), 50, "welch")
    assert small["mde"] > 0.03


# ------------------------------------------------------------------ trained vs random: Holm over planned contrasts


def _fit(means, se=0.02, df=100.0):
    k = len(means)
    return GroupMeansFit(
        groups=[f"g{i}" for i in range(k)], means=np.asarray(means, float), cov=se**2 * np.eye(k), df=df, n_subjects=40
    )


def test_holm_contrasts_match_r_p_adjust_and_hand_computed_intervals():
    fit = _fit([0.50, 0.40, 0.50, 0.47, 0.50, 0.499, 0.5, 0.43])  # contrasts g0-g1, g2-g3, g4-g5, g6-g7
    contrasts = {"a": ("g0", "g1"), "b": ("g2", "g3"), "c": ("g4", "g5"), "d": ("g6", "g7")}
    res = holm_contrasts(fit, contrasts, 0.05).set_index("contrast")
    se = np.sqrt(2) * 0.02
    raw = {k: 2 * stats.t.sf(abs(v) / se, 100) for k, v in {"a": 0.1, "b": 0.03, "c": 0.001, "d": 0.07}.items()}
    for k, p in raw.items():
        assert res.loc[k, "p"] == pytest.approx(p, rel=1e-10)
    # R: p.adjust(c(...), "holm"), written out: sorted p times (m, m-1, ...), cumulative max, capped at 1
    order = sorted(raw, key=raw.get)
    expect, running = {}, 0.0
    for j, k in enumerate(order):
        running = max(running, min(1.0, (4 - j) * raw[k]))
        expect[k] = running
    for k in raw:
        assert res.loc[k, "p_adj"] == pytest.approx(expect[k], rel=1e-10)
    ref = multipletests(list(raw.values()), method="holm")[1]
    assert list(res.loc[list(raw), "p_adj"]) == pytest.approx(list(ref))
    # intervals agree with the step-down decisions
    assert ((res["ci_low"] > 0) | (res["ci_high"] < 0)).tolist() == res["reject"].tolist()
    assert res.loc["a", "reject"] and res.loc["d", "reject"] and not res.loc["c", "reject"]
    half_a = stats.t.ppf(1 - 0.05 / 4 / 2, 100) * se  # smallest p: level alpha / m
    assert res.loc["a", "ci_high"] - res.loc["a", "estimate"] == pytest.approx(half_a)


def test_holm_is_less_conservative_than_tukey_over_all_groups():
    """8 planned contrasts among 16 groups: a contrast with t = 3.2 that Tukey (120 pairs) misses, Holm finds."""
    means = np.full(16, 0.5)
    means[0] += 3.2 * np.sqrt(2) * 0.02
    fit = _fit(means, se=0.02, df=300.0)
    contrasts = {f"M{k}": (f"g{2 * k}", f"g{2 * k + 1}") for k in range(8)}
    holm = holm_contrasts(fit, contrasts, 0.05).set_index("contrast")
    tukey = tukey_pairwise(fit, 0.05).set_index(["group1", "group2"])
    assert holm.loc["M0", "reject"] and holm.loc["M0", "p_adj"] == pytest.approx(8 * 2 * stats.t.sf(3.2, 300))
    assert tukey.loc[("g0", "g1"), "p_adj"] > 0.05
    assert not holm.drop("M0")["reject"].any()


def test_trained_vs_random_labels_its_adjustment():
    from saliency_trust.stats.pass_fail import trained_vs_random

    rng = np.random.default_rng(3)
    rows = []
    for i in range(12):
        base = 0.1 * rng.standard_normal()
        for m, drop in (("M0", 0.3), ("M1", 0.0)):
            trained = 0.5 + base + 0.05 * rng.standard_normal()
            rows.append((f"i{i}", "m-r1", m, "trained", "pr_auc", trained))
            rows.append((f"i{i}", "m-r1", m, "randomized", "pr_auc", trained - drop + 0.05 * rng.standard_normal()))
    data = pd.DataFrame(rows, columns=["image_id", "model", "method", "weights", "metric", "value"])
    holm, _ = trained_vs_random(data, "m-r1", ["M0", "M1"], "pr_auc", 0.05, adjust="holm")
    tukey, _ = trained_vs_random(data, "m-r1", ["M0", "M1"], "pr_auc", 0.05, adjust="tukey")
    h, t = holm.set_index("method"), tukey.set_index("method")
    assert h.loc["M0", "verdict"] == "PASS" and h.loc["M1", "verdict"] == "FAIL"
    assert h.loc["M0", "adjustment"] == "holm (2 planned contrasts)" and t.loc["M0", "adjustment"] == "tukey (4 groups)"
    assert h.loc["M0", "estimate"] == pytest.approx(t.loc["M0", "estimate"])


# ------------------------------------------------------------------ vs LOW: each method's own variance


def test_one_sample_low_test_equals_scipy_and_gives_a_one_sided_bound():
    rng = np.random.default_rng(4)
    rows = pd.DataFrame(
        {"group": ["A"] * 12 + ["B"] * 12, "value": np.r_[rng.normal(0.6, 0.05, 12), rng.normal(0.5, 0.3, 12)]}
    )
    t = above_constant_one_sample(rows, ["A", "B"], 0.5, 0.05, "repeatability", "LOW", "ssim", ["p"])
    t = t.set_index("method")
    for g in ("A", "B"):
        v = rows.loc[rows.group == g, "value"]
        ref = stats.ttest_1samp(v, 0.5, alternative="greater")
        assert t.loc[g, "p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
        assert t.loc[g, "df"] == 11 and t.loc[g, "ci_high"] == np.inf
        assert t.loc[g, "ci_low"] == pytest.approx(v.mean() - 0.5 - stats.t.ppf(0.95, 11) * v.std(ddof=1) / np.sqrt(12))
        assert (t.loc[g, "ci_low"] > 0) == (t.loc[g, "verdict"] == "PASS")
    assert list(t.reset_index().columns) == PASS_FAIL_COLUMNS


@pytest.mark.filterwarnings("ignore")
def test_pooled_variance_against_low_inflates_a_noisy_method_but_its_own_variance_does_not():
    """Null for the noisy method (true SSIM 0.5, sd 0.25) beside a precise one (sd 0.02)."""
    rng = np.random.default_rng(5)
    n_sim, alpha = 100, 0.05
    own = pooled = 0
    for _ in range(n_sim):
        rows = pd.DataFrame(
            {
                "image_id": [f"i{i}" for i in range(20)] * 2,
                "group": ["noisy"] * 20 + ["calm"] * 20,
                "value": np.r_[rng.normal(0.5, 0.25, 20), rng.normal(0.8, 0.02, 20)],
            }
        )
        own += above_constant_one_sample(rows, ["noisy"], 0.5, alpha, "r", "LOW", "ssim", []).p_value.iloc[0] < alpha
        fit = fit_group_means_lmm(rows, groups=["noisy", "calm"])
        pooled += above_constant(fit, ["noisy"], 0.5, alpha, "r", "LOW", "ssim", []).p_value.iloc[0] < alpha
    assert own / n_sim <= _upper_band(alpha, n_sim)
    assert pooled / n_sim > 2 * alpha


# ------------------------------------------------------------------ vs high: 'better' is the paper's rule


def _similarity_rows(rng, n=30):
    rows = []
    for i in range(n):
        base = 0.03 * rng.standard_normal()
        for method, level in (("same", 0.70), ("above", 0.85)):
            rows.append(
                (f"i{i}", "repeatability", "a-r1", "a-r2", method, "ssim", level + base + 0.05 * rng.standard_normal())
            )
        rows.append(
            (f"i{i}", "repeatability", "unet-r1", "unet-r2", "UNET", "ssim", 0.70 + base + 0.05 * rng.standard_normal())
        )
    return pd.DataFrame(rows, columns=["image_id", "criterion", "model_a", "model_b", "method", "metric", "value"])


def test_similarity_vs_high_defaults_to_the_papers_better_rule():
    sim = _similarity_rows(np.random.default_rng(8))
    strict, _ = similarity_verdicts(sim, "repeatability", ["same", "above"], "UNET", 0.05, ["a-r1", "a-r2"])
    lenient, _ = similarity_verdicts(
        sim,
        "repeatability",
        ["same", "above"],
        "UNET",
        0.05,
        ["a-r1", "a-r2"],
        DecisionRules(similarity_vs_high="not_worse"),
    )
    s = strict[strict.baseline == "UNET"].set_index("method")
    le = lenient[lenient.baseline == "UNET"].set_index("method")
    assert DecisionRules().similarity_vs_high == "better"
    assert s.loc["same", "verdict"] == "FAIL" and le.loc["same", "verdict"] == "PASS"  # merely not worse
    assert s.loc["above", "verdict"] == "PASS" and le.loc["above", "verdict"] == "PASS"
    notes = " ".join(table_notes(strict, 0.05))
    assert "PASS when significantly better (stats.rules.similarity_vs_high" in notes


# ------------------------------------------------------------------ controls and notes


def _utility_long(rng, n=24):
    rows = []
    for i in range(n):
        base = 0.3 + 0.05 * rng.standard_normal()
        rows.append((f"i{i}", "baseline", AVG, "pr_auc", "trained", base))
        rows.append((f"i{i}", "baseline", "UNET", "pr_auc", "trained", base + 0.4))
        for model in ("a-r1", "a-r2"):
            rows.append((f"i{i}", model, "GOOD", "pr_auc", "trained", base + 0.2 + 0.03 * rng.standard_normal()))
            rows.append((f"i{i}", model, "EDGE", "pr_auc", "trained", base + 0.01 * rng.standard_normal()))
        rows.append((f"i{i}", "a-r1", "GOOD", "pr_auc", "randomized", base + 0.03 * rng.standard_normal()))
        rows.append((f"i{i}", "a-r1", "EDGE", "pr_auc", "randomized", base + 0.01 * rng.standard_normal()))
    return pd.DataFrame(rows, columns=["image_id", "model", "method", "metric", "weights", "value"])


def test_controls_are_decided_apart_and_marked():
    rng = np.random.default_rng(9)
    utility = _utility_long(rng)
    q_methods, _, methods_table, note = decide(
        utility, ["a-r1", "a-r2"], ["GOOD"], "pr_auc", 0.05, randomized_model="a-r1", high="UNET"
    )
    q_controls, _, controls_table, _ = decide(
        utility, ["a-r1", "a-r2"], ["EDGE"], "pr_auc", 0.05, randomized_model="a-r1", high="UNET", control=True
    )
    assert not methods_table["control"].any() and controls_table["control"].all()
    assert set(methods_table["models"]) == {"a-r1"}  # the paper's design: the first replicate
    assert "one model and one model pair per criterion" in note
    table = pd.concat([methods_table, controls_table], ignore_index=True)
    md = pass_fail_markdown(
        table, pd.DataFrame({"model": ["a-r1"], "val_auc": [0.9], "test_auc": [0.9]}), 0.05, design_note=note
    )
    assert "| EDGE (control) |" in md and "model-independent control maps (EDGE" in md
    # the control's trained vs random utility: no difference, so it FAILs (the criterion at work)
    assert q_controls["utility_trained_vs_random"].set_index("method").loc["EDGE", "verdict"] == "FAIL"
    assert q_methods["utility_trained_vs_random"].set_index("method").loc["GOOD", "verdict"] == "PASS"


def test_low_power_fails_are_marked_and_explained():
    rows = pd.DataFrame(
        {
            "method": ["G", "G"],
            "criterion": ["randomization", "utility"],
            "baseline": ["threshold", "AVG"],
            "estimate": [-0.02, 0.1],
            "p_value": [0.3, 0.2],
            "verdict": ["FAIL", "FAIL"],
            "se": 0.02,
            "ci_low": [-np.inf, -0.1],
            "ci_high": [0.01, 0.3],
            "metric": "ssim",
            "models": "m",
            "n_images": [16, 200],
            "converged": True,
            "test": ["Welch two-sample t, one-sided", "mixed model"],
            "adjustment": "none",
            "df": 30.0,
            "mde": [0.06, 0.05],
            "control": False,
        }
    )
    md = pass_fail_markdown(
        rows, pd.DataFrame(columns=["model", "val_auc", "test_auc"]), 0.05, options=StatsOptions(small_n=30)
    )
    assert "FAIL† (-0.020, p=0.300)" in md and "FAIL (+0.100, p=0.200)" in md
    assert "fewer than 30 images (stats.small_n): power is low" in md and "0.060" in md
    assert "n = 16 images" in md and "Welch two-sample t-test" in md


def test_stats_options_validate_their_keys():
    with pytest.raises(ValueError, match="stats.low_test"):
        StatsOptions(low_test="z")
    with pytest.raises(ValueError, match="stats.trained_vs_random_adjust"):
        StatsOptions(trained_vs_random_adjust="bonferroni")
    with pytest.raises(ValueError, match="stats.pooling"):
        StatsOptions(pooling="rows")
