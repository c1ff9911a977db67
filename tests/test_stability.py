"""Stability mode: run names and seeds, and the PASS/FAIL table across seeds (stats/stability.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from saliency_trust.config import dataset_runs, model_seed, run_dataset, run_seed, split_run, stability_seeds
from saliency_trust.data.prepare import dataset_regex
from saliency_trust.stats.pass_fail import PASS_FAIL_COLUMNS
from saliency_trust.stats.stability import (
    UNSTABLE,
    run_stability,
    stability_cell,
    stability_markdown,
    stability_table,
)

CONFIG = {"seed": 5, "datasets": {"synth": {"source": "synthetic"}, "siim": {"source": "siim"}}}


# ------------------------------------------------------------------ runs


def test_runs_are_the_datasets_unless_seeds_are_given():
    assert stability_seeds(CONFIG) == [] and dataset_runs(CONFIG, "synth") == ["synth"]
    cfg = {**CONFIG, "seeds": [3, 11]}
    assert dataset_runs(cfg, "synth") == ["synth/seed-3", "synth/seed-11"]
    assert split_run("synth/seed-11") == ("synth", 11) and split_run("synth") == ("synth", None)
    assert run_seed(cfg, "synth/seed-11") == 11 and run_seed(cfg, "synth") == 5
    assert run_dataset(cfg, "siim/seed-3") is CONFIG["datasets"]["siim"]
    with pytest.raises(KeyError, match="nope/seed-3"):
        run_dataset(cfg, "nope/seed-3")


def test_a_seed_run_reproduces_the_plain_run_with_that_seed():
    plain = {**CONFIG, "seed": 11}
    seeded = {**CONFIG, "seeds": [3, 11]}
    assert model_seed(seeded, "synth/seed-11", "simple_cnn-r1") == model_seed(plain, "synth", "simple_cnn-r1")
    assert model_seed(seeded, "synth/seed-3", "simple_cnn-r1") != model_seed(plain, "synth", "simple_cnn-r1")


def test_dataset_regex_matches_the_runs_of_its_sources():
    import re

    synthetic = dataset_regex(CONFIG["datasets"], synthetic=True, seeded=True)
    assert re.fullmatch(synthetic, "synth/seed-3") and not re.fullmatch(synthetic, "synth")
    assert not re.fullmatch(synthetic, "siim/seed-3")
    assert re.fullmatch(dataset_regex(CONFIG["datasets"], synthetic=True), "synth")


# ------------------------------------------------------------------ the table across seeds


def _table(verdicts: dict[tuple[str, str, str], str], n_images: int = 60, estimate: float = 0.1) -> pd.DataFrame:
    rows = []
    for (method, criterion, baseline), verdict in verdicts.items():
        est = -estimate if criterion == "randomization" else estimate
        rows.append(
            {c: None for c in PASS_FAIL_COLUMNS}
            | {
                "method": method,
                "criterion": criterion,
                "baseline": baseline,
                "estimate": est,
                "p_value": 0.01,
                "verdict": verdict,
                "n_images": n_images,
                "mde": 0.05,
                "control": False,
            }
        )
    return pd.DataFrame(rows, columns=PASS_FAIL_COLUMNS)


CELLS = [
    ("GRAD", "utility", "AVG"),
    ("GRAD", "randomization", "threshold"),
    ("IG", "utility", "AVG"),
    ("IG", "repeatability", "UNET"),
]


def test_planted_disagreement_is_marked_unstable_and_agreement_counted():
    seeds = {
        1: _table(dict(zip(CELLS, ["PASS", "PASS", "FAIL", "FAIL"]))),
        2: _table(dict(zip(CELLS, ["PASS", "FAIL", "FAIL", "PASS"]))),
        3: _table(dict(zip(CELLS, ["PASS", "PASS", "FAIL", "FAIL"]))),
    }
    table = stability_table(seeds).set_index(["method", "criterion"])
    assert table.loc[("GRAD", "utility"), "verdict"] == "PASS" and table.loc[("GRAD", "utility"), "agreement"] == 1
    assert table.loc[("GRAD", "randomization"), "verdict"] == UNSTABLE
    assert table.loc[("GRAD", "randomization"), "n_pass"] == 2
    assert table.loc[("GRAD", "randomization"), "agreement"] == pytest.approx(2 / 3)
    assert table.loc[("IG", "utility"), "verdict"] == "FAIL" and table.loc[("IG", "utility"), "stable"]
    assert table.loc[("IG", "repeatability"), "verdicts"] == "FAIL;PASS;FAIL"
    assert table["stable"].sum() == 2


def test_a_cell_missing_from_one_seed_is_not_stable():
    seeds = {1: _table(dict(zip(CELLS, ["PASS"] * 4))), 2: _table(dict(zip(CELLS[:3], ["PASS"] * 3)))}
    table = stability_table(seeds).set_index(["method", "criterion"])
    assert table.loc[("IG", "repeatability"), "verdict"] == UNSTABLE
    assert table.loc[("IG", "repeatability"), "verdicts"] == "PASS;n/a"


def test_low_power_fail_in_every_seed_keeps_its_mark():
    seeds = {
        1: _table({CELLS[1]: "FAIL"}, n_images=16, estimate=-0.001),
        2: _table({CELLS[1]: "FAIL"}, n_images=16, estimate=-0.001),
    }
    row = stability_table(seeds).iloc[0]
    assert row["low_power"] and stability_cell(row) == "FAIL† (2/2 seeds)"
    strong = stability_table({1: _table({CELLS[1]: "FAIL"}), 2: _table({CELLS[1]: "FAIL"})}).iloc[0]
    assert not strong["low_power"] and stability_cell(strong) == "FAIL (2/2 seeds)"


def test_stability_needs_two_seeds():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        stability_table({1: _table({CELLS[0]: "PASS"})})


def test_every_format_marks_the_unstable_cell(tmp_path):
    paths = {}
    for seed, verdicts in ((4, ["PASS", "PASS", "FAIL", "FAIL"]), (9, ["PASS", "FAIL", "FAIL", "FAIL"])):
        paths[seed] = tmp_path / f"s{seed}.csv"
        _table(dict(zip(CELLS, verdicts))).to_csv(paths[seed], index=False)
    out = {k: tmp_path / f"out.{k}" for k in ("csv", "md", "tex", "html", "seeds")}
    run_stability(paths, out["csv"], out["md"], out["tex"], out["html"], out["seeds"], dataset="synth")
    csv = pd.read_csv(out["csv"])
    assert list(csv.loc[csv["verdict"] == UNSTABLE, "method"]) == ["GRAD"]
    md = out["md"].read_text()
    assert "| GRAD | PASS (2/2 seeds) | unstable (PASS 1/2) |" in md
    assert "results/synth/seed-<seed>/summary/pass_fail.md" in md
    assert r"\textit{unstable (PASS 1/2)}" in out["tex"].read_text()
    assert '<td class="unstable">unstable (PASS 1/2)</td>' in out["html"].read_text()
    seeds = pd.read_csv(out["seeds"])
    assert list(seeds.columns[:2]) == ["seed", "method"] and sorted(seeds["seed"].unique()) == [4, 9]
    assert md == stability_markdown(stability_table({s: pd.read_csv(p) for s, p in paths.items()}), "synth")


def test_run_regex_matches_runs_of_the_mode():
    import re

    from saliency_trust.config import run_regex

    plain, seeded = CONFIG, {**CONFIG, "seeds": [1, 2]}
    assert re.fullmatch(run_regex(plain), "synth") and not re.fullmatch(run_regex(plain), "synth/seed-1")
    assert re.fullmatch(run_regex(seeded), "synth/seed-1") and not re.fullmatch(run_regex(seeded), "synth")
    assert re.fullmatch(run_regex(seeded, ["synth"]), "synth/seed-2")
    assert not re.fullmatch(run_regex(seeded, ["synth"]), "siim/seed-2")
    assert not re.fullmatch(run_regex(plain, []), "synth")
