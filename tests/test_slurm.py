"""The workflow on a real SLURM cluster through the slurm profile (docs/clusters.md).

A one-node cluster (munged, slurmctld, slurmd; tests/slurm/) runs on localhost; the tiny config is
submitted with ``--profile workflow/profiles/slurm`` and the flags a cluster without accounting
storage needs. Every job that is not a local rule becomes an sbatch job; the tables must equal those
of a local run. The cluster has two fake GPUs, so the GPU rules' ``gpu=1`` is a real ``--gpus=1``
request while torch finds no CUDA and falls back to the CPU. Skipped, with the reason, only where
SLURM is missing and cannot be installed (or cannot run: not root, a foreign SLURM config).
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake
from slurm_cluster import LocalSlurm, ensure_slurm, foreign_slurm_config

pytestmark = pytest.mark.slow

PROFILE = REPO / "workflow/profiles/slurm"
# the flags of docs/clusters.md for a cluster without accounting storage (no slurmdbd)
NO_ACCOUNTING = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--default-resources",
    "slurm_account=none",
]
TABLES = [
    "data/manifest.csv",
    "metrics/utility.csv",
    "metrics/randomization.csv",
    "metrics/similarity.csv",
    "metrics/randomization_threshold.csv",
    "summary/randomization_tests.csv",
    "summary/pass_fail.csv",
    "summary/pairwise.csv",
    "models/simple_cnn-r1/history.csv",
    "models/tiny_resnet-r1/history.csv",
    "baselines/unet-r1/history.csv",
]
# logs of the local rules (common.smk localrules), relative to results/tiny/logs
LOCAL_RULES = {
    "utility_table",
    "randomization_table",
    "randomization_tests",
    "pass_fail",
    "plot_utility",
    "plot_randomization",
    "plot_similarity",
    "plot_randomization_examples",
    "plot_examples",
    "plot_training_curves",
    "constant_maps",
}  # cross_dataset_summary: not in a one-dataset run
LOCAL_LOGS = {
    "metrics/utility_table.log",
    "metrics/randomization_table.log",
    "stats/randomization_tests.log",
    "stats/pass_fail.log",
    "plots/utility.log",
    "plots/randomization.log",
    "plots/similarity.log",
    "plots/randomization_examples.log",
    "plots/examples.log",
    "plots/training_curves.log",
    "saliency/constant_maps.log",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = ensure_slurm()
    if reason is not None:
        pytest.skip(f"no SLURM: {reason}")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's slurmd must run as root")
    foreign = foreign_slurm_config()
    if foreign is not None:
        pytest.skip(f"this machine has its own SLURM configuration ({foreign}); the test brings up a private one")
    slurm = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    slurm.start()
    yield slurm
    slurm.stop()


def _failure(proc, workdir: Path, slurm: LocalSlurm) -> str:
    """The end of Snakemake's output, of the failed jobs' SLURM logs and of slurmctld's log."""
    text = (proc.stdout + proc.stderr)[-4000:]
    for log in sorted(workdir.glob(".snakemake/slurm_logs/**/*.log"))[-3:]:
        text += f"\n--- {log}\n" + log.read_text(errors="replace")[-2000:]
    return text + "\n--- slurmctld\n" + slurm.daemon_output("slurmctld")


def _submissions(output: str) -> dict[str, list[tuple[str, str]]]:
    """rule -> [(sbatch call, SLURM job id)] from the plugin's verbose output; a call and its job id are
    matched by the job's SLURM log folder (.snakemake/slurm_logs/rule_<rule>/<wildcards>)."""
    calls = {
        folder: call
        for call, folder in re.findall(r"^sbatch call: (sbatch .*?--output '?(\S+?)/%j\.log.*)$", output, re.M)
    }
    ids = dict(
        (folder, job_id)
        for job_id, folder in re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)/\d+\.log\)", output)
    )
    assert set(calls) == set(ids), (sorted(calls), sorted(ids))
    out: dict[str, list[tuple[str, str]]] = {}
    for folder, call in calls.items():
        rule = re.search(r"/slurm_logs/rule_(\w+)/", folder + "/")[1]
        out.setdefault(rule, []).append((call, ids[folder]))
    return out


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The tiny config through the slurm profile, HDF5 locking off (``hdf5_file_locking: false``)."""
    workdir = tmp_path_factory.mktemp("slurm_run")
    t0 = time.monotonic()
    proc = run_snakemake(
        workdir,
        "--profile",
        str(PROFILE),
        *NO_ACCOUNTING,
        "--config",
        "hdf5_file_locking=false",
        "--verbose",
        env=cluster.env,
        timeout=2400,
    )
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, _failure(proc, workdir, cluster)
    print(f"tiny config through SLURM: {seconds:.0f} s")
    return workdir, proc.stdout + proc.stderr


def test_slurm_run_gives_the_tables_of_a_local_run(slurm_run, tiny_run):
    results = slurm_run[0] / "results/tiny"
    for rel in TABLES:
        a, b = (tiny_run / rel).read_text(), (results / rel).read_text()
        if rel.endswith("history.csv"):  # the per-epoch wall time differs; everything else must not
            a, b = (pd.read_csv(io.StringIO(t)).drop(columns="seconds").to_csv() for t in (a, b))
        assert a == b, rel
    for fig in ("utility", "randomization", "similarity"):
        assert (results / f"figures/{fig}.png").read_bytes()[:4] == b"\x89PNG"


def test_jobs_ran_as_slurm_jobs_except_the_local_rules(slurm_run):
    workdir, output = slurm_run
    logs = workdir / "results/tiny/logs"
    submitted = _submissions(output)
    assert sum(len(v) for v in submitted.values()) == len(list(logs.rglob("*.log"))) - len(LOCAL_LOGS)
    assert not set(submitted) & LOCAL_RULES
    for log in logs.rglob("*.log"):
        env_line = next(line for line in log.read_text().splitlines() if "job environment:" in line)
        local = str(log.relative_to(logs)) in LOCAL_LOGS
        assert ("SLURM_JOB_ID=" in env_line) != local, (log, env_line)
        # hdf5_file_locking: false reached every job, local or on the cluster
        assert "HDF5_USE_FILE_LOCKING=FALSE" in env_line, (log, env_line)


def test_gpu_jobs_get_a_gpu_and_fall_back_to_the_cpu(slurm_run):
    workdir, output = slurm_run
    submitted = _submissions(output)
    gpu_rules = {"train_model", "evaluate_model", "train_unet", "saliency_maps", "randomized_saliency", "unet_maps"}
    for rule, calls in submitted.items():
        for call, _ in calls:
            assert ("--gpus=1" in call) == (rule in gpu_rules), (rule, call)
    for log in ("train/simple_cnn-r1.log", "saliency/tiny_resnet-r1/IG.log", "baselines/train_unet-r1.log"):
        text = (workdir / "results/tiny/logs" / log).read_text()
        assert re.search(r"job environment: .*SLURM_JOB_ID=\d+ .*CUDA_VISIBLE_DEVICES=[01]\b", text), text[:800]
        assert "device cpu (requested auto; CUDA available: False; CUDA_VISIBLE_DEVICES=" in text, text[:800]


def test_sbatch_submission_of_a_gpu_rule_asks_for_its_gpu_threads_memory_and_runtime(cluster, tmp_path):
    """One train_model job with 2 threads through the slurm profile: the sbatch call and what SLURM granted."""
    data = run_snakemake(tmp_path, "--cores", "1", "results/tiny/data/manifest.csv")  # locally, seconds
    assert data.returncode == 0, data.stderr[-3000:]
    target = "results/tiny/models/simple_cnn-r1/model.pt"
    proc = run_snakemake(
        tmp_path,
        "--profile",
        str(PROFILE),
        *NO_ACCOUNTING,
        "--set-threads",
        "train_model=2",
        "--verbose",
        target,
        env=cluster.env,
        timeout=900,
    )
    assert proc.returncode == 0, _failure(proc, tmp_path, cluster)
    ((call, job_id),) = _submissions(proc.stdout + proc.stderr)["train_model"]
    expected = yaml.safe_load((PROFILE / "config.yaml").read_text())["set-resources"]["train_model"]
    mem_mb, runtime = expected["mem_mb"], expected["runtime"]
    for flag in ("--gpus=1", "--cpus-per-task=2", f"--mem {mem_mb}", f"-t {runtime}"):
        assert re.search(rf"(^|\s){re.escape(flag)}(\s|$)", call), (flag, call)
    granted = cluster.show_job(job_id)
    assert granted["JobState"] == "COMPLETED", granted
    assert granted["NumCPUs"] == "2" and granted["MinMemoryNode"] == f"{mem_mb}M", granted
    assert "gpu:1" in granted["TresPerJob"], granted
    hours, minutes = divmod(runtime, 60)
    assert granted["TimeLimit"] == f"{hours:02d}:{minutes:02d}:00", granted
    log = (tmp_path / "results/tiny/logs/train/simple_cnn-r1.log").read_text()
    assert f"SLURM_JOB_ID={job_id}" in log and "torch threads 2" in log, log[:800]
