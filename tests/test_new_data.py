"""New data redoes only what it affects (docs/new-data.md): end-to-end on a copy of the tiny run, counting the
jobs Snakemake runs and the maps each saliency job computes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, SNAKEMAKE, TINY, planned_jobs

EXPENSIVE = {"train_model", "train_unet", "train_detector", "saliency_maps", "randomized_saliency", "unet_maps"}


@pytest.fixture
def workdir(tiny_run, tmp_path) -> Path:
    """A copy of the finished tiny run (outputs, Snakemake's metadata, the map store), times kept."""
    copy = tmp_path / "work"
    shutil.copytree(tiny_run.parents[1], copy, symlinks=True)
    return copy


def _snakemake(workdir: Path, cfg: dict, *args: str) -> str:
    path = workdir / "changed.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = subprocess.run(
        [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(path), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def _ran(out: str) -> dict[str, int]:
    """Rule -> number of jobs run, from the rule headers Snakemake prints."""
    counts: dict[str, int] = {}
    for name in re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", out, flags=re.M):
        counts[name] = counts.get(name, 0) + 1
    return counts


def _store_counts(workdir: Path, since: float) -> list[tuple[int, int, int]]:
    """(reused, total, computed) of every map-store line of the saliency logs written after ``since``."""
    found = []
    for log in (workdir / "results/tiny/logs/saliency").rglob("*.log"):
        if log.stat().st_mtime < since:
            continue
        for m in re.finditer(r"(\d+) of (\d+) maps reused from the store, (\d+) computed", log.read_text()):
            found.append(tuple(int(v) for v in m.groups()))
    return found


def _config(**synthetic) -> dict:
    cfg = yaml.safe_load(TINY.read_text())
    cfg["datasets"]["tiny"]["synthetic"].update(synthetic)
    return cfg


@pytest.mark.slow
def test_new_annotations_rerun_no_training_and_no_saliency(workdir):
    """A fourth rater's boxes: the data, the human reference and what reads them rerun; no model, no map."""
    out = _snakemake(workdir, _config(raters=4), "--cores", "2")
    ran = _ran(out)
    assert not EXPENSIVE & set(ran), ran
    assert {"synthetic_dataset", "rater_reference", "utility_table", "pass_fail"} <= set(ran), ran
    raters = pd.read_csv(workdir / "results/tiny/metrics/raters/per_rater.csv", dtype=str)
    assert "4" in set(raters["rater"]), raters["rater"].unique()
    assert "Nothing to be done" in _snakemake(workdir, _config(raters=4), "-n", "--cores", "2")


@pytest.mark.slow
def test_new_test_images_explain_only_themselves(workdir):
    """12 images added to the test split: no training; the saliency jobs compute the new positives' maps only
    (the others come from the store), and a dry run after the data preparation names why each job runs."""
    t0 = _now(workdir)
    cfg = _config(test_images=12)
    _snakemake(workdir, cfg, "--cores", "2", "--until", "synthetic_dataset")
    plan = _snakemake(workdir, cfg, "-n", "--cores", "2")
    planned = planned_jobs(plan)
    assert "train_model" not in planned and "train_unet" not in planned, planned
    assert planned["saliency_maps"] == 12 and planned["randomized_saliency"] == 4, planned
    assert "Params have changed since last execution" in plan and "explained: " in plan

    out = _snakemake(workdir, cfg, "--cores", "2")
    ran = _ran(out)
    assert "train_model" not in ran and "train_unet" not in ran, ran
    manifest = pd.read_csv(workdir / "results/tiny/data/manifest.csv", dtype={"image_id": str})
    new = manifest[manifest["image_id"].str.startswith("syntest")]
    assert len(new) == 12 and set(new["split"]) == {"test"}
    n_new, n_all = int(new["abnormal"].sum()), int(((manifest["split"] == "test") & (manifest["abnormal"] > 0)).sum())
    assert n_new > 0
    counts = _store_counts(workdir, t0)
    trained = [c for c in counts if c[1] == n_all]
    assert len(trained) == 12, counts  # 3 models x 4 methods (GRAD, IG, GCAM, EDGE)
    assert all(c == (n_all - n_new, n_all, n_new) for c in trained), trained
    assert "Nothing to be done" in _snakemake(workdir, cfg, "-n", "--cores", "2")


@pytest.mark.slow
def test_new_training_images_retrain_and_the_dry_run_says_why(workdir):
    """More images (most of them training images) retrain the models; after the data preparation a dry run
    names the part of the data that changed."""
    cfg = _config(n_images=200)
    _snakemake(workdir, cfg, "--cores", "2", "--until", "synthetic_dataset")
    plan = _snakemake(workdir, cfg, "-n", "--cores", "2")
    assert planned_jobs(plan)["train_model"] == 3 and planned_jobs(plan)["train_unet"] == 2, planned_jobs(plan)
    assert re.search(r"before: .*trainval: \d+ images.* now: .*trainval: \d+ images", plan), plan[-3000:]


@pytest.mark.slow
def test_a_changed_method_parameter_reruns_only_its_maps(workdir):
    """A changed IG parameter reruns IG's maps (each model's and the randomized model's) and what depends on
    them; no data preparation, no training, no other method's maps."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["saliency"]["params"]["IG"]["n_steps"] = 6
    plan = planned_jobs(_snakemake(workdir, cfg, "-n", "--cores", "2"))
    assert "train_model" not in plan and "synthetic_dataset" not in plan and "unet_maps" not in plan, plan
    assert plan["saliency_maps"] == 3 and plan["randomized_saliency"] == 1, plan


def _now(workdir: Path) -> float:
    probe = workdir / ".probe"
    probe.write_text("")
    return probe.stat().st_mtime


@pytest.mark.slow
def test_an_external_test_set_evaluates_the_source_models_without_training(workdir):
    """A second site (evaluate: {models_from: tiny}): every image is a test image, nothing is trained, its maps
    come from tiny's models and U-Nets, and the cross-dataset summary shows both datasets."""
    import h5py

    from saliency_trust.io import sha256_file

    cfg = yaml.safe_load(TINY.read_text())
    cfg["datasets"]["site2"] = {
        "source": "synthetic",
        "evaluate": {"models_from": "tiny"},
        "synthetic": {
            "n_images": 60,
            "image_size": 32,
            "contrast_min": 0.2,
            "contrast_max": 0.35,
            "noise_std": 0.08,
            "raters": 3,
        },
    }
    ran = _ran(_snakemake(workdir, cfg, "--cores", "2"))
    assert not {"train_model", "train_unet"} & set(ran), ran
    site = workdir / "results/site2"
    manifest = pd.read_csv(site / "data/manifest.csv", dtype={"image_id": str})
    assert len(manifest) == 60 and set(manifest["split"]) == {"test"}
    tiny = pd.read_csv(workdir / "results/tiny/data/manifest.csv", dtype={"image_id": str})
    with h5py.File(site / "data/images.h5") as a, h5py.File(workdir / "results/tiny/data/images.h5") as b:
        assert not (a["image"][0] == b["image"][0]).all()  # images of its own, not the source's
    assert not (site / "models/simple_cnn-r1/model.pt").exists() and not (site / "baselines").exists()
    with h5py.File(site / "saliency/simple_cnn-r1/GRAD.h5") as h5:
        assert h5.attrs["model_sha256"] == sha256_file(workdir / "results/tiny/models/simple_cnn-r1/model.pt")
        assert len(h5["image_id"]) == int(manifest["abnormal"].sum())
    evaluation = json.loads((site / "models/simple_cnn-r1/evaluation.json").read_text())
    assert evaluation["n_test"] == 60 and 0 <= evaluation["test_auc"] <= 1
    summary = pd.read_csv(workdir / "results/summary/pass_fail.csv")
    assert {"tiny", "site2"} <= set(summary["dataset"]), summary.columns.tolist()
    assert len(tiny) == 160
