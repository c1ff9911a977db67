"""Killed jobs, reruns and corrupted caches through the snakemake command line (docs/troubleshooting.md, issue 8).

One small workflow (the tiny dataset, one simple_cnn trained for 12 epochs, slow Integrated Gradients so that
the saliency job can be caught mid-way) is run twice: once uninterrupted, once with its training job and then
its saliency job killed (SIGKILL to the whole snakemake process group, as a node failure or ``kill -9``
would) and rerun. The final tables must be equal.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml
from conftest import REPO

TARGETS = ["results/tiny/metrics/utility/simple_cnn-r1.csv", "results/tiny/models/simple_cnn-r1/metrics.json"]
TRAIN_LOG = "results/tiny/logs/train/simple_cnn-r1.log"
SALIENCY_LOG = "results/tiny/logs/saliency/simple_cnn-r1/IG.log"
MAPS = "results/tiny/saliency/simple_cnn-r1/IG.h5"
MODEL = "results/tiny/models/simple_cnn-r1/model.pt"
TABLES = [
    "results/tiny/metrics/utility/simple_cnn-r1.csv",
    "results/tiny/models/simple_cnn-r1/metrics.json",
    "results/tiny/data/manifest.csv",
]

pytestmark = pytest.mark.slow


def _config(path: Path) -> Path:
    """The tiny config cut down to one model and one (deliberately slow) method; utility only."""
    cfg = yaml.safe_load((REPO / "tests/data/tiny_config.yaml").read_text())
    cfg["models"] = [{"arch": "simple_cnn", "replicates": 1, "epochs": 12, "patience": 12}]
    cfg["saliency"] = {"methods": ["IG"], "batch_size": 1, "params": {"IG": {"n_steps": 300}}}
    cfg["stats"] = {"criteria": ["utility"]}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cmd(workdir: Path, config: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--cores",
        "1",
        *args,
    ]


def _run(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run(_cmd(workdir, config, *args), capture_output=True, text=True, env=env, timeout=900)


def _kill_when_logged(workdir: Path, config: Path, log: str, pattern: str) -> None:
    """Start the workflow and SIGKILL its whole process group as soon as ``log`` matches ``pattern``."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    workdir.mkdir(exist_ok=True)
    with open(workdir / "killed_run.out", "a") as out:
        proc = subprocess.Popen(
            _cmd(workdir, config, *TARGETS), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + 600
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                text = (workdir / log).read_text() if (workdir / log).exists() else ""
                if re.search(pattern, text):
                    break
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before '{pattern}' appeared in {log}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """An uninterrupted run and a run whose training and saliency jobs were killed and rerun."""
    base = tmp_path_factory.mktemp("interruption")
    config = _config(base / "config.yaml")
    reference = base / "reference"
    proc = _run(reference, config, *TARGETS)
    assert proc.returncode == 0, proc.stderr[-4000:]

    killed = base / "killed"
    _kill_when_logged(killed, config, TRAIN_LOG, r"epoch 3/12")
    after_training_kill = {
        "model": (killed / MODEL).exists(),
        "resume": (killed / MODEL).with_suffix(".resume.pt").exists(),
        "files": sorted(p.name for p in (killed / MODEL).parent.iterdir()),
    }
    assert _run(killed, config, "--unlock").returncode == 0  # snakemake's own lock, left by the killed run
    _kill_when_logged(killed, config, SALIENCY_LOG, r"IG: [2-9]/\d+ images")
    after_saliency_kill = {"maps": (killed / MAPS).exists(), "training_log": (killed / TRAIN_LOG).read_text()}
    assert _run(killed, config, "--unlock").returncode == 0
    proc = _run(killed, config, *TARGETS)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {
        "reference": reference,
        "killed": killed,
        "config": config,
        "after_training_kill": after_training_kill,
        "after_saliency_kill": after_saliency_kill,
    }


def _same_tables(a: Path, b: Path) -> None:
    for rel in TABLES:
        assert (a / rel).read_text() == (b / rel).read_text(), rel
    history = [pd.read_csv(d / "results/tiny/models/simple_cnn-r1/history.csv").drop(columns="seconds") for d in (a, b)]
    pd.testing.assert_frame_equal(*history)


def test_a_killed_training_job_leaves_no_output_and_resumes_from_its_last_epoch(runs):
    state = runs["after_training_kill"]
    assert not state["model"] and state["resume"], state["files"]  # only the per-epoch checkpoint survives
    log = runs["after_saliency_kill"]["training_log"]  # the rerun's training log
    finished = int(re.search(r"resuming from .*model\.resume\.pt: epoch (\d+) finished", log).group(1))
    assert finished >= 2 and f"epoch {finished + 1}/12" in log and "epoch 1/12" not in log
    assert not (runs["killed"] / MODEL).with_suffix(".resume.pt").exists()  # removed once the model is written


def test_a_killed_saliency_job_leaves_no_output_and_the_final_tables_equal_an_uninterrupted_run(runs):
    assert not runs["after_saliency_kill"]["maps"]
    _same_tables(runs["reference"], runs["killed"])
    leftovers = [p for p in (runs["killed"] / "results").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_long_steps_log_their_progress(runs):
    train = (runs["reference"] / TRAIN_LOG).read_text()
    assert re.search(r"simple_cnn epoch 1/12 train_loss \S+ val_loss \S+ val_auc \S+ \(\d+\.\d images/s\)", train)
    saliency = (runs["reference"] / SALIENCY_LOG).read_text()
    n = json.loads((runs["reference"] / TABLES[1]).read_text())["n_test"]
    assert re.search(r"IG: 1/\d+ images \(\d+\.\d images/s\)", saliency) and n > 0
    data = (runs["reference"] / "results/tiny/logs/data/synthetic_dataset.log").read_text()
    assert "images/s" in data


def test_a_corrupted_cache_in_a_finished_run_is_detected_removed_and_recomputed(runs):
    """Bit rot in a saliency cache (same size and time stamp): the next job reading it stops naming the file and
    removes it; the following run recomputes it and the tables are those of the uninterrupted run again."""
    work, config = runs["killed"], runs["config"]
    stat = (work / MAPS).stat()
    with h5py.File(work / MAPS, "r+") as h5:
        h5["map"][0, 5, 5] = 1.0 - h5["map"][0, 5, 5]
    os.utime(work / MAPS, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(_run(work, config, "-n", *TARGETS))
    proc = _run(work, config, *TARGETS, "--forcerun", "utility_scores")
    assert proc.returncode != 0
    log = (work / "results/tiny/logs/metrics/utility/simple_cnn-r1.log").read_text()
    # utility reads maps in part: the damaged map's row is named
    assert f"{MAPS}: the content of 'map' does not match its checksum (row 0): the file is corrupted" in log
    assert not (work / MAPS).exists()
    proc = _run(work, config, *TARGETS)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "saliency_maps" in proc.stdout + proc.stderr  # recomputed
    _same_tables(runs["reference"], work)
