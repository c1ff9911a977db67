"""Stability of the verdicts across seeds (stability mode, config ``seeds``).

A PASS/FAIL table describes one draw of everything random in a run: the data
split (and, for the synthetic benchmark, the data), the trained weights, the
re-initializations and the U-Net pair. The stability mode repeats the whole run
once per seed; this module puts the runs' tables side by side. For each Table 2
cell it reports how many seeds gave PASS and the share of seeds that agree with
the majority verdict; a cell is *stable* when every seed gave the same verdict,
and *unstable* otherwise. An unstable verdict says that the method's verdict on
this dataset depends on the training run, so neither PASS nor FAIL can be
reported for it.
"""

from __future__ import annotations

import pandas as pd

from saliency_trust.stats.pass_fail import (
    LOW_POWER_MARK,
    _table2_cells,
    baseline_role,
    html_head,
    latex_escape,
    latex_table,
    low_power,
    markdown_table,
)

UNSTABLE = "unstable"
KEYS = ["method", "criterion", "baseline"]
STABILITY_COLUMNS = [
    *KEYS,
    "control",
    "verdict",
    "n_seeds",
    "n_pass",
    "agreement",
    "stable",
    "seeds",
    "verdicts",
    "low_power",
    "estimate_mean",
    "estimate_min",
    "estimate_max",
    "p_max",
    "n_images",
]


def seed_table(tables: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Every seed's PASS/FAIL rows in one long table, ``seed`` first."""
    if len(tables) < 2:
        raise ValueError(f"the stability table needs the PASS/FAIL tables of at least 2 seeds, got {len(tables)}")
    long = pd.concat([t.assign(seed=int(s)) for s, t in tables.items()], ignore_index=True)
    return long[["seed", *[c for c in long.columns if c != "seed"]]]


def stability_table(tables: dict[int, pd.DataFrame], small_n: int = 30) -> pd.DataFrame:
    """One row per Table 2 cell (method x criterion x baseline) over the seeds' tables.

    ``verdict`` is the seeds' common verdict, or ``unstable`` when they differ (a cell missing from a seed's
    table counts as a disagreement); ``agreement`` is the share of seeds that gave the majority verdict;
    ``low_power`` is true when every seed's FAIL was a low-power FAIL (:func:`saliency_trust.stats.pass_fail.
    low_power`). The high baseline may carry a different name per seed only through its role, so cells are
    matched by (method, criterion, baseline role).
    """
    long = seed_table(tables)
    long = long.assign(role=long["baseline"].map(baseline_role))
    seeds = [int(s) for s in tables]
    rows = []
    for (method, criterion, _role), cell in long.groupby(["method", "criterion", "role"], sort=False):
        cell = cell.set_index("seed").reindex(seeds)
        verdicts = cell["verdict"].fillna("n/a")
        counts = verdicts.value_counts()
        n_pass = int(counts.get("PASS", 0))
        stable = len(counts) == 1 and verdicts.iloc[0] != "n/a"
        weak = [low_power(r, small_n) for r in cell.dropna(subset=["verdict"]).itertuples()]
        rows.append(
            {
                "method": method,
                "criterion": criterion,
                "baseline": cell["baseline"].dropna().iloc[0],
                "control": bool((cell["control"] == True).any()) if "control" in cell else False,  # noqa: E712
                "verdict": verdicts.iloc[0] if stable else UNSTABLE,
                "n_seeds": len(seeds),
                "n_pass": n_pass,
                "agreement": float(counts.max() / len(seeds)),
                "stable": bool(stable),
                "seeds": ";".join(map(str, seeds)),
                "verdicts": ";".join(verdicts),
                "low_power": bool(stable and verdicts.iloc[0] == "FAIL" and all(weak)),
                "estimate_mean": float(cell["estimate"].mean()),
                "estimate_min": float(cell["estimate"].min()),
                "estimate_max": float(cell["estimate"].max()),
                "p_max": float(cell["p_value"].max()),
                "n_images": int(cell["n_images"].min()),
            }
        )
    return pd.DataFrame(rows, columns=STABILITY_COLUMNS)


def stability_cell(row) -> str:
    """``PASS (3/3 seeds)``, ``FAIL† (3/3 seeds)`` or ``unstable (PASS 1/3)``."""
    if row.stable:
        mark = LOW_POWER_MARK if row.low_power else ""
        return f"{row.verdict}{mark} ({row.n_seeds}/{row.n_seeds} seeds)"
    return f"{UNSTABLE} (PASS {row.n_pass}/{row.n_seeds})"


def stability_notes(table: pd.DataFrame, dataset: str = "") -> list[str]:
    """What the cells of the table across seeds mean, and where each seed's own table lives."""
    seeds = table["seeds"].iloc[0].split(";") if len(table) else []
    where = f"results/{dataset}/seed-<seed>/summary/pass_fail.md" if dataset else "seed-<seed>/summary/pass_fail.md"
    n_unstable = int((~table["stable"]).sum())
    notes = [
        f"Stability mode: the whole run (data split, training, saliency maps, randomization draws, baselines, "
        f"statistics) was repeated with seeds {', '.join(seeds)}. A cell gives the verdict every seed agreed on, "
        f"with the number of seeds; {UNSTABLE} marks a cell on which the seeds disagree (PASS k/n: k of the n seeds "
        f"passed): its verdict depends on the training run, so neither PASS nor FAIL can be reported.",
        f"{n_unstable} of {len(table)} cells are {UNSTABLE}; the agreement of every cell is in column 'agreement' "
        f"of pass_fail.csv, each seed's rows in pass_fail_seeds.csv.",
        f"Each seed's verdicts follow the rules and tests in the notes of its own table ({where}).",
    ]
    if table["low_power"].any():
        notes.append(
            f"{LOW_POWER_MARK} every seed's FAIL rests on few images (stats.small_n): the effect was not "
            "shown, which is not the same as absent."
        )
    return notes


def stability_markdown(table: pd.DataFrame, dataset: str = "") -> str:
    """Table 2 layout with one cell per verdict across seeds, followed by the notes."""
    lines = markdown_table(*_table2_cells(table, cell=stability_cell))
    return "\n".join(lines + [""] + ["- " + n for n in stability_notes(table, dataset)]) + "\n"


def stability_latex(table: pd.DataFrame, dataset: str = "") -> str:
    """Table 2 layout across seeds as a LaTeX ``table`` (booktabs); unstable cells in italics."""
    header, rows = _table2_cells(table, cell=stability_cell)

    def fmt(cell: str) -> str:
        text = latex_escape(cell)
        return f"\\textit{{{text}}}" if cell.startswith(UNSTABLE) else text

    caption = f"Saliency map trustworthiness across seeds{' on ' + dataset if dataset else ''}."
    return latex_table(header, rows, caption, stability_notes(table, dataset), "tab:pass_fail_stability", fmt)


def stability_html(table: pd.DataFrame, dataset: str = "") -> str:
    """A self-contained HTML page of the table across seeds (unstable cells in amber)."""
    from html import escape

    header, rows = _table2_cells(table, cell=stability_cell)

    def td(text: str) -> str:
        cls = (
            "unstable"
            if text.startswith(UNSTABLE)
            else "pass"
            if text.startswith("PASS")
            else "fail"
            if text.startswith("FAIL")
            else "na"
        )
        return f'<td class="{cls}">{escape(text)}</td>'

    title = f"PASS/FAIL across seeds{' - ' + dataset if dataset else ''}"
    out = html_head(title, header)
    out += [f"<tr><td>{escape(cells[0])}</td>" + "".join(td(c) for c in cells[1:]) + "</tr>" for cells in rows]
    out.append("</table><ul>" + "".join(f"<li>{escape(n)}</li>" for n in stability_notes(table, dataset)) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def run_stability(
    paths: dict[int, str], csv_path, md_path, tex_path, html_path, seeds_path, dataset: str = "", small_n: int = 30
) -> None:
    """Stage entry: the PASS/FAIL table across the seeds' tables (``paths``: seed -> pass_fail.csv)."""
    from saliency_trust.io import write_csv, write_text

    tables = {int(s): pd.read_csv(p) for s, p in paths.items()}
    table = stability_table(tables, small_n)
    write_csv(seed_table(tables), seeds_path)
    write_text(stability_markdown(table, dataset), md_path)
    write_text(stability_latex(table, dataset), tex_path)
    write_text(stability_html(table, dataset), html_path)
    write_csv(table, csv_path)
