"""Where and how jobs run (docs/clusters.md): GPU requests, HDF5 file locking, the job's environment.

The rules that train models or compute maps ask the scheduler for one GPU (Snakemake's standard
``gpu`` resource: a workstation profile caps how many run at once, the SLURM executor turns it
into ``--gpus=1``) unless the config pins them to the CPU; the code itself falls back to the CPU
when no GPU is visible (``saliency_trust.models.train.select_device``). Where the command line or a
profile gives no ``gpu`` limit, the Snakefile sets one from the GPUs the machine running Snakemake
sees (``default_gpu_cap``): one GPU job at a time where there is a GPU (a local job uses the first
visible GPU, so more would share it), no cap where there is none (a CPU-only machine, whose "GPU" jobs
run on the CPU side by side, or a cluster's login node, whose jobs get their GPU from the scheduler).

Jobs import the package from the checkout whose Snakefile runs (``export_package_path``).

HDF5 locks every file it opens. Some shared filesystems (older NFS, Lustre or GPFS mounts) do
not support the locks and opening any ``.h5`` file fails with "unable to lock file"; the
``hdf5_file_locking`` config key sets ``HDF5_USE_FILE_LOCKING`` for every job.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)

HDF5_LOCKING_ENV = "HDF5_USE_FILE_LOCKING"
# config value -> value of HDF5_USE_FILE_LOCKING (None: leave the environment as it is)
HDF5_LOCKING_VALUES = {
    "auto": None,
    True: "TRUE",
    False: "FALSE",
    "best-effort": "BEST_EFFORT",
    "true": "TRUE",
    "false": "FALSE",
}  # strings from --config hdf5_file_locking=false


def gpu_request(device: str) -> int:
    """GPUs a torch job asks the scheduler for: none when the config pins it to the CPU, else one."""
    if not isinstance(device, str) or not device:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return 0 if device == "cpu" else 1


NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one entry per GPU the NVIDIA driver has loaded


def visible_gpu_count(environ: dict[str, str] | None = None, driver_dir: Path = NVIDIA_GPUS) -> int:
    """GPUs a CUDA process started here would see, without importing torch (the Snakemake process does
    not): the NVIDIA driver's GPUs, limited by ``CUDA_VISIBLE_DEVICES`` as CUDA reads it (the ids up to
    the first invalid one such as ``-1``; an empty value hides every GPU)."""
    environ = os.environ if environ is None else environ
    gpus = sum(1 for _ in driver_dir.iterdir()) if driver_dir.is_dir() else 0
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return gpus
    valid = 0
    for item in listed.split(","):
        item = item.strip()
        if not item or item.startswith("-"):
            break
        valid += 1
    return min(gpus, valid)


def default_gpu_cap(given_resources, local_gpus: int) -> int | None:
    """The ``gpu`` limit the Snakefile sets when neither the command line nor a profile gave one
    (``--resources gpu=N``): 1 where the machine has a GPU (every local job uses the first visible one),
    None (no limit) where it has none."""
    if "gpu" in given_resources or local_gpus <= 0:
        return None
    return 1


def configure_hdf5_locking(setting: bool | str) -> str | None:
    """Apply the ``hdf5_file_locking`` config key to this process's environment (inherited by jobs).

    ``auto`` keeps ``HDF5_USE_FILE_LOCKING`` as the environment has it (HDF5 locks by default);
    ``true``/``false`` force locking on/off; ``best-effort`` locks where the filesystem supports it
    and ignores the failure elsewhere. HDF5 reads the variable when a process first opens a file,
    so it must be set before any job opens one: the Snakefile calls this while it is parsed.
    Returns the variable's value afterwards.
    """
    key = next((k for k in HDF5_LOCKING_VALUES if k == setting and type(k) is type(setting)), None)
    if key is None:
        raise ValueError(f"hdf5_file_locking must be one of auto, true, false, best-effort; got {setting!r}")
    value = HDF5_LOCKING_VALUES[key]
    if value is not None:
        os.environ[HDF5_LOCKING_ENV] = value
    return os.environ.get(HDF5_LOCKING_ENV)


def export_package_path(repo: str | os.PathLike) -> str:
    """Put this checkout's ``src/`` first on ``PYTHONPATH`` of every job; returns the new value.

    A job may run in another interpreter than Snakemake's: a conda env of envs/ (``--sdm conda``),
    which holds only the third-party packages, or a SLURM job. It must import the same
    saliency_trust as the rules it runs, whether or not (and however) the package is installed there.
    A workflow used without its checkout (no ``src/`` beside the Snakefile) relies on the installed
    package and leaves ``PYTHONPATH`` as it is.
    """
    src = str((Path(repo) / "src").resolve())
    if not (Path(src) / "saliency_trust" / "__init__.py").is_file():
        return os.environ.get("PYTHONPATH", "")
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
    os.environ["PYTHONPATH"] = os.pathsep.join([src, *parts])
    return os.environ["PYTHONPATH"]


def job_environment() -> dict[str, str]:
    """What a job's log should say about where it ran: host, SLURM job, visible GPUs, HDF5 locking."""
    env = {"host": socket.gethostname()}
    for name in ("SLURM_JOB_ID", "SLURM_CPUS_PER_TASK", "CUDA_VISIBLE_DEVICES", HDF5_LOCKING_ENV):
        if os.environ.get(name) is not None:
            env[name] = os.environ[name]
    return env


def log_job_environment() -> None:
    log.info("job environment: %s", " ".join(f"{k}={v}" for k, v in job_environment().items()))
