"""PASS/FAIL decisions and the summary tables (Arun et al., Table 2 and "Statistical analysis").

Defaults are the paper's decisions; every deviation is a config option and the
table notes name the rules that decided each column (docs/criteria.md, "How to
read the PASS/FAIL table"). alpha is ``stats.alpha``; rules ``stats.rules``;
the design and tests ``stats.pooling``, ``stats.low_test``,
``stats.trained_vs_random_adjust`` and ``randomization.test``:

- **Utility vs AVG / vs high** [``better``]: one linear mixed model of the
  methods and both baselines, ``score ~ group + (1 | image)``, Tukey-adjusted
  two-sided comparisons (lme4 + multcomp in the paper); PASS when significantly
  higher. ``not_worse`` passes unless significantly lower.
- **Randomization**: PASS when the fully randomized model's per-image SSIM to
  the trained map is significantly below the degradation threshold; by default
  a Welch two-sample test against the threshold pairs' SSIMs
  (:mod:`saliency_trust.stats.randomization`).
- **Repeatability / Reproducibility vs LOW** [``low_ssim: 0.5``]: PASS when the
  mean per-image SSIM is significantly above 0.5: a one-sided one-sample t-test
  per method on its own variance (``low_test: one_sample``), with the matching
  one-sided lower confidence bound; ``mixed`` uses the pooled mixed model.
- **Repeatability / Reproducibility vs high** [``better``]: PASS when the method
  is significantly *better* than the U-Net / detector pair (the paper's Table 2:
  RSNA XRAI repeatability PASSES because it exceeded RetinaNet); ``not_worse``
  passes unless significantly worse.
- **Trained vs random utility** [``better``]: one planned contrast per method
  (trained - randomized model, same images) from one mixed model, Holm-adjusted
  over the methods (``trained_vs_random_adjust: holm``); ``tukey`` adjusts over
  every pair of the 2 x methods groups, which over-corrects planned contrasts.

Which models enter is :mod:`saliency_trust.stats.design` (one model / one pair by
default; per-image means over replicates when pooled). Control maps
(model-independent, e.g. EDGE) are decided by separate fits so that they never
change the methods' multiplicity family; they are rows marked as controls.

The long table keeps the contract ``method, criterion, baseline, estimate,
p_value, verdict`` plus the standard error, the confidence interval that
matches the decision (one-sided where the test is), the test, the
multiplicity adjustment, the degrees of freedom, the smallest effect
detectable with 80 % power (``mde``), the models, the number of images and the
fit's convergence. The Markdown, LaTeX and HTML tables have the layout of the
paper's Table 2.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from saliency_trust.stats import design
from saliency_trust.stats.mixed import (
    GroupMeansFit,
    compare_to_reference,
    fit_group_means_lmm,
    tukey_critical,
    tukey_pairwise,
)
from saliency_trust.stats.randomization import min_detectable_effect

log = logging.getLogger(__name__)

AVG = "AVG"
PASS_FAIL_COLUMNS = [
    "method",
    "criterion",
    "baseline",
    "estimate",
    "p_value",
    "verdict",
    "se",
    "ci_low",
    "ci_high",
    "metric",
    "models",
    "n_images",
    "converged",
    "test",
    "adjustment",
    "df",
    "mde",
    "control",
]
LOW = "LOW"  # SSIM 0.5, the low baseline of repeatability and reproducibility
LOW_SSIM = 0.5
RANDOM = "random"  # baseline name of the fully randomized model's maps (trained vs random utility)
THRESHOLD = "threshold"
HIGH = "high"  # role of the high baseline (U-Net or detector) in the Table 2 columns
LOW_POWER_MARK = "†"
TABLE2_COLUMNS = {
    ("utility", AVG): "Utility vs AVG",
    ("utility", HIGH): "Utility vs high",
    ("randomization", THRESHOLD): "Randomization",
    ("repeatability", LOW): "Repeatability vs LOW",
    ("repeatability", HIGH): "Repeatability vs high",
    ("reproducibility", LOW): "Reproducibility vs LOW",
    ("reproducibility", HIGH): "Reproducibility vs high",
}


RULES = ("better", "not_worse")
LOW_TESTS = ("one_sample", "mixed")
ADJUSTMENTS = ("holm", "tukey")


@dataclass(frozen=True)
class DecisionRules:
    """The PASS/FAIL rules of config ``stats.rules`` (docs/criteria.md)."""

    utility_vs_avg: str = "better"
    utility_vs_high: str = "better"
    trained_vs_random: str = "better"
    similarity_vs_high: str = "better"
    low_ssim: float = LOW_SSIM

    def __post_init__(self):
        for name in ("utility_vs_avg", "utility_vs_high", "trained_vs_random", "similarity_vs_high"):
            if getattr(self, name) not in RULES:
                raise ValueError(f"stats.rules.{name}: '{getattr(self, name)}' is not one of {list(RULES)}")
        if not -1.0 <= self.low_ssim <= 1.0:
            raise ValueError(f"stats.rules.low_ssim: {self.low_ssim} is outside the SSIM range [-1, 1]")

    @classmethod
    def from_config(cls, rules: dict | None) -> DecisionRules:
        return cls(**(rules or {}))


@dataclass(frozen=True)
class StatsOptions:
    """The design and test choices (config ``stats`` and the settings the notes must name).

    ``pooling``, ``low_test``, ``trained_vs_random_adjust`` and ``small_n`` change the analysis; the
    remaining fields only describe how the scores were made, for the table notes."""

    pooling: str = "none"
    low_test: str = "one_sample"
    trained_vs_random_adjust: str = "holm"
    small_n: int = 30
    similarity_maps: str = "processed"
    ssim_data_range: float = 1.0
    randomization_init: str = "truncated_normal"
    randomization_draws: int = 1

    def __post_init__(self):
        design.check_pooling(self.pooling)
        if self.low_test not in LOW_TESTS:
            raise ValueError(f"stats.low_test: '{self.low_test}' is not one of {list(LOW_TESTS)}")
        if self.trained_vs_random_adjust not in ADJUSTMENTS:
            raise ValueError(
                f"stats.trained_vs_random_adjust: '{self.trained_vs_random_adjust}' is not one of {list(ADJUSTMENTS)}"
            )

    @classmethod
    def from_config(cls, options: dict | None) -> StatsOptions:
        return cls(**(options or {}))


def describe_rule(rule: str) -> str:
    return "PASS when significantly better" if rule == "better" else "PASS unless significantly worse"


def baseline_role(baseline: str) -> str:
    """Table 2 role of a baseline name: AVG, LOW, threshold, or high (U-Net / detector)."""
    return baseline if baseline in (AVG, LOW, THRESHOLD) else HIGH


def _verdict(estimate: float, significant: bool, rule: str) -> str:
    if rule == "better":
        passed = estimate > 0 and significant
    elif rule == "not_worse":
        passed = not (estimate < 0 and significant)
    else:
        raise ValueError(f"unknown decision rule '{rule}'")
    return "PASS" if passed else "FAIL"


def utility_groups(
    utility: pd.DataFrame, models: list[str], methods: list[str], metric: str, high: str | None = None
) -> pd.DataFrame:
    """Rows of one utility metric for the methods of ``models``, the AVG baseline and (when given) the
    high baseline, with a ``group`` column; trained maps only."""
    sel = utility[utility["metric"] == metric]
    if "weights" in sel:  # randomized-model utility and the human reference are compared elsewhere
        sel = sel[sel["weights"] == "trained"]
    maps = sel[sel["model"].isin(models) & sel["method"].isin(methods)]
    base = sel[sel["method"] == AVG]
    if base.empty:
        raise ValueError(f"utility table has no {AVG} baseline rows for metric '{metric}'")
    absent = sorted(set(methods) - set(maps["method"]))
    if absent:
        raise ValueError(f"utility table has no rows for method(s) {absent} of models {models}")
    parts = [maps.assign(group=maps["method"]), base.assign(group=AVG)]
    if high:
        top = sel[(sel["method"] == high) & (sel["model"] == "baseline")]
        if top.empty:
            raise ValueError(f"utility table has no rows of the high baseline {high} for metric '{metric}'")
        parts.append(top.assign(group=high))
    return pd.concat(parts, ignore_index=True)


def versus_baseline(
    fit: GroupMeansFit, reference: str, alpha: float, criterion: str, rule: str, metric: str, models: list[str]
) -> pd.DataFrame:
    """PASS/FAIL rows of every group of ``fit`` against the group ``reference`` (Tukey-adjusted, two-sided).

    ``rule`` is ``better`` (PASS when significantly higher) or ``not_worse`` (PASS unless
    significantly lower).
    """
    comp = compare_to_reference(fit, reference, alpha)
    k = len(fit.groups)
    crit = tukey_critical(k, fit.df, alpha) if k > 1 else np.nan
    rows = [
        (
            r.group,
            criterion,
            reference,
            r.estimate,
            r.p_adj,
            _verdict(r.estimate, r.p_adj < alpha, rule),
            r.se,
            r.ci_low,
            r.ci_high,
            metric,
            ";".join(models),
            fit.n_subjects,
            fit.converged,
            "mixed model",
            f"tukey ({k} groups)",
            fit.df,
            min_detectable_effect(r.se, fit.df, crit),
            False,
        )
        for r in comp.itertuples()
    ]
    return pd.DataFrame(rows, columns=PASS_FAIL_COLUMNS)


def utility_vs_avg(
    fit: GroupMeansFit, alpha: float, metric: str, models: list[str], rule: str = "better"
) -> pd.DataFrame:
    """PASS/FAIL rows "Utility vs AVG" from a fitted mixed model whose groups include AVG."""
    return versus_baseline(fit, AVG, alpha, "utility", rule, metric, models)


def holm_contrasts(fit: GroupMeansFit, contrasts: dict[str, tuple[str, str]], alpha: float) -> pd.DataFrame:
    """Planned contrasts ``name: (group1, group2)`` of ``fit`` (estimate group1 - group2), two-sided t on the
    fit's degrees of freedom, Holm-adjusted over the family (statsmodels ``multipletests``, as R's
    ``p.adjust(method = "holm")``).

    The intervals match the step-down decisions: the j-th smallest p-value's contrast gets the
    (1 - alpha / (m - j + 1)) interval while hypotheses are rejected; from the first retained one on, every
    interval uses that step's level, so an interval excludes 0 exactly when Holm rejects."""
    names = list(contrasts)
    m = len(names)
    est, se = np.zeros(m), np.zeros(m)
    for k, name in enumerate(names):
        c = np.zeros(len(fit.groups))
        g1, g2 = contrasts[name]
        c[fit.groups.index(g1)], c[fit.groups.index(g2)] = 1.0, -1.0
        est[k], se[k] = c @ fit.means, np.sqrt(max(c @ fit.cov @ c, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, est / np.where(se > 0, se, 1), np.sign(est) * np.inf)
    p = np.where(np.isfinite(t), 2 * scipy_stats.t.sf(np.abs(t), fit.df), np.where(est != 0, 0.0, 1.0))
    reject, p_adj, _, _ = multipletests(p, alpha=alpha, method="holm")
    level = np.empty(m)
    order = np.argsort(p, kind="stable")
    stopped = None
    for j, idx in enumerate(order):
        step = alpha / (m - j)
        if stopped is None and not reject[idx]:
            stopped = step
        level[idx] = step if stopped is None else stopped
    half = scipy_stats.t.ppf(1 - level / 2, fit.df) * se
    mde = [min_detectable_effect(s, fit.df, scipy_stats.t.ppf(1 - alpha / (2 * m), fit.df)) for s in se]
    return pd.DataFrame(
        {
            "contrast": names,
            "estimate": est,
            "se": se,
            "t": t,
            "p": p,
            "p_adj": p_adj,
            "reject": reject,
            "ci_low": est - half,
            "ci_high": est + half,
            "mde": mde,
        }
    )


def trained_vs_random(
    utility: pd.DataFrame,
    model: str,
    methods: list[str],
    metric: str,
    alpha: float,
    rule: str = "better",
    adjust: str = "holm",
) -> tuple[pd.DataFrame, GroupMeansFit]:
    """Utility of ``model``'s trained maps against its fully randomized maps, per method (Arun et al.'s
    third question). One mixed model of the groups ``{method}|trained`` and ``{method}|random`` on the
    images explained at full randomization, random intercept per image; each method's planned contrast
    trained - random, Holm-adjusted over the methods (``adjust="holm"``) or Tukey-adjusted over every pair
    of groups (``adjust="tukey"``)."""
    sel = utility[(utility["metric"] == metric) & (utility["model"] == model) & utility["method"].isin(methods)]
    random = sel[sel["weights"] == "randomized"]
    if random.empty:
        raise ValueError(f"utility table has no randomized-model rows of model {model} for metric '{metric}'")
    trained = sel[(sel["weights"] == "trained") & sel["image_id"].isin(set(random["image_id"]))]
    absent = sorted(set(methods) - set(random["method"]) | set(methods) - set(trained["method"]))
    if absent:
        raise ValueError(f"utility table lacks trained or randomized rows of model {model} for method(s) {absent}")
    if adjust not in ADJUSTMENTS:
        raise ValueError(f"stats.trained_vs_random_adjust: '{adjust}' is not one of {list(ADJUSTMENTS)}")
    rows = pd.concat(
        [trained.assign(group=trained["method"] + "|trained"), random.assign(group=random["method"] + "|" + RANDOM)],
        ignore_index=True,
    )
    groups = [f"{m}|{w}" for m in methods for w in ("trained", RANDOM)]
    fit = fit_group_means_lmm(rows, groups=groups)
    out = []
    if adjust == "holm":
        res = holm_contrasts(fit, {m: (f"{m}|trained", f"{m}|{RANDOM}") for m in methods}, alpha).set_index("contrast")
        for m in methods:
            r = res.loc[m]
            out.append(
                (
                    m,
                    "utility",
                    RANDOM,
                    r.estimate,
                    r.p_adj,
                    _verdict(r.estimate, bool(r.reject), rule),
                    r.se,
                    r.ci_low,
                    r.ci_high,
                    metric,
                    model,
                    fit.n_subjects,
                    fit.converged,
                    "mixed model",
                    f"holm ({len(methods)} planned contrasts)",
                    fit.df,
                    r.mde,
                    False,
                )
            )
    else:
        pairs = tukey_pairwise(fit, alpha).set_index(["group1", "group2"])
        crit = tukey_critical(len(groups), fit.df, alpha)
        for m in methods:
            r = pairs.loc[(f"{m}|trained", f"{m}|{RANDOM}")]
            out.append(
                (
                    m,
                    "utility",
                    RANDOM,
                    r.estimate,
                    r.p_adj,
                    _verdict(r.estimate, r.p_adj < alpha, rule),
                    r.se,
                    r.ci_low,
                    r.ci_high,
                    metric,
                    model,
                    fit.n_subjects,
                    fit.converged,
                    "mixed model",
                    f"tukey ({len(groups)} groups)",
                    fit.df,
                    min_detectable_effect(r.se, fit.df, crit),
                    False,
                )
            )
    return pd.DataFrame(out, columns=PASS_FAIL_COLUMNS), fit


def _one_sided_row(group, criterion, baseline, est, p, se, df, t_crit, alpha, metric, models, n, converged, test):
    """One PASS_FAIL_COLUMNS row of a one-sided test against a constant: the (1 - alpha) lower bound, upper +inf."""
    verdict = "PASS" if p < alpha else "FAIL"
    low, mde = est - t_crit * se, min_detectable_effect(se, df, t_crit)
    return (
        group,
        criterion,
        baseline,
        est,
        p,
        verdict,
        se,
        low,
        np.inf,
        metric,
        ";".join(models),
        n,
        converged,
        test,
        "none",
        df,
        mde,
        False,
    )


def above_constant(
    fit: GroupMeansFit,
    groups: list[str],
    constant: float,
    alpha: float,
    criterion: str,
    baseline: str,
    metric: str,
    models: list[str],
) -> pd.DataFrame:
    """``low_test: mixed``: PASS when a group's mean is significantly above ``constant``: one-sided
    t = (mean - c) / se from the mixed model, on its error degrees of freedom; the interval is the matching
    one-sided (1 - alpha) lower bound (upper bound +inf)."""
    rows = []
    t_crit = float(scipy_stats.t.ppf(1 - alpha, fit.df))
    for g in groups:
        k = fit.groups.index(g)
        est = float(fit.means[k] - constant)
        se = float(np.sqrt(max(fit.cov[k, k], 0.0)))
        p = float(scipy_stats.t.sf(est / se, fit.df)) if se > 0 else (0.0 if est > 0 else 1.0)
        rows.append(
            _one_sided_row(
                g,
                criterion,
                baseline,
                est,
                p,
                se,
                fit.df,
                t_crit,
                alpha,
                metric,
                models,
                fit.n_subjects,
                fit.converged,
                "mixed model, one-sided",
            )
        )
    return pd.DataFrame(rows, columns=PASS_FAIL_COLUMNS)


def above_constant_one_sample(
    rows: pd.DataFrame,
    groups: list[str],
    constant: float,
    alpha: float,
    criterion: str,
    baseline: str,
    metric: str,
    models: list[str],
) -> pd.DataFrame:
    """``low_test: one_sample`` (default): per group, a one-sided one-sample t-test of the per-image values
    against ``constant`` (H1: mean > constant; scipy ``ttest_1samp``) on that group's own variance and
    n - 1 degrees of freedom, with the matching one-sided lower confidence bound."""
    out = []
    for g in groups:
        values = rows.loc[rows["group"] == g, "value"].to_numpy(dtype=float)
        n = len(values)
        if n < 2:
            raise ValueError(f"{criterion} of {g}: a one-sample test needs at least 2 images, got {n}")
        est, se, df = float(values.mean() - constant), float(values.std(ddof=1) / np.sqrt(n)), float(n - 1)
        if se > 0:
            p = float(scipy_stats.ttest_1samp(values, constant, alternative="greater").pvalue)
        else:  # no spread: the sign decides, with certainty
            p = 0.0 if est > 0 else 1.0
        t_crit = float(scipy_stats.t.ppf(1 - alpha, df))
        out.append(
            _one_sided_row(
                g,
                criterion,
                baseline,
                est,
                p,
                se,
                df,
                t_crit,
                alpha,
                metric,
                models,
                n,
                True,
                "one-sample t, one-sided",
            )
        )
    return pd.DataFrame(out, columns=PASS_FAIL_COLUMNS)


def similarity_verdicts(
    similarity: pd.DataFrame,
    criterion: str,
    methods: list[str],
    high: str | None,
    alpha: float,
    models: list[str],
    rules: DecisionRules = DecisionRules(),
    options: StatsOptions = StatsOptions(),
) -> tuple[pd.DataFrame, GroupMeansFit]:
    """Repeatability or reproducibility vs LOW (SSIM ``rules.low_ssim``) and vs the high baseline pair, from
    per-image SSIM.

    ``models`` are the primary architecture's replicates; the model pairs come from
    :func:`saliency_trust.stats.design.similarity_pairs` (one pair, or all pairs averaged per image when
    pooled); the high baseline's rows are its replicate pair.
    """
    sel = similarity[(similarity["criterion"] == criterion) & (similarity["metric"] == "ssim")]
    is_high = sel["method"] == high if high else pd.Series(False, index=sel.index)
    candidates = sel[~is_high & sel["method"].isin(methods)]
    available = list(dict.fromkeys(zip(candidates["model_a"], candidates["model_b"])))
    pairs = design.similarity_pairs(available, criterion, models, options.pooling)
    chosen = pd.Series(list(zip(candidates["model_a"], candidates["model_b"])), index=candidates.index).isin(pairs)
    maps = candidates[chosen]
    absent = sorted(set(methods) - set(maps["method"]))
    if absent:
        raise ValueError(f"similarity table has no {criterion} SSIM rows for method(s) {absent} of model pairs {pairs}")
    rows = pd.concat([maps, sel[is_high]], ignore_index=True).assign(group=lambda d: d["method"])
    rows = design.image_means(rows)
    groups = [*methods, *([high] if high and is_high.any() else [])]
    fit = fit_group_means_lmm(rows, groups=groups)
    pair_names = [f"{a}~{b}" for a, b in pairs]
    if options.low_test == "one_sample":
        table = above_constant_one_sample(rows, methods, rules.low_ssim, alpha, criterion, LOW, "ssim", pair_names)
    else:
        table = above_constant(fit, methods, rules.low_ssim, alpha, criterion, LOW, "ssim", pair_names)
    if len(groups) > len(methods):
        vs_high = versus_baseline(fit, high, alpha, criterion, rules.similarity_vs_high, "ssim", pair_names)
        table = pd.concat([table, vs_high], ignore_index=True)
    return table, fit


def randomization_verdicts(tests: pd.DataFrame, model: str, methods: list[str], alpha: float) -> pd.DataFrame:
    """Randomization rows from the per-step tests: the last cascading step of ``model``, per method."""
    sel = tests[(tests["model"] == model) & (tests["mode"] == "cascading")]
    rows = []
    for method in methods:
        m = sel[sel["method"] == method]
        if m.empty:
            raise ValueError(f"no cascading randomization test for model {model}, method {method}")
        last = m.loc[m["step"].idxmax()]
        test = "Welch two-sample t, one-sided" if last["test"] == "welch" else "one-sample t, one-sided"
        draws = int(last["n_draws"]) if "n_draws" in last and pd.notna(last["n_draws"]) else 1
        if draws > 1:  # the images x draws table as crossed random effects (stats/randomization.py)
            test += f", images x {draws} re-initialization draws crossed"
        rows.append(
            (
                method,
                "randomization",
                THRESHOLD,
                float(last["estimate"]),
                float(last["p_value"]),
                "PASS" if last["p_value"] < alpha else "FAIL",
                float(last["se"]),
                -np.inf,
                float(last["ci_high"]),
                "ssim",
                model,
                int(last["n_images"]),
                True,
                test,
                "none",
                float(last["df"]),
                float(last["mde"]),
                False,
            )
        )
    return pd.DataFrame(rows, columns=PASS_FAIL_COLUMNS)


def low_power(row, small_n: int = 30) -> bool:
    """A FAIL on fewer than ``small_n`` images whose data do not contradict a passing effect: the estimate
    points the passing way (down for randomization, up otherwise) or falls short of it by less than the
    minimum detectable effect. A FAIL with a clear effect the wrong way (a control map's SSIM of 1 at full
    randomization) is not a power problem."""
    if row.verdict != "FAIL" or row.n_images >= small_n:
        return False
    direction = -1.0 if row.criterion == "randomization" else 1.0
    mde = getattr(row, "mde", np.nan)
    margin = mde if mde is not None and np.isfinite(mde) else 0.0
    return bool(direction * row.estimate > -margin)


def _cell(row: pd.Series, small_n: int = 30) -> str:
    p = "p<0.001" if row.p_value < 0.001 else f"p={row.p_value:.3f}"
    mark = LOW_POWER_MARK if low_power(row, small_n) else ""
    return f"{row.verdict}{mark} ({row.estimate:+.3f}, {p})"


def _row_label(table: pd.DataFrame, method: str) -> str:
    is_control = "control" in table and bool(table.loc[table["method"] == method, "control"].any())
    return f"{method} (control)" if is_control else method


def _table2_columns(table: pd.DataFrame) -> list[tuple[str, str]]:
    """The Table 2 columns (criterion, role) present in ``table``, in the paper's order."""
    roles = table.assign(role=table["baseline"].map(baseline_role))
    return [key for key in TABLE2_COLUMNS if ((roles["criterion"] == key[0]) & (roles["role"] == key[1])).any()]


def _table2_cells(table: pd.DataFrame, small_n: int = 30, cell=None) -> tuple[list[str], list[list[str]]]:
    """Header and rows (method, one cell per column) of the Table 2 layout; ``n/a`` where a cell is missing.
    ``cell(row)`` formats a cell (default: verdict, estimate and p-value)."""
    cell = cell or (lambda row: _cell(row, small_n))
    roles = table.assign(role=table["baseline"].map(baseline_role))
    columns = _table2_columns(table)
    header = ["Method"] + [TABLE2_COLUMNS[key] for key in columns]
    rows = []
    for method in dict.fromkeys(table["method"]):
        cells = [_row_label(table, method)]
        for criterion, role in columns:
            hit = roles[(roles.method == method) & (roles.criterion == criterion) & (roles.role == role)]
            cells.append(cell(hit.iloc[0]) if len(hit) else "n/a")
        rows.append(cells)
    return header, rows


def _first(table: pd.DataFrame, criterion: str, column: str, role: str | None = None):
    if column not in table:
        return None
    sel = table[table["criterion"] == criterion]
    if role is not None:
        sel = sel[sel["baseline"].map(baseline_role) == role]
    return sel[column].iloc[0] if len(sel) else None


def table_notes(
    table: pd.DataFrame,
    alpha: float,
    rules: DecisionRules = DecisionRules(),
    options: StatsOptions = StatsOptions(),
    design_note: str = "",
) -> list[str]:
    """Sentences naming every rule that decided the table (generated from the rules and options in use)."""
    notes = [f"Cells: verdict (estimated difference to the baseline, p-value); alpha = {alpha}."]
    if design_note:
        notes.append(design_note)
    if (table["criterion"] == "utility").any():
        adj = _first(table, "utility", "adjustment") or "tukey"
        notes.append(
            f"Utility: {_first(table, 'utility', 'metric')} per positive test image; linear mixed model "
            f"score ~ group + (1 | image) of the methods and baselines, {adj}-adjusted two-sided comparisons "
            f"(Arun et al.); vs AVG: {describe_rule(rules.utility_vs_avg)} (stats.rules.utility_vs_avg), "
            f"vs high: {describe_rule(rules.utility_vs_high)} (stats.rules.utility_vs_high)."
        )
    if (table["criterion"] == "randomization").any():
        test = _first(table, "randomization", "test") or "Welch"
        n = _first(table, "randomization", "n_images")
        draws = options.randomization_draws
        how = (
            "Welch two-sample t-test of the per-image SSIMs against the SSIMs of the threshold's random image "
            "pairs, so the threshold's own uncertainty is carried (randomization.test: welch)"
            if test.startswith("Welch")
            else "one-sample t-test against the threshold taken as a known constant (randomization.test: one_sample; "
            "ignores the threshold's uncertainty)"
        )
        if draws > 1:
            how += (
                f", over {draws} seeded re-initializations (randomization.draws) with images and draws as "
                "crossed random effects, so a drop must hold across re-initializations (Satterthwaite df)"
            )
        else:
            how += ", one re-initialization as in the papers (randomization.draws: 1)"
        init = (
            "truncated-normal re-initialization as in the papers"
            if options.randomization_init == "truncated_normal"
            else f"{options.randomization_init} re-initialization (randomization.init; the papers used "
            "truncated_normal)"
        )
        notes.append(
            f"Randomization: SSIM of the fully randomized model's map (cascading, {init}) to the trained "
            f"map minus the degradation "
            f"threshold (mean SSIM of random pairs of different images' trained maps); PASS when "
            f"significantly below: {how}, one-sided; n = {n} images."
        )
    if table["criterion"].isin(["repeatability", "reproducibility"]).any():
        crit = "repeatability" if (table["criterion"] == "repeatability").any() else "reproducibility"
        low_how = (
            "one-sided one-sample t-test per method on its own variance (stats.low_test: one_sample)"
            if options.low_test == "one_sample"
            else "one-sided t from the pooled mixed model (stats.low_test: mixed)"
        )
        maps = (
            "post-processed maps in [0, 1] (metrics.similarity_maps: processed)"
            if options.similarity_maps == "processed"
            else "raw signed maps, data range per pair (metrics.similarity_maps: raw)"
        )
        high_adj = _first(table, crit, "adjustment", HIGH) or (
            "tukey" if (table.loc[table["criterion"] == crit, "baseline"].map(baseline_role) == HIGH).any() else None
        )
        notes.append(
            f"Repeatability/Reproducibility: SSIM of {maps}, data range {options.ssim_data_range:g} "
            f"(the LOW cut-off depends on it); vs LOW: mean minus {rules.low_ssim} "
            f"(stats.rules.low_ssim), PASS when significantly above, {low_how}"
            + (
                f"; vs high: difference to the high baseline pair, {describe_rule(rules.similarity_vs_high)} "
                f"(stats.rules.similarity_vs_high; {high_adj}-adjusted)."
                if high_adj
                else "."
            )
        )
    weak = table[[low_power(r, options.small_n) for r in table.itertuples()]] if len(table) else table
    if len(weak):
        mde = weak["mde"].dropna() if "mde" in weak else pd.Series(dtype=float)
        span = f" (smallest effect detectable with 80 % power: {mde.min():.3f}-{mde.max():.3f})" if len(mde) else ""
        notes.append(
            f"{LOW_POWER_MARK} FAIL on fewer than {options.small_n} images (stats.small_n): power is low, "
            f"so the FAIL means the effect was not shown, not that it is absent{span}; see columns n_images "
            "and mde of pass_fail.csv."
        )
    if "control" in table and table["control"].any():
        controls = ", ".join(dict.fromkeys(table.loc[table["control"], "method"]))
        notes.append(
            f"Rows marked (control) are model-independent control maps ({controls}; Adebayo et al. 2018): "
            "they must FAIL randomization and reach SSIM 1 in repeatability, showing the criteria at work; "
            "they are decided by fits of their own, outside the methods' multiplicity family."
        )
    if not table["converged"].all():
        notes.append(
            "WARNING: a mixed model did not converge; see the 'converged' column of pass_fail.csv and "
            "the log before trusting these verdicts."
        )
    return notes


def pass_fail_markdown(
    table: pd.DataFrame,
    model_aucs: pd.DataFrame,
    alpha: float,
    rules: DecisionRules = DecisionRules(),
    options: StatsOptions = StatsOptions(),
    design_note: str = "",
) -> str:
    """Table 2 layout in Markdown (the columns the table has), followed by the models' test AUCs."""
    lines = markdown_table(*_table2_cells(table, options.small_n))
    aucs = [[r.model, f"{r.val_auc:.3f}", f"{r.test_auc:.3f}"] for r in model_aucs.itertuples()]
    auc_lines = ["", *markdown_table(["Model", "Val AUC", "Test AUC"], aucs)]
    notes = ["- " + n for n in table_notes(table, alpha, rules, options, design_note)]
    return "\n".join(lines + [""] + notes + auc_lines) + "\n"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table: header, separator, one line per row of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    LOW_POWER_MARK: r"\textsuperscript{\dag}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def pass_fail_latex(
    table: pd.DataFrame,
    model_aucs: pd.DataFrame,
    alpha: float,
    rules: DecisionRules = DecisionRules(),
    caption: str = "",
    options: StatsOptions = StatsOptions(),
    design_note: str = "",
) -> str:
    """Table 2 layout as a LaTeX ``table`` (booktabs), with the rules as a note and the models' AUCs."""
    header, rows = _table2_cells(table, options.small_n)
    notes = table_notes(table, alpha, rules, options, design_note)
    aucs = "; ".join(f"{r.model}: {r.test_auc:.3f}" for r in model_aucs.itertuples())
    if aucs:
        notes.append(f"Test AUC: {aucs}.")
    return latex_table(header, rows, caption or "Saliency map trustworthiness (PASS/FAIL).", notes, "tab:pass_fail")


def latex_table(
    header: list[str], rows: list[list[str]], caption: str, notes: list[str], label: str, cell=latex_escape
) -> str:
    """A booktabs ``table`` of the Table 2 layout, the notes in the caption; ``cell`` formats a verdict cell."""
    spec = "l" + "c" * (len(header) - 1)
    out = [
        r"\begin{table}[ht]",
        r"\centering",
        r"\small",
        f"\\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    out += [" & ".join([latex_escape(cells[0]), *map(cell, cells[1:])]) + r" \\" for cells in rows]
    out += [r"\bottomrule", r"\end{tabular}"]
    out.append(f"\\caption{{{latex_escape(caption)} " + " ".join(latex_escape(n) for n in notes) + "}")
    out += [f"\\label{{{label}}}", r"\end{table}"]
    return "\n".join(out) + "\n"


def html_head(title: str, header: list[str]) -> list[str]:
    """Start of a self-contained HTML page (inline style, no script) up to the Table 2 header row; verdict
    cells take the classes pass, fail, unstable and na."""
    from html import escape

    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        "<style>body{font-family:sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse;"
        "margin:0.5em 0 1.5em}th,td{border:1px solid #bbb;padding:3px 8px;text-align:center}"
        "td:first-child,th:first-child{text-align:left}.pass{background:#c8f0c8}.fail{background:#f6cccc}"
        ".unstable{background:#ffe08a;font-style:italic}.na{color:#888}</style></head><body>",
        f"<h2>{escape(title)}</h2>",
        "<table>",
        "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>",
    ]


def _model_aucs(model_metrics: dict[str, str]) -> pd.DataFrame:
    import json

    aucs = []
    for model, path in model_metrics.items():
        with open(path) as fh:
            m = json.load(fh)
        aucs.append({"model": model, "val_auc": m["val_auc"], "test_auc": m["test_auc"]})
    return pd.DataFrame(aucs, columns=["model", "val_auc", "test_auc"])


def _pairwise_rows(fit: GroupMeansFit, alpha: float, criterion: str, metric: str) -> pd.DataFrame:
    pw = tukey_pairwise(fit, alpha)
    pw.insert(0, "criterion", criterion)
    pw.insert(1, "metric", metric)
    pw["converged"] = fit.converged
    pw["optimizer"] = fit.optimizer
    return pw


def _check_fit(fit: GroupMeansFit, what: str) -> None:
    if not fit.converged:
        log.warning("%s mixed model did not converge: %s", what, " | ".join(fit.messages))
    else:
        log.info(
            "%s mixed model: REML fit by %s, %d observations of %d images, image variance %.4g, residual variance %.4g",
            what,
            fit.optimizer,
            fit.n_obs,
            fit.n_subjects,
            fit.subject_variance,
            fit.residual_variance,
        )


def decide(
    utility: pd.DataFrame,
    primary_models: list[str],
    methods: list[str],
    metric: str,
    alpha: float,
    similarity: pd.DataFrame | None = None,
    tests: pd.DataFrame | None = None,
    randomized_model: str | None = None,
    high: str | None = None,
    rules: DecisionRules = DecisionRules(),
    options: StatsOptions = StatsOptions(),
    control: bool = False,
) -> tuple[dict[str, pd.DataFrame], list[pd.DataFrame], pd.DataFrame, str]:
    """Every verdict of ``methods``: (question tables, pairwise tables, Table 2 rows, design note).

    One family of fits per call: the methods and the controls are decided by separate calls."""
    models = design.utility_models(primary_models, options.pooling)
    rows = design.image_means(utility_groups(utility, models, methods, metric, high))
    fit = fit_group_means_lmm(rows, groups=[AVG, *methods, *([high] if high else [])])
    _check_fit(fit, "utility")
    questions = {"utility_vs_avg": utility_vs_avg(fit, alpha, metric, models, rules.utility_vs_avg)}
    if high:
        questions["utility_vs_high"] = versus_baseline(
            fit, high, alpha, "utility", rules.utility_vs_high, metric, models
        )
    pairwise = [_pairwise_rows(fit, alpha, "utility", metric)]
    if randomized_model and "weights" in utility and (utility["weights"] == "randomized").any():
        random_table, random_fit = trained_vs_random(
            utility, randomized_model, methods, metric, alpha, rules.trained_vs_random, options.trained_vs_random_adjust
        )
        _check_fit(random_fit, "trained vs random utility")
        questions["utility_trained_vs_random"] = random_table
        pairwise.append(_pairwise_rows(random_fit, alpha, "utility_trained_vs_random", metric))
    tables = [questions["utility_vs_avg"], *([questions["utility_vs_high"]] if high else [])]
    if tests is not None and randomized_model:
        tables.append(randomization_verdicts(tests, randomized_model, methods, alpha))
    similarity_tables, pairs_used = [], {}
    if similarity is not None:
        for criterion in ("repeatability", "reproducibility"):
            if not (similarity["criterion"] == criterion).any():
                log.warning("no %s pairs (needs two replicates / two architectures); column left out", criterion)
                continue
            table, sim_fit = similarity_verdicts(
                similarity, criterion, methods, high, alpha, primary_models, rules, options
            )
            _check_fit(sim_fit, criterion)
            similarity_tables.append(table)
            pairs_used[criterion] = table["models"].iloc[0]
            pairwise.append(_pairwise_rows(sim_fit, alpha, criterion, "ssim"))
    tables += similarity_tables
    if similarity_tables:
        questions["similarity_vs_baselines"] = pd.concat(similarity_tables, ignore_index=True)
    questions = {
        name: q[q["method"].isin(methods)].assign(control=control).reset_index(drop=True)
        for name, q in questions.items()
    }
    table = pd.concat(tables, ignore_index=True)
    table = table[table["method"].isin(methods)].assign(control=control).reset_index(drop=True)
    if control:
        pairwise = [p.assign(criterion=p["criterion"] + " (controls)") for p in pairwise]
    return questions, pairwise, table, design.describe(options.pooling, models, pairs_used)


@dataclass(frozen=True, eq=False)
class PassFailResult:
    """Every table of one dataset's PASS/FAIL stage, before rendering (Arun et al. 2021, Radiology: AI, Table 2;
    docs/criteria.md): the long ``table``, one table per question, the Tukey ``pairwise`` comparisons of every
    fit, the models' AUCs and what the renderers need to name the rules."""

    table: pd.DataFrame
    questions: dict[str, pd.DataFrame]
    pairwise: pd.DataFrame
    model_aucs: pd.DataFrame
    design_note: str
    alpha: float
    rules: DecisionRules = DecisionRules()
    options: StatsOptions = StatsOptions()
    dataset: str = ""

    def check_questions(self, names) -> None:
        """Raise ValueError naming the requested question tables this result has no data for."""
        unknown = set(names) - set(self.questions)
        if unknown:
            raise ValueError(
                f"no data for the question table(s) {sorted(unknown)}: check the randomization, "
                "baselines and models of the config"
            )

    def markdown(self) -> str:
        return pass_fail_markdown(self.table, self.model_aucs, self.alpha, self.rules, self.options, self.design_note)

    def latex(self) -> str:
        return pass_fail_latex(
            self.table,
            self.model_aucs,
            self.alpha,
            self.rules,
            caption=f"Saliency map trustworthiness on {self.dataset}." if self.dataset else "",
            options=self.options,
            design_note=self.design_note,
        )

    def html(self) -> str:
        return pass_fail_html(
            self.table,
            self.model_aucs,
            self.alpha,
            self.rules,
            self.questions,
            title=f"PASS/FAIL - {self.dataset}" if self.dataset else "PASS/FAIL",
            options=self.options,
            design_note=self.design_note,
        )


def pass_fail_tables(
    utility: pd.DataFrame,
    model_aucs: pd.DataFrame,
    primary_models: list[str],
    methods: list[str],
    metric: str,
    alpha: float,
    *,
    similarity: pd.DataFrame | None = None,
    tests: pd.DataFrame | None = None,
    randomized_model: str | None = None,
    high: str | None = None,
    rules: DecisionRules | dict | None = None,
    options: StatsOptions | dict | None = None,
    controls: list[str] | None = None,
    dataset: str = "",
) -> PassFailResult:
    """Every verdict of one dataset from its tables, no file I/O (docs/criteria.md). ``controls`` (a subset of
    ``methods``) are decided by fits of their own (:func:`decide` with ``control=True``) and their rows follow
    the methods' rows in every table."""
    rules = rules if isinstance(rules, DecisionRules) else DecisionRules.from_config(rules)
    options = options if isinstance(options, StatsOptions) else StatsOptions.from_config(options)
    controls = [c for c in (controls or []) if c in methods]
    studied = [m for m in methods if m not in controls]
    args = dict(
        similarity=similarity, tests=tests, randomized_model=randomized_model, high=high, rules=rules, options=options
    )
    questions, pairwise, table, design_note = decide(utility, primary_models, studied, metric, alpha, **args)
    if controls:
        c_questions, c_pairwise, c_table, _ = decide(
            utility, primary_models, controls, metric, alpha, **args, control=True
        )
        questions = {
            name: pd.concat([q, c_questions[name]], ignore_index=True) if name in c_questions else q
            for name, q in questions.items()
        }
        pairwise += c_pairwise
        table = pd.concat([table, c_table], ignore_index=True)
    return PassFailResult(
        table=table,
        questions=questions,
        pairwise=pd.concat(pairwise, ignore_index=True),
        model_aucs=model_aucs,
        design_note=design_note,
        alpha=alpha,
        rules=rules,
        options=options,
        dataset=dataset,
    )


def write_pass_fail(
    result: PassFailResult,
    *,
    csv_path,
    md_path,
    pairwise_path,
    tex_path=None,
    html_path=None,
    question_paths: dict[str, str] | None = None,
) -> None:
    """Write the PASS/FAIL table (CSV, Markdown, optional LaTeX and HTML), the pairwise comparisons and the
    question tables named in ``question_paths`` (utility_vs_avg, utility_vs_high, utility_trained_vs_random,
    similarity_vs_baselines). Everything is checked and rendered before the first file is written; the CSV
    comes last."""
    from saliency_trust.io import write_csv, write_text

    question_paths = question_paths or {}
    result.check_questions(question_paths)
    html = result.html() if html_path else None
    md = result.markdown()
    tex = result.latex() if tex_path else None
    for name, path in question_paths.items():
        write_csv(result.questions[name], path)
    if html_path:
        write_text(html, html_path)
    write_csv(result.pairwise, pairwise_path)
    write_text(md, md_path)
    if tex_path:
        write_text(tex, tex_path)
    write_csv(result.table, csv_path)


@dataclass(frozen=True)
class PassFailInputs:
    """Input files of the stage: the utility and similarity scores, the randomization tests and each model's
    ``evaluation.json`` (validation and current test AUC; ``model_metrics``: model name -> path)."""

    utility: str
    model_metrics: dict[str, str]
    similarity: str | None = None
    randomization_tests: str | None = None


def run_pass_fail(
    inputs: PassFailInputs,
    outputs: dict,
    *,
    primary_models: list[str],
    methods: list[str],
    metric: str,
    alpha: float,
    randomized_model: str | None = None,
    high: str | None = None,
    rules: DecisionRules | dict | None = None,
    options: StatsOptions | dict | None = None,
    controls: list[str] | None = None,
    dataset: str = "",
) -> PassFailResult:
    """Stage entry: read ``inputs``, decide (:func:`pass_fail_tables`, same keywords) and write (``outputs``: the
    keywords of :func:`write_pass_fail`)."""
    utility = pd.read_csv(inputs.utility, dtype={"image_id": str})
    similarity = pd.read_csv(inputs.similarity, dtype={"image_id": str}) if inputs.similarity else None
    tests = pd.read_csv(inputs.randomization_tests) if inputs.randomization_tests else None
    result = pass_fail_tables(
        utility,
        _model_aucs(inputs.model_metrics),
        primary_models,
        methods,
        metric,
        alpha,
        similarity=similarity,
        tests=tests,
        randomized_model=randomized_model,
        high=high,
        rules=rules,
        options=options,
        controls=controls,
        dataset=dataset,
    )
    write_pass_fail(result, **outputs)
    return result


def cross_dataset_summary(tables: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, str]:
    """Every dataset's PASS/FAIL rows in one long table (``dataset`` first) and a Markdown table with one row
    per method and dataset, the verdict per Table 2 column and the number of columns passed."""
    if not tables:
        raise ValueError("cross-dataset summary needs at least one dataset's PASS/FAIL table")
    long = pd.concat([t.assign(dataset=name) for name, t in tables.items()], ignore_index=True)
    long = long[["dataset", *[c for c in long.columns if c != "dataset"]]]
    columns = _table2_columns(long)
    header = ["Method", "Dataset"] + [TABLE2_COLUMNS[key] for key in columns] + ["PASS"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    roles = long.assign(role=long["baseline"].map(baseline_role))
    for method in dict.fromkeys(long["method"]):
        for dataset in tables:
            rows = roles[(roles["method"] == method) & (roles["dataset"] == dataset)]
            if rows.empty:
                continue
            cells, passed, decided = [], 0, 0
            for criterion, role in columns:
                hit = rows[(rows["criterion"] == criterion) & (rows["role"] == role)]
                verdict = hit["verdict"].iloc[0] if len(hit) else "n/a"
                passed += verdict == "PASS"
                decided += verdict != "n/a"
                cells.append(verdict)
            lines.append("| " + " | ".join([method, dataset, *cells, f"{passed}/{decided}"]) + " |")
    note = (
        "\nOne row per method and dataset; the verdicts follow each dataset's own PASS/FAIL table "
        "(summary/pass_fail.md of that dataset), whose cells give the estimates and p-values."
    )
    return long, "\n".join(lines) + "\n" + note + "\n"


def run_cross_dataset_summary(paths: dict[str, str], csv_path, md_path) -> None:
    """Stage entry: the cross-dataset summary of the datasets' PASS/FAIL tables."""
    from saliency_trust.io import write_csv, write_text

    long, md = cross_dataset_summary({name: pd.read_csv(path) for name, path in paths.items()})
    write_text(md, md_path)
    write_csv(long, csv_path)


QUESTION_TITLES = {
    "utility_vs_avg": "Does the map localize better than the average mask (AVG)?",
    "utility_vs_high": "Does the map localize as well as a model trained to localize (high baseline)?",
    "utility_trained_vs_random": "Do the trained weights matter for localization (trained vs randomized model)?",
    "similarity_vs_baselines": "Are the maps repeatable and reproducible (vs LOW and the high baseline pair)?",
}


def pass_fail_html(
    table: pd.DataFrame,
    model_aucs: pd.DataFrame,
    alpha: float,
    rules: DecisionRules = DecisionRules(),
    questions: dict[str, pd.DataFrame] | None = None,
    title: str = "PASS/FAIL",
    options: StatsOptions = StatsOptions(),
    design_note: str = "",
) -> str:
    """A self-contained HTML page (no script, inline style) for the report: the Table 2 layout with coloured
    verdicts, how each column was decided, the models' AUCs, and one table per question of Arun et al."""
    from html import escape

    def verdict_cell(text: str) -> str:
        cls = "pass" if text.startswith("PASS") else "fail" if text.startswith("FAIL") else "na"
        return f'<td class="{cls}">{escape(text)}</td>'

    header, rows = _table2_cells(table, options.small_n)
    out = html_head(title, header)
    for cells in rows:
        out.append(f"<tr><td>{escape(cells[0])}</td>" + "".join(verdict_cell(c) for c in cells[1:]) + "</tr>")
    out.append(
        "</table><ul>"
        + "".join(f"<li>{escape(n)}</li>" for n in table_notes(table, alpha, rules, options, design_note))
        + "</ul>"
    )
    out.append("<h3>Models</h3><table><tr><th>Model</th><th>Val AUC</th><th>Test AUC</th></tr>")
    out += [
        f"<tr><td>{escape(r.model)}</td><td>{r.val_auc:.3f}</td><td>{r.test_auc:.3f}</td></tr>"
        for r in model_aucs.itertuples()
    ]
    out.append("</table>")
    for name, q in (questions or {}).items():
        out.append(
            f"<h3>{escape(QUESTION_TITLES.get(name, name))}</h3><table><tr><th>Method</th><th>Criterion</th>"
            "<th>Baseline</th><th>Estimate</th><th>CI (as tested)</th><th>p</th><th>Verdict</th></tr>"
        )
        for r in q.itertuples():
            p = "&lt;0.001" if r.p_value < 0.001 else f"{r.p_value:.3f}"
            out.append(
                f"<tr><td>{escape(str(r.method))}</td><td>{escape(r.criterion)}</td>"
                f"<td>{escape(str(r.baseline))}</td><td>{r.estimate:+.3f}</td>"
                f"<td>[{r.ci_low:+.3f}, {r.ci_high:+.3f}]</td><td>{p}</td>" + verdict_cell(r.verdict) + "</tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
