"""Is a randomized model's map degraded? One-sided tests per step (SPEC 6.2; Arun et al., "Cascading randomization").

At each randomization step the per-image SSIM between the randomized and the
trained map is tested against the degradation threshold of that (model,
method): a one-sided one-sample t-test, H1 "mean SSIM < threshold" (scipy's
``ttest_1samp(..., alternative="less")``). ``below`` is True when p < alpha. The
tests are per step and unadjusted; the PASS/FAIL decision uses the last
cascading step (every block re-initialized) only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

TEST_COLUMNS = ["model", "method", "mode", "step", "block", "n_images", "mean_ssim", "sd", "threshold",
                "statistic", "p_value", "below"]


def below_threshold_test(values: np.ndarray, threshold: float) -> tuple[float, float]:
    """(t statistic, one-sided p) of H1: mean(values) < threshold."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        raise ValueError(f"a one-sided test needs at least 2 images, got {len(values)}")
    if np.all(values == values[0]):  # no spread: the sign decides, with certainty
        mean = values[0]
        return (-np.inf, 0.0) if mean < threshold else (np.inf if mean > threshold else 0.0, 1.0)
    res = stats.ttest_1samp(values, threshold, alternative="less")
    return float(res.statistic), float(res.pvalue)


def randomization_tests(scores: pd.DataFrame, thresholds: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """One row per (model, method, mode, step): mean SSIM, threshold, t, p and whether it is below."""
    ssim = scores[scores["metric"] == "ssim"]
    thr = thresholds.set_index(["model", "method"])["threshold"]
    rows = []
    for (model, method, mode, step, block), group in ssim.groupby(["model", "method", "mode", "step", "block"],
                                                                  sort=True):
        if (model, method) not in thr.index:
            raise KeyError(f"no degradation threshold for model {model}, method {method}")
        threshold = float(thr[(model, method)])
        values = group["value"].to_numpy()
        t, p = below_threshold_test(values, threshold)
        rows.append((model, method, mode, int(step), block, len(values), float(values.mean()),
                     float(values.std(ddof=1)), threshold, t, p, bool(p < alpha)))
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def run_randomization_tests(scores_path, thresholds_path, alpha: float, out_path) -> None:
    """Stage entry: the per-step test table."""
    from saliency_trust.io import write_csv

    scores = pd.read_csv(scores_path, dtype={"image_id": str})
    thresholds = pd.read_csv(thresholds_path)
    write_csv(randomization_tests(scores, thresholds, alpha), out_path)
