"""PASS/FAIL decisions and the summary table (SPEC 7; Arun et al., Table 2).

Decision rules (alpha from ``stats.alpha``):

- **Utility vs AVG** and **Utility vs high**: a method PASSES when its mean
  per-image utility is significantly higher than that of the baseline (one
  mixed model of the methods and both baselines, Tukey-adjusted, two-sided).
- **Randomization**: PASS when the per-image SSIM between the fully randomized
  model's map (last cascading step) and the trained map is significantly below
  the degradation threshold (one-sided t-test, :mod:`saliency_trust.stats.randomization`).
- **Repeatability / Reproducibility vs LOW**: PASS when the mean per-image SSIM
  (mixed model of the methods and the high baseline pair, random intercept per
  image) is significantly above 0.5 (one-sided t from the model, per method).
- **Repeatability / Reproducibility vs high**: PASS unless the method is
  significantly *worse* than the high baseline pair (Tukey-adjusted, two-sided).

The "vs high" columns exist when a high baseline is configured; baselines
themselves are not rows of the table.

The long table keeps the contract ``method, criterion, baseline, estimate,
p_value, verdict`` (plus standard error, confidence interval, metric, the models
pooled and the fit's convergence); the Markdown table has the layout of the
paper's Table 2 (rows = methods, one column per criterion/baseline).
"""

from __future__ import annotations

import logging

import pandas as pd

import numpy as np
from scipy import stats as scipy_stats

from saliency_trust.stats.mixed import GroupMeansFit, compare_to_reference, fit_group_means_lmm

log = logging.getLogger(__name__)

AVG = "AVG"
PASS_FAIL_COLUMNS = [
    "method", "criterion", "baseline", "estimate", "p_value", "verdict",
    "se", "ci_low", "ci_high", "metric", "models", "n_images", "converged",
]
LOW = "LOW"  # SSIM 0.5, the low baseline of repeatability and reproducibility
LOW_SSIM = 0.5
THRESHOLD = "threshold"
HIGH = "high"  # role of the high baseline (U-Net or detector) in the Table 2 columns
TABLE2_COLUMNS = {
    ("utility", AVG): "Utility vs AVG",
    ("utility", HIGH): "Utility vs high",
    ("randomization", THRESHOLD): "Randomization",
    ("repeatability", LOW): "Repeatability vs LOW",
    ("repeatability", HIGH): "Repeatability vs high",
    ("reproducibility", LOW): "Reproducibility vs LOW",
    ("reproducibility", HIGH): "Reproducibility vs high",
}


def baseline_role(baseline: str) -> str:
    """Table 2 role of a baseline name: AVG, LOW, threshold, or high (U-Net / detector)."""
    return baseline if baseline in (AVG, LOW, THRESHOLD) else HIGH


def utility_groups(utility: pd.DataFrame, models: list[str], methods: list[str], metric: str,
                   high: str | None = None) -> pd.DataFrame:
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


def versus_baseline(fit: GroupMeansFit, reference: str, alpha: float, criterion: str, rule: str, metric: str,
                    models: list[str]) -> pd.DataFrame:
    """PASS/FAIL rows of every group of ``fit`` against the group ``reference`` (Tukey-adjusted).

    ``rule`` is ``better`` (PASS when significantly higher) or ``not_worse`` (PASS unless
    significantly lower).
    """
    comp = compare_to_reference(fit, reference, alpha)
    significant = comp["p_adj"] < alpha
    if rule == "better":
        passed = (comp["estimate"] > 0) & significant
    elif rule == "not_worse":
        passed = ~((comp["estimate"] < 0) & significant)
    else:
        raise ValueError(f"unknown decision rule '{rule}'")
    return pd.DataFrame(
        {
            "method": comp["group"],
            "criterion": criterion,
            "baseline": reference,
            "estimate": comp["estimate"],
            "p_value": comp["p_adj"],
            "verdict": passed.map({True: "PASS", False: "FAIL"}),
            "se": comp["se"],
            "ci_low": comp["ci_low"],
            "ci_high": comp["ci_high"],
            "metric": metric,
            "models": ";".join(models),
            "n_images": fit.n_subjects,
            "converged": fit.converged,
        }
    )[PASS_FAIL_COLUMNS]


def utility_vs_avg(fit: GroupMeansFit, alpha: float, metric: str, models: list[str]) -> pd.DataFrame:
    """PASS/FAIL rows "Utility vs AVG" from a fitted mixed model whose groups include AVG."""
    return versus_baseline(fit, AVG, alpha, "utility", "better", metric, models)


def above_constant(fit: GroupMeansFit, groups: list[str], constant: float, alpha: float, criterion: str,
                   baseline: str, metric: str, models: list[str]) -> pd.DataFrame:
    """PASS when a group's mean is significantly above ``constant``: one-sided t = (mean - c) / se on the
    model's error degrees of freedom; the interval is the two-sided (1 - alpha) one."""
    rows = []
    t_crit = float(scipy_stats.t.ppf(1 - alpha / 2, fit.df))
    for g in groups:
        k = fit.groups.index(g)
        est = float(fit.means[k] - constant)
        se = float(np.sqrt(max(fit.cov[k, k], 0.0)))
        p = float(scipy_stats.t.sf(est / se, fit.df)) if se > 0 else (0.0 if est > 0 else 1.0)
        rows.append((g, criterion, baseline, est, p, "PASS" if p < alpha else "FAIL", se, est - t_crit * se,
                     est + t_crit * se, metric, ";".join(models), fit.n_subjects, fit.converged))
    return pd.DataFrame(rows, columns=PASS_FAIL_COLUMNS)


def similarity_verdicts(similarity: pd.DataFrame, criterion: str, methods: list[str], high: str | None,
                        alpha: float, models: list[str]) -> tuple[pd.DataFrame, GroupMeansFit]:
    """Repeatability or reproducibility vs LOW (SSIM 0.5) and vs the high baseline pair, from per-image SSIM.

    ``models`` restricts the model pairs (both models for repeatability, at least one for
    reproducibility must be in it); the high baseline's rows are its replicate pair.
    """
    sel = similarity[(similarity["criterion"] == criterion) & (similarity["metric"] == "ssim")]
    is_high = sel["method"] == high if high else pd.Series(False, index=sel.index)
    in_a, in_b = sel["model_a"].isin(models), sel["model_b"].isin(models)
    keep = (in_a & in_b) if criterion == "repeatability" else (in_a | in_b)
    maps = sel[~is_high & keep & sel["method"].isin(methods)]
    absent = sorted(set(methods) - set(maps["method"]))
    if absent:
        raise ValueError(f"similarity table has no {criterion} SSIM rows for method(s) {absent} of models {models}")
    rows = pd.concat([maps, sel[is_high]], ignore_index=True).assign(group=lambda d: d["method"])
    groups = [*methods, *([high] if high and is_high.any() else [])]
    fit = fit_group_means_lmm(rows, groups=groups)
    pairs = sorted({f"{a}~{b}" for a, b in zip(maps["model_a"], maps["model_b"])})
    table = above_constant(fit, methods, LOW_SSIM, alpha, criterion, LOW, "ssim", pairs)
    if len(groups) > len(methods):
        vs_high = versus_baseline(fit, high, alpha, criterion, "not_worse", "ssim", pairs)
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
        est = float(last["mean_ssim"] - last["threshold"])
        se = float(last["sd"] / np.sqrt(last["n_images"]))
        half = float(scipy_stats.t.ppf(1 - alpha / 2, max(last["n_images"] - 1, 1))) * se
        rows.append((method, "randomization", THRESHOLD, est, float(last["p_value"]),
                     "PASS" if last["p_value"] < alpha else "FAIL", se, est - half, est + half, "ssim", model,
                     int(last["n_images"]), True))
    return pd.DataFrame(rows, columns=PASS_FAIL_COLUMNS)


def _cell(row: pd.Series) -> str:
    p = "p<0.001" if row.p_value < 0.001 else f"p={row.p_value:.3f}"
    return f"{row.verdict} ({row.estimate:+.3f}, {p})"


def pass_fail_markdown(table: pd.DataFrame, model_aucs: pd.DataFrame, alpha: float) -> str:
    """Table 2 layout in Markdown (the columns the table has), followed by the models' test AUCs."""
    methods = list(dict.fromkeys(table["method"]))
    roles = table.assign(role=table["baseline"].map(baseline_role))
    columns = [key for key in TABLE2_COLUMNS if ((roles["criterion"] == key[0]) & (roles["role"] == key[1])).any()]
    header = ["Method"] + [TABLE2_COLUMNS[key] for key in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        cells = [method]
        for criterion, role in columns:
            hit = roles[(roles.method == method) & (roles.criterion == criterion) & (roles.role == role)]
            cells.append(_cell(hit.iloc[0]) if len(hit) else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    utility = table[table["criterion"] == "utility"]
    notes = [
        "",
        f"Cells: verdict (estimated difference to the baseline, p-value); alpha = {alpha}.",
    ]
    if len(utility):
        notes.append(f"Utility: {utility['metric'].iloc[0]} per positive test image; models pooled: "
                     f"{utility['models'].iloc[0]}; vs AVG and vs high: PASS when significantly better "
                     f"(Tukey-adjusted).")
    if (table["criterion"] == "randomization").any():
        notes.append("Randomization: SSIM of the fully randomized model's map to the trained map minus the "
                     "degradation threshold; PASS when significantly below (one-sided t-test).")
    if table["criterion"].isin(["repeatability", "reproducibility"]).any():
        notes.append("Repeatability/Reproducibility: SSIM; vs LOW: mean minus 0.5, PASS when significantly above "
                     "(one-sided); vs high: difference to the high baseline pair, PASS unless significantly worse "
                     "(Tukey-adjusted).")
    if not table["converged"].all():
        notes.append("WARNING: a mixed model did not converge; see utility_tests.csv before trusting these verdicts.")
    auc_lines = ["", "| Model | Val AUC | Test AUC |", "|---|---|---|"]
    auc_lines += [f"| {r.model} | {r.val_auc:.3f} | {r.test_auc:.3f} |" for r in model_aucs.itertuples()]
    return "\n".join(lines + notes + auc_lines) + "\n"


def run_pass_fail(utility_path, model_metrics: dict[str, str], primary_models: list[str], methods: list[str],
                  metric: str, alpha: float, csv_path, md_path, pairwise_path, similarity_path=None,
                  randomization_tests_path=None, randomized_model: str | None = None, high: str | None = None) -> None:
    """Stage entry: the statistics of every criterion and the PASS/FAIL table (CSV + Markdown) of one dataset."""
    import json

    from saliency_trust.io import write_csv, write_text
    from saliency_trust.stats.mixed import tukey_pairwise

    utility = pd.read_csv(utility_path, dtype={"image_id": str})
    fit = fit_group_means_lmm(utility_groups(utility, primary_models, methods, metric, high),
                              groups=[AVG, *methods, *([high] if high else [])])
    if not fit.converged:
        log.warning("utility mixed model did not converge: %s", " | ".join(fit.messages))
    tables = [utility_vs_avg(fit, alpha, metric, primary_models)]
    if high:
        tables.append(versus_baseline(fit, high, alpha, "utility", "better", metric, primary_models))
    pairwise = tukey_pairwise(fit, alpha)
    pairwise.insert(0, "criterion", "utility")
    pairwise.insert(1, "metric", metric)
    pairwise["converged"] = fit.converged
    pairwise["optimizer"] = fit.optimizer
    pairwise_tables = [pairwise]
    if randomization_tests_path and randomized_model:
        tests = pd.read_csv(randomization_tests_path)
        tables.append(randomization_verdicts(tests, randomized_model, methods, alpha))
    if similarity_path:
        similarity = pd.read_csv(similarity_path, dtype={"image_id": str})
        for criterion in ("repeatability", "reproducibility"):
            if not (similarity["criterion"] == criterion).any():
                log.warning("no %s pairs (needs two replicates / two architectures); column left out", criterion)
                continue
            table, sim_fit = similarity_verdicts(similarity, criterion, methods, high, alpha, primary_models)
            if not sim_fit.converged:
                log.warning("%s mixed model did not converge: %s", criterion, " | ".join(sim_fit.messages))
            tables.append(table)
            pw = tukey_pairwise(sim_fit, alpha)
            pw.insert(0, "criterion", criterion)
            pw.insert(1, "metric", "ssim")
            pw["converged"] = sim_fit.converged
            pw["optimizer"] = sim_fit.optimizer
            pairwise_tables.append(pw)
    table = pd.concat(tables, ignore_index=True)
    table = table[table["method"].isin(methods)].reset_index(drop=True)  # baselines are not rows of Table 2
    aucs = []
    for model, path in model_metrics.items():
        with open(path) as fh:
            m = json.load(fh)
        aucs.append({"model": model, "val_auc": m["val_auc"], "test_auc": m["test_auc"]})
    model_aucs = pd.DataFrame(aucs)
    write_csv(pd.concat(pairwise_tables, ignore_index=True), pairwise_path)
    write_text(pass_fail_markdown(table, model_aucs, alpha), md_path)
    write_csv(table, csv_path)
