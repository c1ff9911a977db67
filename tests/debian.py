"""Installing the Debian packages some tests need (Chromium for the report, SLURM for the cluster test)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

APT = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]


def ensure_debian_packages(
    packages: list[str], commands: list[str], which: Callable[[str], str | None] = shutil.which
) -> str | None:
    """Install ``packages`` with apt-get (--no-install-recommends) unless every one of ``commands`` is found
    already; ``None`` when they are available, else why not (a skip message)."""
    missing = [c for c in commands if which(c) is None]
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"commands {missing} are missing and installing {packages} with apt-get needs root"
    if shutil.which("apt-get") is None:
        return f"commands {missing} are missing and there is no apt-get to install {packages}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*APT, "install", "-y", "-q", "--no-install-recommends", *packages]
    proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:  # stale or absent package lists: refresh them once and try again
        update = subprocess.run([*APT, "update", "-q"], capture_output=True, text=True, env=env, timeout=900)
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            tail = (update.stderr + proc.stdout + proc.stderr).strip()[-1500:]
            return f"apt-get could not install {packages}: {tail}"
    missing = [c for c in commands if which(c) is None]
    return f"apt-get installed {packages} but {missing} are still missing" if missing else None
