"""Execution settings of the rules (docs/clusters.md): resources, conda envs, HDF5 file locking.

The rules are read from the workflow itself (Snakemake's API on the tiny config); the packages a
rule's script needs are found by following its imports through the saliency_trust package.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SNAKEMAKE, TINY, run_snakemake
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, Quietness, ResourceSettings

import saliency_trust.execution as execution
from saliency_trust.envs import distribution, normalize, third_party_imports
from saliency_trust.execution import (
    HDF5_LOCKING_ENV,
    configure_hdf5_locking,
    default_gpu_cap,
    export_package_path,
    gpu_request,
    visible_gpu_count,
)

SRC = REPO / "src"
GPU_RULES = {
    "train_model",
    "evaluate_model",
    "train_unet",
    "train_detector",
    "saliency_maps",
    "randomized_saliency",
    "unet_maps",
    "detector_maps",
    "qc_class_maps",
    "qc_predictions",
}


def load_workflow(tmp_path: Path, config: dict | None = None, resources: dict | None = None):
    """The workflow on the tiny config (optionally changed) as Snakemake parses it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    configfile = tmp_path / "config.yaml"
    cfg = yaml.safe_load(TINY.read_text())
    cfg.update(config or {})
    configfile.write_text(yaml.safe_dump(cfg))
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1, resources=resources or {}),
            config_settings=ConfigSettings(configfiles=[configfile]),
            snakefile=REPO / "Snakefile",
            workdir=tmp_path,
        )
        return workflow_api._workflow


def load_rules(tmp_path: Path, config: dict | None = None) -> dict:
    """name -> Rule of the workflow on the tiny config (optionally changed), as Snakemake parses it."""
    return {rule.name: rule for rule in load_workflow(tmp_path, config).rules}


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    return load_rules(tmp_path_factory.mktemp("rules"))


def job_rules(rules: dict) -> dict:
    """Rules that run a job (all but the target rule ``all``)."""
    return {name: rule for name, rule in rules.items() if not rule.norun}


def resource(rule, name: str):
    res = rule.resources.get(name)
    return None if res is None else getattr(res, "value", res)


# -- resources ---------------------------------------------------------------------------------------
def test_every_rule_declares_threads_memory_and_runtime(rules):
    assert len(job_rules(rules)) >= 25
    for name, rule in job_rules(rules).items():
        assert isinstance(resource(rule, "mem_mb"), int) and resource(rule, "mem_mb") >= 1000, name
        assert isinstance(resource(rule, "runtime"), int) and resource(rule, "runtime") >= 5, name
    # threads are explicit in every rule block (use-rule blocks inherit theirs)
    for smk in (REPO / "workflow/rules").glob("*.smk"):
        for block in re.split(r"(?m)^(?=rule |use rule )", smk.read_text())[1:]:
            if block.startswith("rule "):
                assert "\n    threads:" in block, f"{smk.name}: {block.splitlines()[0]} has no threads"


def test_gpu_rules_ask_for_one_gpu_and_none_when_pinned_to_the_cpu(rules, tmp_path):
    asking = {name for name, rule in job_rules(rules).items() if resource(rule, "gpu")}
    assert asking == GPU_RULES
    assert all(resource(rules[name], "gpu") == 1 for name in GPU_RULES)
    cpu = load_rules(
        tmp_path,
        {
            "training": {"device": "cpu", "threads": 3},
            "saliency": {"methods": ["GRAD"], "device": "cpu"},
            "baselines": {"device": "cpu", "threads": 2},
            "qc": {"device": "cpu"},
        },
    )
    assert not any(resource(cpu[name], "gpu") for name in GPU_RULES)
    # threads follow the config
    assert resource(cpu["train_model"], "_cores") == 3 and resource(cpu["train_unet"], "_cores") == 2
    assert gpu_request("auto") == gpu_request("cuda:1") == 1 and gpu_request("cpu") == 0
    with pytest.raises(ValueError, match="device"):
        gpu_request("")


def test_visible_gpus_follow_the_driver_and_cuda_visible_devices(tmp_path):
    driver = tmp_path / "gpus"
    assert visible_gpu_count({}, driver) == 0  # no NVIDIA driver
    driver.mkdir()
    for bus in ("0000:01:00.0", "0000:02:00.0"):
        (driver / bus).mkdir()
    assert visible_gpu_count({}, driver) == 2
    cases = {"0": 1, "1,0": 2, "0,1,2": 2, "": 0, "-1": 0, "1,-1,0": 1}
    for listed, expected in cases.items():
        assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": listed}, driver) == expected, listed


def test_default_gpu_cap_only_where_none_is_given():
    assert default_gpu_cap({}, 1) == default_gpu_cap({}, 2) == 1  # local jobs all use the first visible GPU
    assert default_gpu_cap({}, 0) is None  # CPU-only machine or a cluster's login node: no cap
    assert default_gpu_cap({"gpu": 4}, 2) is None  # --resources gpu=4 or a profile's resources: kept


def test_the_snakefile_caps_gpu_jobs_where_there_is_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(execution, "visible_gpu_count", lambda: 2)
    assert load_workflow(tmp_path / "two").global_resources["gpu"].value == 1
    assert load_workflow(tmp_path / "given", resources={"gpu": 5}).global_resources["gpu"].value == 5
    monkeypatch.setattr(execution, "visible_gpu_count", lambda: 0)
    assert "gpu" not in load_workflow(tmp_path / "none").global_resources


def test_profiles_are_valid_and_the_default_profile_is_safe_under_any_executor():
    """The default profile is a workflow profile: its settings override a --profile's, so it must not
    cap resources (that would cap a cluster's GPU jobs too); the Snakefile caps GPU jobs instead."""
    default = yaml.safe_load((REPO / "workflow/profiles/default/config.yaml").read_text())
    assert default == {"cores": "all", "rerun-incomplete": True}
    assert (REPO / "profiles/default/config.yaml").resolve() == (REPO / "workflow/profiles/default/config.yaml")
    slurm = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    assert slurm["executor"] == "slurm"
    assert {"mem_mb", "runtime"} <= set(slurm["default-resources"])
    assert slurm["resources"]["gpu"] >= slurm["jobs"]  # a login node's own GPUs never cap the cluster


def test_the_default_profile_loads_without_being_named(tmp_path):
    """A plain ``snakemake`` (no --cores, no --profile) reads profiles/default beside the Snakefile."""
    proc = subprocess.run(
        [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(TINY), "-n"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"workflow specific profile {REPO / 'profiles/default'}" in proc.stderr


@pytest.mark.slow
def test_a_gpu_cap_runs_one_gpu_job_at_a_time(tmp_path):
    """The three training jobs (gpu=1 each) with 3 cores and ``--resources gpu=1``: one by one."""
    targets = [f"results/tiny/models/{m}/model.pt" for m in ("simple_cnn-r1", "simple_cnn-r2", "tiny_resnet-r1")]
    proc = run_snakemake(tmp_path, "--resources", "gpu=1", "--cores", "3", *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spans = []
    for model in ("simple_cnn-r1", "simple_cnn-r2", "tiny_resnet-r1"):
        lines = (tmp_path / f"results/tiny/logs/train/{model}.log").read_text().splitlines()
        stamps = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f") for line in lines if line[:4].isdigit()]
        spans.append((min(stamps), max(stamps)))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans


def test_profiles_name_only_real_rules(rules):
    slurm = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    assert set(slurm["set-resources"]) <= set(rules), set(slurm["set-resources"]) - set(rules)
    assert set(slurm["set-resources"]) & GPU_RULES == GPU_RULES


# -- conda envs --------------------------------------------------------------------------------------
def env_packages(env_file: Path) -> set[str]:
    """Normalized names of the conda and pip packages an env file lists."""
    env = yaml.safe_load(env_file.read_text())
    names = set()
    for dep in env["dependencies"]:
        specs = dep["pip"] if isinstance(dep, dict) else [dep]
        for spec in specs:
            names.add(normalize(re.split(r"[=<>!~ \[]", spec.strip(), maxsplit=1)[0]))
    return names


def test_env_files_are_generated_from_the_lock():
    """envs/*.yaml are what `python -m saliency_trust.envs` writes from envs/lock.txt: each rule group's imports,
    pinned to the lock's versions (one lock, every env agreeing with it)."""
    from saliency_trust.envs import ENVS, LOCK, generate, lock_text, read_lock

    pins = read_lock()
    assert LOCK.read_text() == lock_text(pins)
    generated = generate(pins)
    assert set(generated) == {LOCK, *ENVS.glob("*.yaml")}, "an env file that no rule group generates"
    for path, text in generated.items():
        assert path.read_text() == text, f"{path.name} is stale: regenerate with `python -m saliency_trust.envs`"


def test_the_lock_pins_the_major_versions_installed_here():
    """The lock was resolved with the versions pip installs for pyproject.toml (same major release)."""

    from saliency_trust.envs import read_lock

    for name, version in read_lock().items():
        assert importlib.metadata.version(name).split(".")[0] == version.split(".")[0], name


def test_metrics_env_has_no_torch():
    """The metrics rules' CPU path never imports torch (the SSIM of CUDA tensors is the only torch path)."""
    from saliency_trust.envs import group_requirements

    assert "torch" not in group_requirements()["metrics"]
    assert "torch" not in env_packages(REPO / "envs/metrics.yaml")


def test_every_rule_names_an_env_that_lists_what_its_script_imports(rules):
    envs_used = set()
    for name, rule in job_rules(rules).items():
        assert rule.conda_env, f"rule {name} names no conda env"
        env_file = (Path(str(rule.basedir)) / rule.conda_env).resolve()
        assert env_file.parent == REPO / "envs" and env_file.exists(), (name, env_file)
        envs_used.add(env_file)
        script = (Path(str(rule.basedir)) / rule.script).resolve()
        needed = {distribution(m) for m in third_party_imports(script)}
        listed = env_packages(env_file)
        assert needed <= listed, f"rule {name}: {env_file.name} lacks {sorted(needed - listed)} ({script.name})"
    assert envs_used == set((REPO / "envs").glob("*.yaml")), "an env file no rule uses"


def test_envs_are_pinned_and_do_not_install_the_package_by_relative_path():
    """Snakemake copies an env file to .snakemake/conda/ before creating it, so a relative pip path
    (``-e ../``) would point into the working directory; jobs import the package from this checkout
    (PYTHONPATH, set by common.smk) and the envs hold the third-party packages only."""
    for env_file in (REPO / "envs").glob("*.yaml"):
        env = yaml.safe_load(env_file.read_text())
        for dep in env["dependencies"]:
            for spec in dep["pip"] if isinstance(dep, dict) else [dep]:
                assert re.fullmatch(r"[A-Za-z0-9_.\-]+(==|=)[0-9][0-9A-Za-z.+]*", spec.strip()), (env_file.name, spec)


def test_jobs_in_another_interpreter_import_this_checkout(monkeypatch, tmp_path):
    """What a conda env's python sees: no site-packages of ours, only PYTHONPATH as common.smk sets it."""
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    value = export_package_path(REPO)
    assert value.split(os.pathsep) == [str(SRC), "/elsewhere"] and export_package_path(REPO) == value  # no duplicates
    proc = subprocess.run(
        [sys.executable, "-S", "-c", "import saliency_trust; print(saliency_trust.__file__)"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": value},
        timeout=60,
    )
    assert proc.returncode == 0 and Path(proc.stdout.strip()) == SRC / "saliency_trust/__init__.py", proc.stderr
    assert export_package_path(tmp_path) == value  # no src/ there: an installed package is used as it is


def test_import_analysis_follows_the_package(tmp_path):
    """The import walk sees through saliency_trust to the third-party modules (the test above relies on it)."""
    script = tmp_path / "script.py"
    script.write_text("from saliency_trust.models.train import select_device\nimport json\n")
    found = third_party_imports(script)
    assert {"torch", "numpy", "pandas", "sklearn"} <= found and "json" not in found
    assert distribution("sklearn") == "scikit-learn" and distribution("skimage") == "scikit-image"


# -- HDF5 file locking -------------------------------------------------------------------------------
def _open_while_locked(tmp_path: Path, locking: str) -> subprocess.CompletedProcess:
    """Open an HDF5 file for reading in a fresh process (HDF5_USE_FILE_LOCKING=locking) while another
    process holds it open for writing."""
    path = tmp_path / f"held-{locking}.h5"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time, h5py
            f = h5py.File({str(path)!r}, "w"); f["x"] = [1, 2, 3]; f.flush()
            print("open", flush=True); sys.stdin.read()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**_env_without_locking(), HDF5_LOCKING_ENV: "TRUE"},
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        return subprocess.run(
            [sys.executable, "-c", f"import h5py; h5py.File({str(path)!r}, 'r').close()"],
            capture_output=True,
            text=True,
            env={**_env_without_locking(), HDF5_LOCKING_ENV: locking},
            timeout=60,
        )
    finally:
        holder.communicate("", timeout=60)


def _env_without_locking() -> dict:
    return {k: v for k, v in os.environ.items() if k != HDF5_LOCKING_ENV}


def test_hdf5_locking_values_take_effect(tmp_path):
    """With locking, a file another process writes cannot be opened ("unable to lock file"); without
    it, it can: the variable the config key sets is the one HDF5 obeys."""
    locked = _open_while_locked(tmp_path, "TRUE")
    assert locked.returncode != 0 and "lock" in locked.stderr.lower(), locked.stderr[-500:]
    unlocked = _open_while_locked(tmp_path, "FALSE")
    assert unlocked.returncode == 0, unlocked.stderr[-500:]


def test_configure_hdf5_locking(monkeypatch):
    monkeypatch.delenv(HDF5_LOCKING_ENV, raising=False)
    assert configure_hdf5_locking("auto") is None
    monkeypatch.setenv(HDF5_LOCKING_ENV, "FALSE")
    assert configure_hdf5_locking("auto") == "FALSE"  # auto keeps what the environment says
    assert configure_hdf5_locking(True) == "TRUE"
    assert configure_hdf5_locking("false") == "FALSE"
    assert configure_hdf5_locking("best-effort") == "BEST_EFFORT"
    with pytest.raises(ValueError, match="hdf5_file_locking"):
        configure_hdf5_locking("maybe")
    with pytest.raises(ValueError, match="hdf5_file_locking"):
        configure_hdf5_locking(1)
