"""Linear mixed-effects model with Tukey-adjusted pairwise comparisons (docs/criteria.md).

Arun et al. fitted ``score ~ group + (1 | image)`` with lme4 and compared groups
with Tukey's HSD (multcomp). Here the model is fitted by REML with statsmodels
``MixedLM`` in the cell-means parameterisation (one fixed effect per group), so
the fixed effects are the group means and their covariance comes from the fit.
Each pairwise difference ``c'beta`` gets ``se = sqrt(c' V c)`` and a single-step
Tukey adjustment from the studentized range distribution (scipy):
``p = P(Q_{k, df} >= sqrt(2) |t|)``. The error degrees of freedom are those of
the randomized block design, ``n_obs - k - (n_images - 1)``, which equals
``(k - 1)(n - 1)`` for a complete balanced design (the Kenward-Roger value there).

Convergence is checked, never ignored: every optimizer in :data:`OPTIMIZERS` is
run and the fit with the highest REML log-likelihood among those that converged
without any warning is kept; the result records which optimizer that was, or
that none converged cleanly, with the warnings.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy.stats import studentized_range

OPTIMIZERS = ("bfgs", "lbfgs", "powell", "nm")
# statsmodels warns "The MLE may be on the boundary" whenever a variance component is below 0.01 in
# absolute terms, a scale-dependent heuristic that fires on sound fits of scores in [0, 1]; a real
# boundary (zero image variance) is a legitimate REML estimate, so this warning alone is not a failure.
BOUNDARY_HEURISTIC = "may be on the boundary of the parameter space"


@dataclass
class GroupMeansFit:
    """Group means with their covariance and error degrees of freedom."""

    groups: list[str]
    means: np.ndarray
    cov: np.ndarray
    df: float
    converged: bool = True
    optimizer: str = ""
    messages: list[str] = field(default_factory=list)
    n_obs: int = 0
    n_subjects: int = 0
    subject_variance: float = float("nan")
    residual_variance: float = float("nan")


def fit_group_means_lmm(
    data: pd.DataFrame,
    value: str = "value",
    group: str = "group",
    subject: str = "image_id",
    groups: list[str] | None = None,
) -> GroupMeansFit:
    """REML fit of ``value ~ 0 + group + (1 | subject)``; one mean per group."""
    data = data.dropna(subset=[value])
    order = list(groups) if groups is not None else sorted(data[group].unique())
    missing = [g for g in order if not (data[group] == g).any()]
    if missing:
        raise ValueError(f"no observations for group(s) {missing}")
    data = data[data[group].isin(order)]
    exog = pd.DataFrame({g: (data[group] == g).astype(float).to_numpy() for g in order})
    endog = data[value].to_numpy(dtype=float)
    subjects = data[subject].astype(str).to_numpy()
    k, n_obs, n_subj = len(order), len(endog), len(np.unique(subjects))
    model = sm.MixedLM(endog, exog, groups=subjects)
    fits: list[tuple[bool, float, str, object]] = []  # (clean, REML log-likelihood, optimizer, result)
    attempts: list[str] = []
    for opt in OPTIMIZERS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = model.fit(reml=True, method=opt)
            except (np.linalg.LinAlgError, ValueError) as err:
                attempts.append(f"{opt}: {err}")
                continue
        msgs = sorted(
            {f"{w.category.__name__}: {w.message}" for w in caught if BOUNDARY_HEURISTIC not in str(w.message)}
        )
        finite = np.all(np.isfinite(res.fe_params)) and np.all(np.isfinite(res.cov_params())) and np.isfinite(res.llf)
        clean = bool(res.converged) and finite and not msgs
        if not clean:
            attempts.append(
                f"{opt}: " + ("; ".join(msgs) or ("not converged" if not res.converged else "non-finite estimates"))
            )
        fits.append((clean, float(res.llf) if np.isfinite(res.llf) else -np.inf, opt, res))
    if not fits:
        raise RuntimeError("mixed model could not be fitted: " + " | ".join(attempts))
    # An optimizer can stop at a poor point and still report convergence (seen with lbfgs at a
    # zero variance component), so every optimizer is run and the best clean REML fit is kept.
    converged, _, used, result = max(fits, key=lambda f: (f[0], f[1]))
    cov = np.asarray(result.cov_params())[:k, :k]
    return GroupMeansFit(
        groups=order,
        means=np.asarray(result.fe_params)[:k],
        cov=cov,
        df=float(max(n_obs - k - (n_subj - 1), 1)),
        converged=converged,
        optimizer=used,
        messages=attempts,
        n_obs=n_obs,
        n_subjects=n_subj,
        subject_variance=float(np.asarray(result.cov_re).ravel()[0]),
        residual_variance=float(result.scale),
    )


def tukey_critical(k: int, df: float, alpha: float = 0.05) -> float:
    """Critical |t| of single-step Tukey comparisons among ``k`` groups: q(1 - alpha; k, df) / sqrt(2)."""
    return float(studentized_range.ppf(1 - alpha, k, df)) / np.sqrt(2)


def tukey_pairwise(fit: GroupMeansFit, alpha: float = 0.05) -> pd.DataFrame:
    """All pairwise differences ``group1 - group2`` with single-step Tukey p-values and CIs."""
    k = len(fit.groups)
    if k < 2:
        raise ValueError("Tukey comparisons need at least two groups")
    t_crit = tukey_critical(k, fit.df, alpha)
    rows = []
    for i, j in itertools.combinations(range(k), 2):
        c = np.zeros(k)
        c[i], c[j] = 1.0, -1.0
        est = float(c @ fit.means)
        se = float(np.sqrt(max(c @ fit.cov @ c, 0.0)))
        t = est / se if se > 0 else np.inf * np.sign(est) if est else 0.0
        p = float(studentized_range.sf(np.sqrt(2) * abs(t), k, fit.df)) if np.isfinite(t) else 0.0
        half = t_crit * se
        rows.append(
            {
                "group1": fit.groups[i],
                "group2": fit.groups[j],
                "estimate": est,
                "se": se,
                "t": t,
                "p_adj": min(max(p, 0.0), 1.0),
                "ci_low": est - half,
                "ci_high": est + half,
            }
        )
    return pd.DataFrame(rows)


def compare_to_reference(fit: GroupMeansFit, reference: str, alpha: float = 0.05) -> pd.DataFrame:
    """Tukey comparisons of every group against ``reference`` (estimate = group - reference).

    The adjustment covers the whole family of pairwise comparisons, as Tukey's HSD does.
    """
    pairs = tukey_pairwise(fit, alpha)
    rows = []
    for _, r in pairs.iterrows():
        if reference not in (r.group1, r.group2):
            continue
        flip = r.group1 == reference
        rows.append(
            {
                "group": r.group2 if flip else r.group1,
                "reference": reference,
                "estimate": -r.estimate if flip else r.estimate,
                "se": r.se,
                "p_adj": r.p_adj,
                "ci_low": -r.ci_high if flip else r.ci_low,
                "ci_high": -r.ci_low if flip else r.ci_high,
            }
        )
    return pd.DataFrame(rows)
