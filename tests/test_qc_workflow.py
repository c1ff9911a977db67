"""End-to-end: the quality-control branch (INFORMER, Shu et al.; docs/quality-control.md) on a tiny multi-label
config through the snakemake command line, and its config rules."""

from __future__ import annotations

import copy
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SNAKEMAKE, planned_jobs
from sklearn.metrics import f1_score

from saliency_trust.validation import ConfigError, validate_config

TINY_QC = REPO / "tests/data/tiny_qc_config.yaml"
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


def snakemake(workdir, *args, timeout=900):
    return subprocess.run(
        [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(TINY_QC), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PYTHONHASHSEED": "0", **__import__("os").environ},
    )


@pytest.fixture(scope="module")
def qc_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("qc_run")
    proc = snakemake(workdir, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir


def test_dry_run_plans_only_the_branch(tmp_path):
    proc = snakemake(tmp_path, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = planned_jobs(proc.stdout)
    assert jobs == {
        "synthetic_dataset": 1,
        "train_model": 1,
        "qc_class_maps": 2,
        "qc_predictions": 1,
        "quality_control": 1,
        "plot_quality_control": 1,
        "all": 1,
    }


@pytest.mark.slow
def test_branch_outputs_follow_the_contract(qc_run):
    qc = qc_run / "results/tiny_ml/qc"
    manifest = pd.read_csv(qc_run / "results/tiny_ml/data/manifest.csv", dtype={"image_id": str})
    n_val, n_test = (int((manifest.split == s).sum()) for s in ("val", "test"))
    labels = ["nodule", "opacity"]
    for method in ("IXG", "LRP"):
        with h5py.File(qc / f"maps/{method}.h5") as h5:
            assert h5["map"].shape == (n_val + n_test, 2, 32, 32)
            assert h5["raw"].shape == (n_val + n_test, 2, 1, 32, 32)
            assert h5.attrs["method"] == method and '"labels": ["nodule", "opacity"]' in h5.attrs["target"]
    methods = ["INFORMER-IXG", "INFORMER-LRP", "Pred. Entropy", "TTA"]
    scores = pd.read_csv(qc / "scores.csv", dtype={"image_id": str})
    assert list(scores.columns) == [
        "image_id", "split", "label", "method", "score", "truth", "probability", "prediction", "flagged", "corrected",
    ]  # fmt: skip
    assert len(scores) == len(methods) * 2 * (n_val + n_test) and set(scores.method) == set(methods)
    assert ((scores.prediction ^ scores.flagged) == scores.corrected).all()
    thresholds = pd.read_csv(qc / "thresholds.csv")
    assert len(thresholds) == len(methods) * 2 and (thresholds.tau >= 0).all()
    for r in thresholds.itertuples():  # the flags are the thresholds' rule
        part = scores[(scores.method == r.method) & (scores.label == r.label)]
        expected = part.score < r.tau if r.method.startswith("INFORMER") else part.score > r.tau
        assert (part.flagged.astype(bool) == expected).all(), (r.method, r.label)
        assert np.isclose((part.prediction == (part.probability >= r.youden_threshold)).mean(), 1)
    f1 = pd.read_csv(qc / "f1.csv")
    test = scores[scores.split == "test"]
    for method in methods:
        for label in labels:
            part = test[(test.method == method) & (test.label == label)]
            row = f1[(f1.method == method) & (f1.label == label)].iloc[0]
            assert np.isclose(row.f1, f1_score(part.truth, part.corrected, zero_division=0))
            assert np.isclose(row.flag_rate, part.flagged.mean())
    no_qc = f1[(f1.method == "No QC") & (f1.label == "nodule")].iloc[0]
    part = test[(test.method == "TTA") & (test.label == "nodule")]
    assert np.isclose(no_qc.f1, f1_score(part.truth, part.prediction, zero_division=0))
    boot = pd.read_csv(qc / "bootstrap.csv")
    assert set(boot["resample"]) == set(range(1, 31)) and set(boot.label) == {*labels, "mean"}
    comparisons = pd.read_csv(qc / "comparisons.csv")
    assert set(zip(comparisons.method, comparisons.baseline)) == {
        (a, b) for a in methods[:2] for b in ("Pred. Entropy", "TTA", "No QC")
    }
    assert (comparisons.n_resamples_t == 30).all() and (comparisons.n_resamples_ci == 200).all()
    table = pd.read_csv(qc / "table1.csv")
    assert list(table.columns) == ["Method", "nodule", "opacity", "Mean F1"]
    assert list(table.Method) == [*methods, "No QC"]
    assert np.allclose(table["Mean F1"], table[["nodule", "opacity"]].mean(axis=1))
    assert "| Method | nodule | opacity | Mean F1 |" in (qc / "table1.md").read_text()
    assert r"\begin{tabular}" in (qc / "table1.tex").read_text()
    assert "Paired comparisons" in (qc / "table1.html").read_text()
    assert (qc / "bootstrap.png").read_bytes()[:4] == b"\x89PNG"
    assert (qc / "bootstrap.pdf").read_bytes()[:5] == b"%PDF-"
    # a QC-only dataset runs no trust criterion
    assert not (qc_run / "results/tiny_ml/saliency").exists() and not (qc_run / "results/tiny_ml/summary").exists()


@pytest.mark.slow
def test_second_run_has_nothing_to_do(qc_run):
    proc = snakemake(qc_run, "-n", "--cores", "2")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr


def _config() -> dict:
    return yaml.safe_load(TINY_QC.read_text())


@pytest.mark.parametrize(
    "edit,needle",
    [
        (
            lambda c: c["qc"].update(datasets=["nowhere"]),
            "config: qc.datasets[0] = 'nowhere': must name a dataset of the config (tiny_ml)",
        ),
        (
            lambda c: c["datasets"]["tiny_ml"]["synthetic"].update(multi_label=False),
            "config: qc.datasets[0] = 'tiny_ml': quality control needs a multi-label dataset; it has the labels "
            "['abnormal'] (set synthetic.multi_label: true)",
        ),
        (
            lambda c: c["qc"].update(model="tiny_resnet-r1"),
            "config: qc.model = 'tiny_resnet-r1': must be one of the configured models simple_cnn-r1",
        ),
        (
            lambda c: c["qc"].update(datasets=[]),
            "config: datasets.tiny_ml.trust_criteria = false: the dataset would run nothing",
        ),
        (lambda c: c["qc"].update(methods=["XRAI"]), "config: qc.methods[0] = 'XRAI': must be one of"),
        (lambda c: c["qc"]["tta"].update(passes=1), "config: qc.tta.passes = 1: must be a number >= 2"),
    ],
)
def test_bad_qc_config_names_the_key(edit, needle):
    cfg = copy.deepcopy(_config())
    edit(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, SCHEMA)
    assert needle in str(err.value)


def test_qc_only_config_needs_no_trust_criteria_settings():
    """One replicate of one architecture is enough when no dataset runs the trust criteria."""
    cfg = copy.deepcopy(_config())
    validate_config(cfg, SCHEMA)
    assert cfg["qc"]["grid_step"] == 0.001 and cfg["qc"]["bootstrap"]["confidence"] == 0.95
    cfg = copy.deepcopy(_config())
    cfg["datasets"]["tiny_ml"]["trust_criteria"] = True
    with pytest.raises(ConfigError, match="repeatability needs >= 2 replicates"):
        validate_config(cfg, SCHEMA)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
