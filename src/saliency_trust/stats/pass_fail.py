"""PASS/FAIL decisions and the summary table (SPEC 7; Arun et al., Table 2).

Decision rule implemented so far:

- **Utility vs AVG**: a method PASSES when its mean per-image utility is
  significantly higher than that of the average-mask baseline (Tukey-adjusted,
  two-sided, alpha from ``stats.alpha``); otherwise FAIL.

The long table keeps the contract ``method, criterion, baseline, estimate,
p_value, verdict`` (plus standard error, confidence interval, metric, the models
pooled and the fit's convergence); the Markdown table has the layout of the
paper's Table 2 (rows = methods, one column per criterion/baseline).
"""

from __future__ import annotations

import logging

import pandas as pd

from saliency_trust.stats.mixed import GroupMeansFit, compare_to_reference, fit_group_means_lmm

log = logging.getLogger(__name__)

AVG = "AVG"
PASS_FAIL_COLUMNS = [
    "method", "criterion", "baseline", "estimate", "p_value", "verdict",
    "se", "ci_low", "ci_high", "metric", "models", "n_images", "converged",
]
TABLE2_COLUMNS = {("utility", AVG): "Utility vs AVG"}


def utility_groups(utility: pd.DataFrame, models: list[str], methods: list[str], metric: str) -> pd.DataFrame:
    """Rows of one utility metric for the methods of ``models`` and the AVG baseline, with a ``group`` column."""
    sel = utility[utility["metric"] == metric]
    if "weights" in sel:  # trained maps only; randomized-model utility is its own comparison
        sel = sel[sel["weights"] == "trained"]
    maps = sel[sel["model"].isin(models) & sel["method"].isin(methods)]
    base = sel[sel["method"] == AVG]
    if base.empty:
        raise ValueError(f"utility table has no {AVG} baseline rows for metric '{metric}'")
    absent = sorted(set(methods) - set(maps["method"]))
    if absent:
        raise ValueError(f"utility table has no rows for method(s) {absent} of models {models}")
    return pd.concat([maps.assign(group=maps["method"]), base.assign(group=AVG)], ignore_index=True)


def utility_vs_avg(fit: GroupMeansFit, alpha: float, metric: str, models: list[str]) -> pd.DataFrame:
    """PASS/FAIL rows "Utility vs AVG" from a fitted mixed model whose groups include AVG."""
    comp = compare_to_reference(fit, AVG, alpha)
    better = (comp["estimate"] > 0) & (comp["p_adj"] < alpha)
    return pd.DataFrame(
        {
            "method": comp["group"],
            "criterion": "utility",
            "baseline": AVG,
            "estimate": comp["estimate"],
            "p_value": comp["p_adj"],
            "verdict": better.map({True: "PASS", False: "FAIL"}),
            "se": comp["se"],
            "ci_low": comp["ci_low"],
            "ci_high": comp["ci_high"],
            "metric": metric,
            "models": ";".join(models),
            "n_images": fit.n_subjects,
            "converged": fit.converged,
        }
    )[PASS_FAIL_COLUMNS]


def _cell(row: pd.Series) -> str:
    p = "p<0.001" if row.p_value < 0.001 else f"p={row.p_value:.3f}"
    return f"{row.verdict} ({row.estimate:+.3f}, {p})"


def pass_fail_markdown(table: pd.DataFrame, model_aucs: pd.DataFrame, alpha: float) -> str:
    """Table 2 layout in Markdown, followed by the models' test AUCs."""
    methods = list(dict.fromkeys(table["method"]))
    header = ["Method"] + [TABLE2_COLUMNS[key] for key in TABLE2_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        cells = [method]
        for criterion, baseline in TABLE2_COLUMNS:
            hit = table[(table.method == method) & (table.criterion == criterion) & (table.baseline == baseline)]
            cells.append(_cell(hit.iloc[0]) if len(hit) else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        f"Cells: verdict (estimated difference to the baseline, Tukey-adjusted p-value); alpha = {alpha}.",
        f"Utility: {table['metric'].iloc[0]} per positive test image; models pooled: {table['models'].iloc[0]}.",
    ]
    if not table["converged"].all():
        notes.append("WARNING: a mixed model did not converge; see utility_tests.csv before trusting these verdicts.")
    auc_lines = ["", "| Model | Val AUC | Test AUC |", "|---|---|---|"]
    auc_lines += [f"| {r.model} | {r.val_auc:.3f} | {r.test_auc:.3f} |" for r in model_aucs.itertuples()]
    return "\n".join(lines + notes + auc_lines) + "\n"


def run_pass_fail(utility_path, model_metrics: dict[str, str], primary_models: list[str], methods: list[str],
                  metric: str, alpha: float, csv_path, md_path, pairwise_path) -> None:
    """Stage entry: utility statistics and the PASS/FAIL table (CSV + Markdown) of one dataset."""
    import json

    from saliency_trust.io import write_csv, write_text
    from saliency_trust.stats.mixed import tukey_pairwise

    utility = pd.read_csv(utility_path, dtype={"image_id": str})
    fit = fit_group_means_lmm(utility_groups(utility, primary_models, methods, metric), groups=[AVG, *methods])
    if not fit.converged:
        log.warning("utility mixed model did not converge: %s", " | ".join(fit.messages))
    table = utility_vs_avg(fit, alpha, metric, primary_models)
    pairwise = tukey_pairwise(fit, alpha)
    pairwise.insert(0, "criterion", "utility")
    pairwise.insert(1, "metric", metric)
    pairwise["converged"] = fit.converged
    pairwise["optimizer"] = fit.optimizer
    aucs = []
    for model, path in model_metrics.items():
        with open(path) as fh:
            m = json.load(fh)
        aucs.append({"model": model, "val_auc": m["val_auc"], "test_auc": m["test_auc"]})
    model_aucs = pd.DataFrame(aucs)
    write_csv(pairwise, pairwise_path)
    write_text(pass_fail_markdown(table, model_aucs, alpha), md_path)
    write_csv(table, csv_path)
