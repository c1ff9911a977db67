"""Is a randomized model's map degraded? One-sided tests per step (Arun et al., "Cascading randomization";
Adebayo et al. 2018).

At each randomization step the per-image SSIM between the randomized and the
trained map is compared with the degradation threshold of that (model,
method), the mean SSIM of ``n_pairs`` random pairs of different images'
trained maps (:mod:`saliency_trust.metrics.randomization`). H1: the randomized
maps are less similar to the trained ones than two unrelated images' maps are.

The threshold is itself an estimate (the mean of 50 SSIMs, with a spread that
Arun et al.'s Table S1 shows reaching 0.2), so by default
(``randomization.test: welch``) the per-image SSIMs are compared with the
pairs' SSIMs by a two-sample t-test with unequal variances (Welch,
Welch-Satterthwaite degrees of freedom, scipy's ``ttest_ind_from_stats``).
``one_sample`` treats the threshold as a known constant (a one-sample t-test),
which ignores its uncertainty and overstates the evidence.

Every row also carries the one-sided upper confidence bound of the difference
(mean SSIM - threshold) that matches the decision, and the smallest drop the
test could detect with 80 % power (``mde``): a FAIL on few images means the
drop was not shown, not that the maps barely change. The tests are per step
and unadjusted; the PASS/FAIL decision uses the last cascading step (every
block re-initialized) only.

Re-initialization draws (``randomization.draws``): one random re-initialization
is one sample of the randomized weights, and a verdict about the method must
hold for the next sample too. With several seeded draws the per-image SSIMs
form an images x draws table, modelled as crossed random effects
(SSIM = mu + image + draw + residual); the variance of the grand mean is
estimated from the two-way ANOVA mean squares,
(MS_image + MS_draw - MS_residual) / (images x draws), with negative variance
components set to zero, and its degrees of freedom by Satterthwaite's
approximation (for a balanced table this is the REML estimate of a crossed
linear mixed model). An SSIM drop that lives in one draw only inflates
MS_draw, which has draws - 1 degrees of freedom, and is not called significant.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

TESTS = ("welch", "one_sample")
POWER = 0.8
TEST_COLUMNS = [
    "model",
    "method",
    "mode",
    "step",
    "block",
    "n_images",
    "n_draws",
    "mean_ssim",
    "sd",
    "sd_image",
    "sd_draw",
    "threshold",
    "threshold_sd",
    "threshold_n",
    "test",
    "estimate",
    "se",
    "df",
    "statistic",
    "p_value",
    "ci_high",
    "mde",
    "below",
]


def min_detectable_effect(se: float, df: float, critical: float, power: float = POWER) -> float:
    """Smallest true difference a test with critical value ``critical`` (on the t scale) detects with
    probability ``power``: (critical + t_power) x se (the usual normal-approximation formula on t(df))."""
    if not np.isfinite(se) or se <= 0:
        return 0.0 if se == 0 else float("nan")
    return float((critical + stats.t.ppf(power, max(df, 1.0))) * se)


def crossed_mean_variance(values) -> dict:
    """Grand mean of an images x draws table under crossed random effects, its variance and Satterthwaite df.

    y_ij = mu + a_i + b_j + e_ij (a: image, b: draw). With I images and J draws
    the ANOVA mean squares have expectations E[MS_a] = s_e + J s_a,
    E[MS_b] = s_e + I s_b, E[MS_e] = s_e, and Var(mean) = s_a / I + s_b / J +
    s_e / (I J). The components are estimated by moments, negative ones set
    to zero (REML's boundary), and Var(mean) is the matching linear combination
    of mean squares; df = (sum c_k MS_k)^2 / sum (c_k MS_k)^2 / df_k. With one
    draw this is the one-sample case: Var = s^2 / I, df = I - 1.
    """
    y = np.asarray(values, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    n_img, n_draw = y.shape
    mean = float(y.mean())
    if n_draw == 1:
        ms_a = float(y[:, 0].var(ddof=1)) if n_img > 1 else 0.0
        return {
            "mean": mean,
            "var": ms_a / n_img,
            "df": float(n_img - 1),
            "var_image": ms_a,
            "var_draw": 0.0,
            "var_residual": 0.0,
        }
    row, col = y.mean(axis=1), y.mean(axis=0)
    df_a, df_b, df_e = n_img - 1, n_draw - 1, (n_img - 1) * (n_draw - 1)
    ms_a = n_draw * float(((row - mean) ** 2).sum()) / df_a
    ms_b = n_img * float(((col - mean) ** 2).sum()) / df_b
    ms_e = float(((y - row[:, None] - col[None, :] + mean) ** 2).sum()) / df_e
    # Var(mean) x I J = J s_a + I s_b + s_e; each component's moment estimate floored at zero
    coef = {"a": 0.0, "b": 0.0, "e": 1.0}
    if ms_a > ms_e:
        coef["a"] += 1.0
        coef["e"] -= 1.0
    if ms_b > ms_e:
        coef["b"] += 1.0
        coef["e"] -= 1.0
    terms = [(coef["a"] * ms_a, df_a), (coef["b"] * ms_b, df_b), (coef["e"] * ms_e, df_e)]
    total = sum(t for t, _ in terms)
    denom = sum(t**2 / d for t, d in terms if t != 0)
    df = float(total**2 / denom) if denom > 0 else float(df_a)
    return {
        "mean": mean,
        "var": total / (n_img * n_draw),
        "df": df,
        "var_image": max(ms_a - ms_e, 0.0) / n_draw,
        "var_draw": max(ms_b - ms_e, 0.0) / n_img,
        "var_residual": ms_e,
    }


def degradation_test(
    values, threshold: float, threshold_sd: float, threshold_n: int, test: str = "welch", alpha: float = 0.05
) -> dict:
    """H1: mean(values) < threshold. ``values``: per-image SSIMs (N) or per image and re-initialization draw
    (N x D, :func:`crossed_mean_variance`). Returns estimate, se, df, statistic, one-sided p, the one-sided upper
    (1 - alpha) bound of the difference and the minimum detectable drop."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if test not in TESTS:
        raise ValueError(f"randomization.test: '{test}' is not one of {list(TESTS)}")
    if n < 2:
        raise ValueError(f"a degradation test needs at least 2 images, got {n}")
    if values.ndim == 2 and values.shape[1] > 1 and not np.isfinite(values).all():
        raise ValueError("the images x draws SSIM table has missing values: every draw must explain the same images")
    crossed = crossed_mean_variance(values)
    mean, sd = crossed["mean"], float(values.std(ddof=1))  # sd of every image (x draw) value
    est = mean - threshold
    v1, df1 = crossed["var"], crossed["df"]
    if test == "welch":
        if threshold_n < 2:
            raise ValueError(f"the Welch test needs the SSIMs of at least 2 threshold pairs, got {threshold_n}")
        v2 = threshold_sd**2 / threshold_n
        se = float(np.sqrt(v1 + v2))
        df = float((v1 + v2) ** 2 / (v1**2 / df1 + v2**2 / (threshold_n - 1))) if se > 0 else df1
    else:
        se, df = float(np.sqrt(v1)), df1
    if se > 0:
        statistic = est / se
        p = float(stats.t.cdf(statistic, df))
    else:  # no spread anywhere: the sign decides, with certainty
        statistic = -np.inf if est < 0 else (np.inf if est > 0 else 0.0)
        p = 0.0 if est < 0 else 1.0
    crit = float(stats.t.ppf(1 - alpha, df))
    return {
        "estimate": est,
        "se": se,
        "df": df,
        "statistic": float(statistic),
        "p_value": p,
        "ci_high": est + crit * se,
        "mde": min_detectable_effect(se, df, crit),
        "mean_ssim": mean,
        "sd": sd,
        "sd_image": float(np.sqrt(crossed["var_image"])),
        "sd_draw": float(np.sqrt(crossed["var_draw"])),
    }


def draw_table(group: pd.DataFrame) -> np.ndarray:
    """Images x draws SSIM table of one (model, method, mode, step); a table without a ``draw`` column is one draw.
    Raises, naming the image, when a draw lacks an image another draw has."""
    if "draw" not in group or group["draw"].nunique() == 1:
        return group["value"].to_numpy(dtype=np.float64)
    wide = group.pivot_table(index="image_id", columns="draw", values="value", aggfunc="first")
    if wide.isna().any().any():
        image = wide.index[wide.isna().any(axis=1)][0]
        raise ValueError(
            f"image '{image}' lacks an SSIM in some re-initialization draw: the draws must explain the same images"
        )
    return wide.to_numpy(dtype=np.float64)


def randomization_tests(
    scores: pd.DataFrame, thresholds: pd.DataFrame, alpha: float = 0.05, test: str = "welch"
) -> pd.DataFrame:
    """One row per (model, method, mode, step): mean SSIM, threshold, the test and whether it is below."""
    ssim = scores[scores["metric"] == "ssim"]
    thr = thresholds.set_index(["model", "method"])
    rows = []
    for (model, method, mode, step, block), group in ssim.groupby(
        ["model", "method", "mode", "step", "block"], sort=True
    ):
        if (model, method) not in thr.index:
            raise KeyError(f"no degradation threshold for model {model}, method {method}")
        t = thr.loc[(model, method)]
        table = draw_table(group)
        res = degradation_test(table, float(t["threshold"]), float(t["sd"]), int(t["n_pairs"]), test, alpha)
        rows.append(
            {
                "model": model,
                "method": method,
                "mode": mode,
                "step": int(step),
                "block": block,
                "n_images": len(table),
                "n_draws": table.shape[1] if table.ndim == 2 else 1,
                "threshold": float(t["threshold"]),
                "threshold_sd": float(t["sd"]),
                "threshold_n": int(t["n_pairs"]),
                "test": test,
                **res,
                "below": bool(res["p_value"] < alpha),
            }
        )
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def run_randomization_tests(scores_path, thresholds_path, alpha: float, out_path, test: str = "welch") -> None:
    """Stage entry: the per-step test table."""
    from saliency_trust.io import write_csv

    scores = pd.read_csv(scores_path, dtype={"image_id": str})
    thresholds = pd.read_csv(thresholds_path)
    write_csv(randomization_tests(scores, thresholds, alpha, test), out_path)
