"""Evaluation of quality control on the test split (Shu et al., INFORMER, "Dataset and Evaluation Details",
Results, Table 1 and Fig. 3).

- F1 per class and its mean over classes, after each method's flagged test predictions are flipped, and with
  no quality control at all;
- seeded bootstrap resamples of the test images (sampling with replacement to the test set's size, the same
  resamples for every method: paired); the paper's 30 resamples give the box plot and a paired t-test of the
  mean F1 of each INFORMER variant against each baseline;
- a paired bootstrap interval of each difference (``qc.bootstrap.ci_resamples`` resamples): the t-test's
  p-value shrinks as resamples are added, since resamples of one test set are not independent test sets, so
  the conclusion is read from the interval (docs/quality-control.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from saliency_trust.qc.thresholds import f1_from_counts

NO_QC = "No QC"


def confusion_counts(prediction: np.ndarray, truth: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(TP, FP, FN) of N x L predictions, per class; ``weights`` (R x N, how often each image is drawn) gives
    R x 3 x L counts of R resamples."""
    pred, truth = np.asarray(prediction).astype(bool), np.asarray(truth).astype(bool)
    cells = np.stack([pred & truth, pred & ~truth, ~pred & truth]).astype(np.float64)  # 3 x N x L
    if weights is None:
        return cells.sum(axis=1)
    return np.einsum("rn,knl->rkl", np.asarray(weights, np.float64), cells)


def f1_per_class(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """F1 of each class (column) of N x L binary predictions."""
    tp, fp, fn = confusion_counts(prediction, truth)
    return f1_from_counts(tp, fp, fn)


def bootstrap_weights(n_images: int, n_resamples: int, seed: int, start: int = 0, stop: int | None = None):
    """How often each test image is drawn in resamples ``start .. stop`` of the seeded bootstrap (R x N). Each
    resample draws ``n_images`` indices with replacement from ``default_rng([seed, r])``: resample ``r`` is the
    same whatever the number of resamples asked for."""
    stop = n_resamples if stop is None else stop
    out = np.zeros((stop - start, n_images), np.int32)
    for k, r in enumerate(range(start, stop)):
        idx = np.random.default_rng([seed, r]).integers(0, n_images, size=n_images)
        out[k] = np.bincount(idx, minlength=n_images)
    return out


def bootstrap_f1(
    predictions: dict[str, np.ndarray], truth: np.ndarray, n_resamples: int, seed: int, chunk: int = 100
) -> dict[str, np.ndarray]:
    """F1 per resample and class (R x L) of each method's N x L predictions, on the same resamples."""
    out = {name: [] for name in predictions}
    for start in range(0, n_resamples, chunk):
        weights = bootstrap_weights(len(truth), n_resamples, seed, start, min(start + chunk, n_resamples))
        for name, pred in predictions.items():
            counts = confusion_counts(pred, truth, weights)
            out[name].append(f1_from_counts(counts[:, 0], counts[:, 1], counts[:, 2]))
    return {name: np.concatenate(v) for name, v in out.items()}


def stars(p: float) -> str:
    """The paper's marks (Fig. 3): ``***`` p <= 0.001, ``**`` p <= 0.01, ``*`` p <= 0.05."""
    if not np.isfinite(p):
        return ""
    return "***" if p <= 0.001 else "**" if p <= 0.01 else "*" if p <= 0.05 else ""


def paired_comparisons(
    mean_f1_t: dict[str, np.ndarray],
    mean_f1_ci: dict[str, np.ndarray],
    informer: list[str],
    baselines: list[str],
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per (INFORMER variant, baseline): the paper's paired t-test on the mean F1 of the t-test
    resamples, and the percentile interval of the paired difference over the interval's resamples.

    ``conclusion``: ``better`` when the interval lies above 0, ``worse`` below 0, else ``no difference shown``.
    Where every paired difference is 0 (both flag the same images) the t-test is undefined: p is NaN."""
    from scipy import stats

    rows = []
    for a in informer:
        for b in baselines:
            diff_t = mean_f1_t[a] - mean_f1_t[b]
            diff_ci = mean_f1_ci[a] - mean_f1_ci[b]
            if np.allclose(diff_t, diff_t[0]):  # constant differences: the t statistic is undefined
                t_stat, p = np.nan, np.nan
            else:
                res = stats.ttest_rel(mean_f1_t[a], mean_f1_t[b])
                t_stat, p = float(res.statistic), float(res.pvalue)
            tail = (1 - confidence) / 2
            lo, hi = np.quantile(diff_ci, [tail, 1 - tail])
            rows.append(
                {
                    "method": a,
                    "baseline": b,
                    "mean_f1_difference": float(diff_t.mean()),
                    "t": t_stat,
                    "df": len(diff_t) - 1,
                    "p_value": p,
                    "stars": stars(p),
                    "n_resamples_t": len(diff_t),
                    "ci_low": float(lo),
                    "ci_high": float(hi),
                    "ci_level": confidence,
                    "n_resamples_ci": len(diff_ci),
                    "conclusion": "better" if lo > 0 else "worse" if hi < 0 else "no difference shown",
                }
            )
    return pd.DataFrame(rows)


def table1(f1: pd.DataFrame, methods: list[str], labels: list[str], titles: dict[str, str]) -> pd.DataFrame:
    """The layout of the paper's Table 1: one row per method (INFORMER variants, baselines, no QC), one column
    per class (its title) and the mean F1, from the long ``f1`` table (method, label, f1; label ``mean``)."""
    wide = f1.pivot(index="method", columns="label", values="f1")
    out = wide.reindex(index=methods, columns=[*labels, "mean"])
    out.columns = [titles.get(c, c) for c in labels] + ["Mean F1"]
    out.index.name = "Method"
    return out.reset_index()


def _fmt(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3f}"


def table1_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of :func:`table1`'s output; the best value of each column in ``**bold**``."""
    header = list(table.columns)
    best = {c: table[c].max() for c in header[1:]}
    rows = []
    for _, row in table.iterrows():
        cells = [str(row["Method"])]
        for c in header[1:]:
            text = _fmt(row[c])
            cells.append(f"**{text}**" if np.isfinite(row[c]) and row[c] == best[c] else text)
        rows.append(cells)
    return header, rows


def table1_markdown(table: pd.DataFrame, title: str, notes: list[str]) -> str:
    from saliency_trust.stats.pass_fail import markdown_table

    out = [f"# {title}", "", *markdown_table(*table1_cells(table))]
    out += ["", *[f"- {n}" for n in notes]]
    return "\n".join(out) + "\n"


def table1_latex(table: pd.DataFrame, title: str, notes: list[str]) -> str:
    from saliency_trust.stats.pass_fail import latex_escape, latex_table

    def cell(text: str) -> str:
        return f"\\textbf{{{latex_escape(text[2:-2])}}}" if text.startswith("**") else latex_escape(text)

    header, rows = table1_cells(table)
    return latex_table(header, rows, title, notes, "tab:informer", cell=cell)


def table1_html(table: pd.DataFrame, title: str, notes: list[str], comparisons: pd.DataFrame) -> str:
    """Self-contained HTML page of Table 1, the paired comparisons and the notes (the report's section)."""
    from html import escape

    from saliency_trust.stats.pass_fail import html_head

    header, rows = table1_cells(table)
    out = html_head(title, header)
    for cells in rows:
        tds = "".join(
            f"<td><b>{escape(c[2:-2])}</b></td>" if c.startswith("**") else f"<td>{escape(c)}</td>" for c in cells
        )
        out.append(f"<tr>{tds}</tr>")
    out.append("</table>")
    if len(comparisons):
        cols = ["method", "baseline", "mean_f1_difference", "t", "p_value", "ci_low", "ci_high", "conclusion"]
        out.append("<h3>Paired comparisons of the mean F1 on bootstrap resamples</h3><table>")
        out.append("<tr>" + "".join(f"<th>{escape(c)}</th>" for c in cols) + "</tr>")
        for _, r in comparisons.iterrows():
            vals = [r[c] if isinstance(r[c], str) else _fmt(float(r[c])) for c in cols]
            out.append("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in vals) + "</tr>")
        out.append("</table>")
    out.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul></body></html>")
    return "\n".join(out) + "\n"
