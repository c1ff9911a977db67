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
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

TESTS = ("welch", "one_sample")
POWER = 0.8
TEST_COLUMNS = ["model", "method", "mode", "step", "block", "n_images", "mean_ssim", "sd", "threshold",
                "threshold_sd", "threshold_n", "test", "estimate", "se", "df", "statistic", "p_value", "ci_high",
                "mde", "below"]


def min_detectable_effect(se: float, df: float, critical: float, power: float = POWER) -> float:
    """Smallest true difference a test with critical value ``critical`` (on the t scale) detects with
    probability ``power``: (critical + t_power) x se (the usual normal-approximation formula on t(df))."""
    if not np.isfinite(se) or se <= 0:
        return 0.0 if se == 0 else float("nan")
    return float((critical + stats.t.ppf(power, max(df, 1.0))) * se)


def degradation_test(values, threshold: float, threshold_sd: float, threshold_n: int, test: str = "welch",
                     alpha: float = 0.05) -> dict:
    """H1: mean(values) < threshold. Returns estimate, se, df, statistic, one-sided p, the one-sided upper
    (1 - alpha) bound of the difference and the minimum detectable drop."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if test not in TESTS:
        raise ValueError(f"randomization.test: '{test}' is not one of {list(TESTS)}")
    if n < 2:
        raise ValueError(f"a degradation test needs at least 2 images, got {n}")
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    est = mean - threshold
    if test == "welch":
        if threshold_n < 2:
            raise ValueError(f"the Welch test needs the SSIMs of at least 2 threshold pairs, got {threshold_n}")
        v1, v2 = sd**2 / n, threshold_sd**2 / threshold_n
        se = float(np.sqrt(v1 + v2))
        df = float((v1 + v2) ** 2 / (v1**2 / (n - 1) + v2**2 / (threshold_n - 1))) if se > 0 else float(n - 1)
    else:
        se, df = sd / np.sqrt(n), float(n - 1)
    if se > 0:
        statistic = est / se
        p = float(stats.t.cdf(statistic, df))
    else:  # no spread anywhere: the sign decides, with certainty
        statistic = -np.inf if est < 0 else (np.inf if est > 0 else 0.0)
        p = 0.0 if est < 0 else 1.0
    crit = float(stats.t.ppf(1 - alpha, df))
    return {"estimate": est, "se": se, "df": df, "statistic": float(statistic), "p_value": p,
            "ci_high": est + crit * se, "mde": min_detectable_effect(se, df, crit), "mean_ssim": mean, "sd": sd}


def randomization_tests(scores: pd.DataFrame, thresholds: pd.DataFrame, alpha: float = 0.05,
                        test: str = "welch") -> pd.DataFrame:
    """One row per (model, method, mode, step): mean SSIM, threshold, the test and whether it is below."""
    ssim = scores[scores["metric"] == "ssim"]
    thr = thresholds.set_index(["model", "method"])
    rows = []
    for (model, method, mode, step, block), group in ssim.groupby(["model", "method", "mode", "step", "block"],
                                                                  sort=True):
        if (model, method) not in thr.index:
            raise KeyError(f"no degradation threshold for model {model}, method {method}")
        t = thr.loc[(model, method)]
        res = degradation_test(group["value"].to_numpy(), float(t["threshold"]), float(t["sd"]), int(t["n_pairs"]),
                               test, alpha)
        rows.append({"model": model, "method": method, "mode": mode, "step": int(step), "block": block,
                     "n_images": len(group), "threshold": float(t["threshold"]), "threshold_sd": float(t["sd"]),
                     "threshold_n": int(t["n_pairs"]), "test": test, **res, "below": bool(res["p_value"] < alpha)})
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def run_randomization_tests(scores_path, thresholds_path, alpha: float, out_path, test: str = "welch") -> None:
    """Stage entry: the per-step test table."""
    from saliency_trust.io import write_csv

    scores = pd.read_csv(scores_path, dtype={"image_id": str})
    thresholds = pd.read_csv(thresholds_path)
    write_csv(randomization_tests(scores, thresholds, alpha, test), out_path)
