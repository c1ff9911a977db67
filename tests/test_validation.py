"""Known-answer validation end to end: the shortcut check flags a planted shortcut and not a marker that carries
no label information, and the EDGE control map (Adebayo et al. 2018) FAILs randomization (Arun et al.)."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest
import yaml
from conftest import REPO, SNAKEMAKE, TINY
from snakemake.utils import validate

from saliency_trust.metrics.shortcut import FLAG_CLEAR, FLAG_RAISED, SUMMARY_COLUMNS

PRESET = REPO / "config/presets/validation.yaml"
SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


def tiny_validation_config() -> dict:
    """The tiny config's benchmark twice: ``shortcut`` (marker on every positive and no negative image, faint
    lesions: a classifier reads the marker) and ``unconfounded`` (the marker on half of all images independently
    of the label: it carries no label information). One model, GRAD and the EDGE control, no high baseline."""
    cfg = yaml.safe_load(TINY.read_text())
    base = cfg["datasets"]["tiny"]
    synthetic = {**base["synthetic"], "contrast_min": 0.08, "contrast_max": 0.2, "raters": 0}
    splits = {**base["splits"], "test_fraction": 0.25}

    def dataset(p_positive: float, p_negative: float) -> dict:
        shortcut = {"enabled": True, "p_positive": p_positive, "p_negative": p_negative}
        return {"source": "synthetic", "splits": splits, "synthetic": {**synthetic, "shortcut": shortcut}}

    cfg["datasets"] = {"shortcut": dataset(1.0, 0.0), "unconfounded": dataset(0.5, 0.5)}
    cfg["models"] = [{"arch": "simple_cnn", "replicates": 1}]
    cfg["training"].update(epochs=3, patience=3)
    cfg["saliency"] = {"methods": ["GRAD"], "controls": ["EDGE"]}
    cfg["metrics"] = {"human_reference": False, "shortcut": {"n_bootstrap": 500}}
    cfg["baselines"] = {"high": "none"}
    cfg["stats"] = {"criteria": ["utility", "randomization"]}
    return cfg


def snakemake(workdir, configfile, *args, timeout: float = 900) -> subprocess.CompletedProcess:
    """The snakemake command line on the repository's Snakefile and ``configfile`` alone, in ``workdir``."""
    return subprocess.run(
        [
            *SNAKEMAKE,
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--replace-workflow-config",
            "--configfile",
            str(configfile),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_validation_preset_is_valid_and_checks_only_the_confounded_dataset(tmp_path):
    cfg = yaml.safe_load(PRESET.read_text())
    validate(cfg, SCHEMA)
    honest, shortcut = cfg["datasets"]["honest"], cfg["datasets"]["shortcut"]
    assert not honest["synthetic"]["shortcut"]["enabled"]
    assert shortcut["synthetic"]["shortcut"] == {"enabled": True, "p_positive": 0.9, "p_negative": 0.1}
    # the same benchmark but for the marker
    assert {k: v for k, v in honest["synthetic"].items() if k != "shortcut"} == {
        k: v for k, v in shortcut["synthetic"].items() if k != "shortcut"
    }
    assert cfg["saliency"]["controls"] == ["EDGE"]
    proc = snakemake(tmp_path, PRESET, "-n", "--cores", "1", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "results/shortcut/summary/shortcut.md" in out and "results/honest/summary/shortcut.md" not in out
    assert "results/honest/saliency/simple_cnn-r1/EDGE.h5" in out
    assert not (tmp_path / "results").exists()


def test_a_confounder_needs_source_generic(tmp_path):
    from snakemake.exceptions import WorkflowError

    cfg = tiny_validation_config()
    cfg["datasets"]["shortcut"]["confounder"] = {"column": "shortcut_marker", "region": [0, 0, 4, 4]}
    with pytest.raises(WorkflowError, match="confounder is only used by source generic"):
        validate(cfg, SCHEMA)


@pytest.mark.slow
def test_shortcut_flag_and_edge_control_end_to_end(tmp_path):
    configfile = tmp_path / "tiny_validation.yaml"
    configfile.write_text(yaml.safe_dump(tiny_validation_config()))
    targets = [
        "results/shortcut/summary/shortcut.md",
        "results/unconfounded/summary/shortcut.md",
        "results/shortcut/summary/randomization_tests.csv",
    ]
    proc = snakemake(tmp_path, configfile, "--cores", "2", *targets)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for dataset, raised in (("shortcut", True), ("unconfounded", False)):
        res = tmp_path / "results" / dataset
        summary = pd.read_csv(res / "summary/shortcut.csv")
        assert list(summary.columns) == SUMMARY_COLUMNS
        flag = summary[summary.analysis == "flag"]
        assert flag.value.tolist() == [float(raised)], dataset
        line = (res / "summary/shortcut.md").read_text().splitlines()[2]
        assert line.startswith(FLAG_RAISED if raised else FLAG_CLEAR), line
        aucs = summary[summary.analysis == "auc"]
        assert set(aucs.condition) == {"original", "marker_removed", "marker_added", "marker_random"}
        assert aucs.value.between(0, 1).all()
        mass = summary[(summary.analysis == "mass") & (summary.metric == "enrichment_marker")]
        assert set(mass.method) == {"GRAD", "EDGE"} and set(mass[mass.control].method) == {"EDGE"}
        assert {"utility", "auc_drop"} <= set(summary.analysis)
        # the marker's box is known for every test image, and in the manifest's marker column
        regions = pd.read_csv(res / "metrics/confounder_regions.csv")
        manifest = pd.read_csv(res / "data/manifest.csv").set_index("image_id")
        assert regions.image_id.tolist() == manifest.index[manifest.split == "test"].tolist()
        assert (regions.marker.to_numpy() == manifest.loc[regions.image_id, "shortcut_marker"].to_numpy()).all()
        assert (regions.width > 0).all() and (regions.x + regions.width <= 32).all()
        if dataset == "shortcut":  # p_positive 1, p_negative 0: the marker is the label
            assert (regions.marker.to_numpy() == manifest.loc[regions.image_id, "abnormal"].to_numpy()).all()
        assert (res / "logs/validation/shortcut_check.log").stat().st_size > 0
    # the EDGE control ignores the weights: SSIM 1 at every step, never below the threshold -> FAILs randomization
    tests = pd.read_csv(tmp_path / "results/shortcut/summary/randomization_tests.csv")
    edge = tests[(tests.method == "EDGE") & (tests["mode"] == "cascading")]
    last = edge[edge.step == edge.step.max()]
    assert len(last) == 1 and not last.below.astype(bool).any()
    assert (edge.mean_ssim == 1).all()
    grad = tests[(tests.method == "GRAD") & (tests.step == tests.step.max())]
    assert grad.mean_ssim.iloc[0] < 1
