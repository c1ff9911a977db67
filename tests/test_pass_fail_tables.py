"""The PASS/FAIL stage in three parts (stats/pass_fail.py): the decision from data frames without file I/O
(:func:`pass_fail_tables`), the writer of the requested files (:func:`write_pass_fail`) and the stage entry
that reads the inputs (:func:`run_pass_fail`, the Snakemake script workflow/scripts/pass_fail.py)."""

from __future__ import annotations

import dataclasses
import json
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import saliency_trust.config
import saliency_trust.io
from saliency_trust.stats.pass_fail import (
    AVG,
    PASS_FAIL_COLUMNS,
    DecisionRules,
    PassFailInputs,
    StatsOptions,
    decide,
    pass_fail_html,
    pass_fail_latex,
    pass_fail_markdown,
    pass_fail_tables,
    run_pass_fail,
    write_pass_fail,
)

SCRIPT = Path(__file__).parents[1] / "workflow" / "scripts" / "pass_fail.py"
PRIMARY = ["a-r1", "a-r2"]
METHODS = ["GOOD", "BAD", "EDGE"]
QUESTIONS = ["utility_vs_avg", "utility_vs_high", "utility_trained_vs_random", "similarity_vs_baselines"]
AUCS = pd.DataFrame({"model": ["a-r1", "a-r2"], "val_auc": [0.91, 0.89], "test_auc": [0.90, 0.88]})
SETTINGS = dict(randomized_model="a-r1", high="UNET", controls=["EDGE"], dataset="toy")


def _frames(n=20):
    """Planted utility, similarity and randomization tests: GOOD localizes, is repeatable and degrades under
    randomization; BAD does none of it; EDGE is a model-independent control."""
    rng = np.random.default_rng(11)
    util, sim = [], []
    for i in range(n):
        iid, base, b = f"{i:03d}", 0.3 + 0.05 * rng.standard_normal(), 0.03 * rng.standard_normal()
        util += [
            (iid, "baseline", AVG, "pr_auc", "trained", base),
            (iid, "baseline", "UNET", "pr_auc", "trained", base + 0.4),
        ]
        for model in PRIMARY:
            util += [
                (iid, model, "GOOD", "pr_auc", "trained", base + 0.2 + 0.03 * rng.standard_normal()),
                (iid, model, "BAD", "pr_auc", "trained", base + 0.03 * rng.standard_normal()),
                (iid, model, "EDGE", "pr_auc", "trained", base + 0.01 * rng.standard_normal()),
            ]
        util += [(iid, "a-r1", m, "pr_auc", "randomized", base + 0.03 * rng.standard_normal()) for m in METHODS]
        for crit, ma, mb in (("repeatability", "a-r1", "a-r2"), ("reproducibility", "a-r1", "b-r1")):
            sim += [
                (iid, crit, ma, mb, m, "ssim", min(1.0, level + b + 0.05 * rng.standard_normal()))
                for m, level in (("GOOD", 0.8), ("BAD", 0.55), ("EDGE", 1.0))
            ]
            sim.append((iid, crit, "unet-r1", "unet-r2", "UNET", "ssim", 0.7 + b + 0.05 * rng.standard_normal()))
    utility = pd.DataFrame(util, columns=["image_id", "model", "method", "metric", "weights", "value"])
    similarity = pd.DataFrame(sim, columns=["image_id", "criterion", "model_a", "model_b", "method", "metric", "value"])
    tests = pd.DataFrame(
        [
            dict(
                model="a-r1",
                method=m,
                mode="cascading",
                step=step,
                n_images=n,
                test="welch",
                estimate=est,
                se=0.02,
                df=40.0,
                p_value=p,
                ci_high=est + 0.03,
                mde=0.05,
                n_draws=1,
            )
            for m, est, p in (("GOOD", -0.2, 1e-5), ("BAD", 0.01, 0.6), ("EDGE", 0.5, 1.0))
            for step in (1, 2)
        ]
    )
    return utility, similarity, tests


@pytest.fixture(scope="module")
def frames():
    return _frames()


@pytest.fixture(scope="module")
def result(frames):
    utility, similarity, tests = frames
    with pytest.MonkeyPatch.context() as mp:  # the decision touches no file
        for name in ("write_csv", "write_text"):
            mp.setattr(saliency_trust.io, name, lambda *a, **k: pytest.fail("pass_fail_tables wrote a file"))
        mp.setattr(pd, "read_csv", lambda *a, **k: pytest.fail("pass_fail_tables read a file"))
        return pass_fail_tables(
            utility, AUCS, PRIMARY, METHODS, "pr_auc", 0.05, similarity=similarity, tests=tests, **SETTINGS
        )


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _outputs(folder: Path, questions=QUESTIONS, tex=True, html=True) -> dict:
    return dict(
        csv_path=folder / "pass_fail.csv",
        md_path=folder / "pass_fail.md",
        pairwise_path=folder / "pairwise.csv",
        tex_path=folder / "pass_fail.tex" if tex else None,
        html_path=folder / "pass_fail.html" if html else None,
        question_paths={name: folder / f"{name}.csv" for name in questions},
    )


# ------------------------------------------------------------------ the decision: data frames in, tables out


def test_tables_equal_the_methods_fits_followed_by_the_controls_fits(frames, result):
    """The same tables as before the split: the methods decided by one family of fits, the controls by their
    own, rows concatenated (methods first)."""
    utility, similarity, tests = frames
    args = dict(similarity=similarity, tests=tests, randomized_model="a-r1", high="UNET")
    q_m, pw_m, t_m, note = decide(utility, PRIMARY, ["GOOD", "BAD"], "pr_auc", 0.05, **args)
    q_c, pw_c, t_c, _ = decide(utility, PRIMARY, ["EDGE"], "pr_auc", 0.05, **args, control=True)
    pd.testing.assert_frame_equal(result.table, pd.concat([t_m, t_c], ignore_index=True))
    pd.testing.assert_frame_equal(result.pairwise, pd.concat(pw_m + pw_c, ignore_index=True))
    assert list(result.questions) == QUESTIONS
    for name in QUESTIONS:
        pd.testing.assert_frame_equal(result.questions[name], pd.concat([q_m[name], q_c[name]], ignore_index=True))
    assert result.design_note == note and result.dataset == "toy" and result.alpha == 0.05
    assert result.model_aucs is AUCS
    assert result.rules == DecisionRules() and result.options == StatsOptions()


def test_planted_verdicts(result):
    assert list(result.table.columns) == PASS_FAIL_COLUMNS
    t = result.table.set_index(["method", "criterion", "baseline"])
    assert t.loc[("GOOD", "utility", AVG), "verdict"] == "PASS" and t.loc[("BAD", "utility", AVG), "verdict"] == "FAIL"
    assert t.loc[("GOOD", "randomization", "threshold"), "verdict"] == "PASS"
    assert t.loc[("BAD", "randomization", "threshold"), "verdict"] == "FAIL"
    assert t.loc[("GOOD", "repeatability", "UNET"), "verdict"] == "PASS"
    assert t.loc[("BAD", "repeatability", "UNET"), "verdict"] == "FAIL"
    assert t.loc[("EDGE", "randomization", "threshold"), "verdict"] == "FAIL"  # the control fails, as it must
    assert list(result.table.drop_duplicates("method")["method"]) == METHODS  # controls after the methods
    assert result.table.set_index("method")["control"].groupby(level=0).all().to_dict() == {
        "BAD": False,
        "EDGE": True,
        "GOOD": False,
    }
    assert result.pairwise["criterion"].str.endswith("(controls)").any()


def test_rules_and_options_come_from_config_dicts_and_change_the_verdicts(frames):
    utility, _, _ = frames
    strict = pass_fail_tables(utility, AUCS, PRIMARY, ["BAD"], "pr_auc", 0.05, high="UNET")
    lenient = pass_fail_tables(
        utility,
        AUCS,
        PRIMARY,
        ["BAD"],
        "pr_auc",
        0.05,
        high="UNET",
        rules={"utility_vs_avg": "not_worse"},
        options={"small_n": 5},
    )
    assert lenient.rules == DecisionRules(utility_vs_avg="not_worse") and lenient.options.small_n == 5
    assert strict.questions["utility_vs_avg"]["verdict"].tolist() == ["FAIL"]
    assert lenient.questions["utility_vs_avg"]["verdict"].tolist() == ["PASS"]
    assert set(strict.questions) == {"utility_vs_avg", "utility_vs_high"} and not strict.table["control"].any()
    with pytest.raises(ValueError, match="stats.rules.utility_vs_avg"):
        pass_fail_tables(utility, AUCS, PRIMARY, ["BAD"], "pr_auc", 0.05, rules={"utility_vs_avg": "maybe"})


def test_result_is_frozen(result):
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.alpha = 0.1


# ------------------------------------------------------------------ the writer


def test_writer_writes_exactly_the_requested_files_with_the_renderings(result, tmp_path):
    write_pass_fail(result, **_outputs(tmp_path))
    files = _files(tmp_path)
    assert set(files) == {
        "pass_fail.csv",
        "pass_fail.md",
        "pass_fail.tex",
        "pass_fail.html",
        "pairwise.csv",
        *(f"{name}.csv" for name in QUESTIONS),
    }
    assert files["pass_fail.csv"] == result.table.to_csv(index=False).encode()
    assert files["pairwise.csv"] == result.pairwise.to_csv(index=False).encode()
    for name in QUESTIONS:
        assert files[f"{name}.csv"] == result.questions[name].to_csv(index=False).encode()
    args = (result.table, result.model_aucs, result.alpha, result.rules)
    assert files["pass_fail.md"].decode() == pass_fail_markdown(*args, result.options, result.design_note)
    assert files["pass_fail.tex"].decode() == pass_fail_latex(
        *args, caption="Saliency map trustworthiness on toy.", options=result.options, design_note=result.design_note
    )
    assert files["pass_fail.html"].decode() == pass_fail_html(
        *args, result.questions, title="PASS/FAIL - toy", options=result.options, design_note=result.design_note
    )
    assert "| EDGE (control) |" in files["pass_fail.md"].decode()


def test_writer_leaves_out_what_is_not_requested(result, tmp_path):
    write_pass_fail(result, **_outputs(tmp_path, questions=["utility_vs_avg"], tex=False, html=False))
    assert set(_files(tmp_path)) == {"pass_fail.csv", "pass_fail.md", "pairwise.csv", "utility_vs_avg.csv"}


def test_writer_names_unknown_question_tables_and_writes_nothing(frames, tmp_path):
    utility, _, _ = frames
    no_high = pass_fail_tables(utility, AUCS, PRIMARY, ["GOOD"], "pr_auc", 0.05)
    unknown = r"\['similarity_vs_baselines', 'utility_trained_vs_random', 'utility_vs_high'\]"
    with pytest.raises(ValueError, match=unknown):
        write_pass_fail(no_high, **_outputs(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # no partial output, not even the folder
    with pytest.raises(ValueError, match="utility_vs_high"):
        no_high.check_questions(["utility_vs_avg", "utility_vs_high"])
    no_high.check_questions(["utility_vs_avg"])


# ------------------------------------------------------------------ the stage entry and the Snakemake script


def _input_files(folder: Path, frames) -> PassFailInputs:
    utility, similarity, tests = frames
    folder.mkdir()
    utility.to_csv(folder / "utility.csv", index=False)
    similarity.to_csv(folder / "similarity.csv", index=False)
    tests.to_csv(folder / "tests.csv", index=False)
    metrics = {}
    for r in AUCS.itertuples():
        metrics[r.model] = str(folder / f"{r.model}.json")
        Path(metrics[r.model]).write_text(json.dumps({"val_auc": r.val_auc, "test_auc": r.test_auc}))
    return PassFailInputs(
        utility=str(folder / "utility.csv"),
        model_metrics=metrics,
        similarity=str(folder / "similarity.csv"),
        randomization_tests=str(folder / "tests.csv"),
    )


class _Named(dict):
    """Stand-in for Snakemake's named lists: attribute and item access."""

    __getattr__ = dict.__getitem__


def test_stage_entry_and_script_write_the_same_bytes_as_decide_then_write(frames, result, tmp_path, monkeypatch):
    inputs = _input_files(tmp_path / "in", frames)
    write_pass_fail(result, **_outputs(tmp_path / "direct"))
    read = run_pass_fail(
        inputs,
        _outputs(tmp_path / "entry"),
        primary_models=PRIMARY,
        methods=METHODS,
        metric="pr_auc",
        alpha=0.05,
        **SETTINGS,
    )
    pd.testing.assert_frame_equal(read.table, result.table)
    monkeypatch.setattr(saliency_trust.config, "setup_logging", lambda path, storage=None: None)
    out = tmp_path / "script"
    snakemake = _Named(
        input=_Named(
            utility=inputs.utility,
            model_metrics=list(inputs.model_metrics.values()),
            similarity=inputs.similarity,
            randomization_tests=inputs.randomization_tests,
        ),
        output=_Named(
            csv=str(out / "pass_fail.csv"),
            md=str(out / "pass_fail.md"),
            html=str(out / "pass_fail.html"),
            tex=str(out / "pass_fail.tex"),
            pairwise=str(out / "pairwise.csv"),
            **{name: str(out / f"{name}.csv") for name in QUESTIONS},
        ),
        params=_Named(
            models=list(inputs.model_metrics),
            primary_models=PRIMARY,
            methods=METHODS,
            metric="pr_auc",
            alpha=0.05,
            randomized_model="a-r1",
            high="UNET",
            rules={},
            questions=QUESTIONS,
            controls=["EDGE"],
            options={},
        ),
        wildcards=_Named(dataset="toy"),
        log=[str(tmp_path / "pass_fail.log")],
        config={},
    )
    runpy.run_path(str(SCRIPT), init_globals={"snakemake": snakemake})
    direct = _files(tmp_path / "direct")
    assert _files(tmp_path / "entry") == direct and _files(out) == direct
