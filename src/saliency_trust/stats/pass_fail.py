"""PASS/FAIL decisions and the summary tables (SPEC 7; Arun et al., Table 2 and Statistical analysis).

Decision rules (alpha from ``stats.alpha``, the rules from ``stats.rules``; defaults in brackets):

- **Utility vs AVG** and **Utility vs high** [``better``]: a method PASSES when its mean
  per-image utility is significantly higher than that of the baseline (one
  mixed model of the methods and both baselines, Tukey-adjusted, two-sided);
  ``not_worse`` passes unless it is significantly lower.
- **Randomization**: PASS when the per-image SSIM between the fully randomized
  model's map (last cascading step) and the trained map is significantly below
  the degradation threshold (one-sided t-test, :mod:`saliency_trust.stats.randomization`).
- **Repeatability / Reproducibility vs LOW** [``low_ssim: 0.5``]: PASS when the mean per-image SSIM
  (mixed model of the methods and the high baseline pair, random intercept per
  image) is significantly above the LOW value (one-sided t from the model, per method).
- **Repeatability / Reproducibility vs high** [``not_worse``]: PASS unless the method is
  significantly *worse* than the high baseline pair (Tukey-adjusted, two-sided);
  ``better`` asks for significantly higher.
- **Trained vs random utility** [``better``] (the paper's third question, its own table): the
  utility of the trained model's maps against the fully randomized model's maps on the same
  images, one mixed model of every method x weights group, Tukey-adjusted.

The "vs high" columns exist when a high baseline is configured; baselines
themselves are not rows of the table.

The long table keeps the contract ``method, criterion, baseline, estimate,
p_value, verdict`` (plus standard error, confidence interval, metric, the models
pooled and the fit's convergence); the Markdown and LaTeX tables have the layout of the
paper's Table 2 (rows = methods, one column per criterion/baseline).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from saliency_trust.stats.mixed import GroupMeansFit, compare_to_reference, fit_group_means_lmm, tukey_pairwise

log = logging.getLogger(__name__)

AVG = "AVG"
PASS_FAIL_COLUMNS = [
    "method", "criterion", "baseline", "estimate", "p_value", "verdict",
    "se", "ci_low", "ci_high", "metric", "models", "n_images", "converged",
]
LOW = "LOW"  # SSIM 0.5, the low baseline of repeatability and reproducibility
LOW_SSIM = 0.5
RANDOM = "random"  # baseline name of the fully randomized model's maps (trained vs random utility)
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


RULES = ("better", "not_worse")


@dataclass(frozen=True)
class DecisionRules:
    """The PASS/FAIL rules of config ``stats.rules`` (README "How to read the PASS/FAIL table")."""

    utility_vs_avg: str = "better"
    utility_vs_high: str = "better"
    trained_vs_random: str = "better"
    similarity_vs_high: str = "not_worse"
    low_ssim: float = LOW_SSIM

    def __post_init__(self):
        for name in ("utility_vs_avg", "utility_vs_high", "trained_vs_random", "similarity_vs_high"):
            if getattr(self, name) not in RULES:
                raise ValueError(f"stats.rules.{name}: '{getattr(self, name)}' is not one of {list(RULES)}")
        if not -1.0 <= self.low_ssim <= 1.0:
            raise ValueError(f"stats.rules.low_ssim: {self.low_ssim} is outside the SSIM range [-1, 1]")

    @classmethod
    def from_config(cls, rules: dict | None) -> "DecisionRules":
        return cls(**(rules or {}))


def describe_rule(rule: str) -> str:
    return "PASS when significantly better" if rule == "better" else "PASS unless significantly worse"


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


def utility_vs_avg(fit: GroupMeansFit, alpha: float, metric: str, models: list[str],
                   rule: str = "better") -> pd.DataFrame:
    """PASS/FAIL rows "Utility vs AVG" from a fitted mixed model whose groups include AVG."""
    return versus_baseline(fit, AVG, alpha, "utility", rule, metric, models)


def trained_vs_random(utility: pd.DataFrame, model: str, methods: list[str], metric: str, alpha: float,
                      rule: str = "better") -> tuple[pd.DataFrame, GroupMeansFit]:
    """Utility of ``model``'s trained maps against its fully randomized maps, per method (Arun et al.'s
    third question). One mixed model of the groups ``{method}|trained`` and ``{method}|random`` on the
    images explained at full randomization, random intercept per image; each method's contrast
    trained - random is Tukey-adjusted over the whole family of pairwise comparisons."""
    sel = utility[(utility["metric"] == metric) & (utility["model"] == model) & utility["method"].isin(methods)]
    random = sel[sel["weights"] == "randomized"]
    if random.empty:
        raise ValueError(f"utility table has no randomized-model rows of model {model} for metric '{metric}'")
    trained = sel[(sel["weights"] == "trained") & sel["image_id"].isin(set(random["image_id"]))]
    absent = sorted(set(methods) - set(random["method"]) | set(methods) - set(trained["method"]))
    if absent:
        raise ValueError(f"utility table lacks trained or randomized rows of model {model} for method(s) {absent}")
    rows = pd.concat([trained.assign(group=trained["method"] + "|trained"),
                      random.assign(group=random["method"] + "|" + RANDOM)], ignore_index=True)
    groups = [f"{m}|{w}" for m in methods for w in ("trained", RANDOM)]
    fit = fit_group_means_lmm(rows, groups=groups)
    pairs = tukey_pairwise(fit, alpha).set_index(["group1", "group2"])
    out = []
    for m in methods:
        r = pairs.loc[(f"{m}|trained", f"{m}|{RANDOM}")]
        significant = r.p_adj < alpha
        passed = (r.estimate > 0 and significant) if rule == "better" else not (r.estimate < 0 and significant)
        out.append((m, "utility", RANDOM, r.estimate, r.p_adj, "PASS" if passed else "FAIL", r.se, r.ci_low,
                    r.ci_high, metric, model, fit.n_subjects, fit.converged))
    return pd.DataFrame(out, columns=PASS_FAIL_COLUMNS), fit


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
                        alpha: float, models: list[str], rules: DecisionRules = DecisionRules(),
                        ) -> tuple[pd.DataFrame, GroupMeansFit]:
    """Repeatability or reproducibility vs LOW (SSIM ``rules.low_ssim``) and vs the high baseline pair, from
    per-image SSIM.

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
    table = above_constant(fit, methods, rules.low_ssim, alpha, criterion, LOW, "ssim", pairs)
    if len(groups) > len(methods):
        vs_high = versus_baseline(fit, high, alpha, criterion, rules.similarity_vs_high, "ssim", pairs)
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


def _table2_columns(table: pd.DataFrame) -> list[tuple[str, str]]:
    """The Table 2 columns (criterion, role) present in ``table``, in the paper's order."""
    roles = table.assign(role=table["baseline"].map(baseline_role))
    return [key for key in TABLE2_COLUMNS if ((roles["criterion"] == key[0]) & (roles["role"] == key[1])).any()]


def _table2_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows (method, one cell per column) of the Table 2 layout; ``n/a`` where a cell is missing."""
    roles = table.assign(role=table["baseline"].map(baseline_role))
    columns = _table2_columns(table)
    header = ["Method"] + [TABLE2_COLUMNS[key] for key in columns]
    rows = []
    for method in dict.fromkeys(table["method"]):
        cells = [method]
        for criterion, role in columns:
            hit = roles[(roles.method == method) & (roles.criterion == criterion) & (roles.role == role)]
            cells.append(_cell(hit.iloc[0]) if len(hit) else "n/a")
        rows.append(cells)
    return header, rows


def table_notes(table: pd.DataFrame, alpha: float, rules: DecisionRules = DecisionRules()) -> list[str]:
    """Sentences stating how each column of the table was decided."""
    notes = [f"Cells: verdict (estimated difference to the baseline, p-value); alpha = {alpha}."]
    utility = table[table["criterion"] == "utility"]
    if len(utility):
        notes.append(f"Utility: {utility['metric'].iloc[0]} per positive test image; models pooled: "
                     f"{utility['models'].iloc[0]}; vs AVG: {describe_rule(rules.utility_vs_avg)}, vs high: "
                     f"{describe_rule(rules.utility_vs_high)} (Tukey-adjusted).")
    if (table["criterion"] == "randomization").any():
        notes.append("Randomization: SSIM of the fully randomized model's map to the trained map minus the "
                     "degradation threshold; PASS when significantly below (one-sided t-test).")
    if table["criterion"].isin(["repeatability", "reproducibility"]).any():
        notes.append(f"Repeatability/Reproducibility: SSIM; vs LOW: mean minus {rules.low_ssim}, PASS when "
                     f"significantly above (one-sided); vs high: difference to the high baseline pair, "
                     f"{describe_rule(rules.similarity_vs_high)} (Tukey-adjusted).")
    if not table["converged"].all():
        notes.append("WARNING: a mixed model did not converge; see the 'converged' column of pass_fail.csv and "
                     "the log before trusting these verdicts.")
    return notes


def pass_fail_markdown(table: pd.DataFrame, model_aucs: pd.DataFrame, alpha: float,
                       rules: DecisionRules = DecisionRules()) -> str:
    """Table 2 layout in Markdown (the columns the table has), followed by the models' test AUCs."""
    header, rows = _table2_cells(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    auc_lines = ["", "| Model | Val AUC | Test AUC |", "|---|---|---|"]
    auc_lines += [f"| {r.model} | {r.val_auc:.3f} | {r.test_auc:.3f} |" for r in model_aucs.itertuples()]
    return "\n".join(lines + [""] + table_notes(table, alpha, rules) + auc_lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def pass_fail_latex(table: pd.DataFrame, model_aucs: pd.DataFrame, alpha: float,
                    rules: DecisionRules = DecisionRules(), caption: str = "") -> str:
    """Table 2 layout as a LaTeX ``table`` (booktabs), with the rules as a note and the models' AUCs."""
    header, rows = _table2_cells(table)
    spec = "l" + "c" * (len(header) - 1)
    out = [r"\begin{table}[ht]", r"\centering", r"\small", f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
           " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    out += [" & ".join(latex_escape(c) for c in cells) + r" \\" for cells in rows]
    out += [r"\bottomrule", r"\end{tabular}"]
    notes = table_notes(table, alpha, rules)
    aucs = "; ".join(f"{r.model}: {r.test_auc:.3f}" for r in model_aucs.itertuples())
    if aucs:
        notes.append(f"Test AUC: {aucs}.")
    out.append(f"\\caption{{{latex_escape(caption or 'Saliency map trustworthiness (PASS/FAIL).')} "
               + " ".join(latex_escape(n) for n in notes) + "}")
    out += [r"\label{tab:pass_fail}", r"\end{table}"]
    return "\n".join(out) + "\n"


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
        log.info("%s mixed model: REML fit by %s, %d observations of %d images, image variance %.4g, residual "
                 "variance %.4g", what, fit.optimizer, fit.n_obs, fit.n_subjects, fit.subject_variance,
                 fit.residual_variance)


def run_pass_fail(utility_path, model_metrics: dict[str, str], primary_models: list[str], methods: list[str],
                  metric: str, alpha: float, csv_path, md_path, pairwise_path, tex_path=None, similarity_path=None,
                  randomization_tests_path=None, randomized_model: str | None = None, high: str | None = None,
                  rules: DecisionRules | dict | None = None, question_paths: dict[str, str] | None = None,
                  dataset: str = "", html_path=None) -> None:
    """Stage entry: the statistics of every criterion, the PASS/FAIL table (CSV, Markdown, LaTeX) of one
    dataset and one table per question of Arun et al. (``question_paths``: utility_vs_avg, utility_vs_high,
    utility_trained_vs_random, similarity_vs_baselines)."""
    from saliency_trust.io import write_csv, write_text

    rules = rules if isinstance(rules, DecisionRules) else DecisionRules.from_config(rules)
    question_paths = question_paths or {}
    utility = pd.read_csv(utility_path, dtype={"image_id": str})
    fit = fit_group_means_lmm(utility_groups(utility, primary_models, methods, metric, high),
                              groups=[AVG, *methods, *([high] if high else [])])
    _check_fit(fit, "utility")
    questions = {"utility_vs_avg": utility_vs_avg(fit, alpha, metric, primary_models, rules.utility_vs_avg)}
    if high:
        questions["utility_vs_high"] = versus_baseline(fit, high, alpha, "utility", rules.utility_vs_high, metric,
                                                       primary_models)
    pairwise_tables = [_pairwise_rows(fit, alpha, "utility", metric)]
    if randomized_model and "weights" in utility and (utility["weights"] == "randomized").any():
        random_table, random_fit = trained_vs_random(utility, randomized_model, methods, metric, alpha,
                                                     rules.trained_vs_random)
        _check_fit(random_fit, "trained vs random utility")
        questions["utility_trained_vs_random"] = random_table
        pairwise_tables.append(_pairwise_rows(random_fit, alpha, "utility_trained_vs_random", metric))
    tables = [questions["utility_vs_avg"], *([questions["utility_vs_high"]] if high else [])]
    if randomization_tests_path and randomized_model:
        tests = pd.read_csv(randomization_tests_path)
        tables.append(randomization_verdicts(tests, randomized_model, methods, alpha))
    similarity_tables = []
    if similarity_path:
        similarity = pd.read_csv(similarity_path, dtype={"image_id": str})
        for criterion in ("repeatability", "reproducibility"):
            if not (similarity["criterion"] == criterion).any():
                log.warning("no %s pairs (needs two replicates / two architectures); column left out", criterion)
                continue
            table, sim_fit = similarity_verdicts(similarity, criterion, methods, high, alpha, primary_models, rules)
            _check_fit(sim_fit, criterion)
            similarity_tables.append(table)
            pairwise_tables.append(_pairwise_rows(sim_fit, alpha, criterion, "ssim"))
    tables += similarity_tables
    if similarity_tables:
        questions["similarity_vs_baselines"] = pd.concat(similarity_tables, ignore_index=True)
    table = pd.concat(tables, ignore_index=True)
    table = table[table["method"].isin(methods)].reset_index(drop=True)  # baselines are not rows of Table 2
    model_aucs = _model_aucs(model_metrics)
    unknown = set(question_paths) - set(questions)
    if unknown:
        raise ValueError(f"no data for the question table(s) {sorted(unknown)}: check the randomization, baselines "
                         "and models of the config")
    questions = {name: q[q["method"].isin(methods)].reset_index(drop=True) for name, q in questions.items()}
    for name, path in question_paths.items():
        write_csv(questions[name], path)
    if html_path:
        write_text(pass_fail_html(table, model_aucs, alpha, rules, questions,
                                  title=f"PASS/FAIL - {dataset}" if dataset else "PASS/FAIL"), html_path)
    write_csv(pd.concat(pairwise_tables, ignore_index=True), pairwise_path)
    write_text(pass_fail_markdown(table, model_aucs, alpha, rules), md_path)
    if tex_path:
        write_text(pass_fail_latex(table, model_aucs, alpha, rules,
                                   caption=f"Saliency map trustworthiness on {dataset}." if dataset else ""), tex_path)
    write_csv(table, csv_path)


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
    note = ("\nOne row per method and dataset; the verdicts follow each dataset's own PASS/FAIL table "
            "(summary/pass_fail.md of that dataset), whose cells give the estimates and p-values.")
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


def pass_fail_html(table: pd.DataFrame, model_aucs: pd.DataFrame, alpha: float,
                   rules: DecisionRules = DecisionRules(), questions: dict[str, pd.DataFrame] | None = None,
                   title: str = "PASS/FAIL") -> str:
    """A self-contained HTML page (no script, inline style) for the report: the Table 2 layout with coloured
    verdicts, how each column was decided, the models' AUCs, and one table per question of Arun et al."""
    from html import escape

    def verdict_cell(text: str) -> str:
        cls = "pass" if text.startswith("PASS") else "fail" if text.startswith("FAIL") else "na"
        return f'<td class="{cls}">{escape(text)}</td>'

    header, rows = _table2_cells(table)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{escape(title)}</title>",
           "<style>body{font-family:sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse;"
           "margin:0.5em 0 1.5em}th,td{border:1px solid #bbb;padding:3px 8px;text-align:center}"
           "td:first-child,th:first-child{text-align:left}.pass{background:#c8f0c8}.fail{background:#f6cccc}"
           ".na{color:#888}</style></head><body>", f"<h2>{escape(title)}</h2>", "<table>",
           "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"]
    for cells in rows:
        out.append(f"<tr><td>{escape(cells[0])}</td>" + "".join(verdict_cell(c) for c in cells[1:]) + "</tr>")
    out.append("</table><ul>" + "".join(f"<li>{escape(n)}</li>" for n in table_notes(table, alpha, rules))
               + "</ul>")
    out.append("<h3>Models</h3><table><tr><th>Model</th><th>Val AUC</th><th>Test AUC</th></tr>")
    out += [f"<tr><td>{escape(r.model)}</td><td>{r.val_auc:.3f}</td><td>{r.test_auc:.3f}</td></tr>"
            for r in model_aucs.itertuples()]
    out.append("</table>")
    for name, q in (questions or {}).items():
        out.append(f"<h3>{escape(QUESTION_TITLES.get(name, name))}</h3><table><tr><th>Method</th><th>Criterion</th>"
                   "<th>Baseline</th><th>Estimate</th><th>95% CI</th><th>p</th><th>Verdict</th></tr>")
        for r in q.itertuples():
            p = "&lt;0.001" if r.p_value < 0.001 else f"{r.p_value:.3f}"
            out.append(f"<tr><td>{escape(str(r.method))}</td><td>{escape(r.criterion)}</td>"
                       f"<td>{escape(str(r.baseline))}</td><td>{r.estimate:+.3f}</td>"
                       f"<td>[{r.ci_low:+.3f}, {r.ci_high:+.3f}]</td><td>{p}</td>" + verdict_cell(r.verdict) + "</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
