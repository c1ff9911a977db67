"""A one-node SLURM cluster on localhost for the SLURM tests (tests/test_slurm.py).

``ensure_slurm()`` installs Debian's slurmctld, slurmd, slurm-client and munge with apt-get when
they are missing and returns why not where that is impossible. ``LocalSlurm`` starts munged,
slurmctld and slurmd in the foreground with the configuration kept in ``tests/slurm/`` (ports,
paths, CPUs and memory filled in; state, logs, munge key and socket in a private directory) and
stops exactly the processes it started, by their recorded PIDs.

The configuration must sit at SLURM's default place, /etc/slurm: the executor plugin's job step
runs ``srun`` inside each job with every ``SLURM_*`` variable removed from its environment,
``SLURM_CONF`` included, so ``srun`` only finds the default file. ``LocalSlurm`` writes
/etc/slurm/slurm.conf and gres.conf only where none exist (or they are its own, left by a killed
run), marks them, and removes them when it stops; a lock file keeps two test sessions on one
machine from sharing them.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import shutil
import signal
import socket
import string
import subprocess
import time
from pathlib import Path

from debian import ensure_debian_packages

SLURM_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
SLURM_COMMANDS = ["slurmctld", "slurmd", "munged", "sbatch", "squeue", "scontrol", "sinfo", "srun", "scancel"]
TEMPLATES = Path(__file__).resolve().parent / "slurm"
SYSTEM_CONF_DIR = Path("/etc/slurm")
MARKER = "# written by saliency-trust tests/slurm_cluster.py; removed when the test cluster stops"
LOCK = Path("/tmp/saliency-trust-slurm-cluster.lock")
SBIN = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]


def which(command: str) -> str | None:
    """A command on PATH or in the sbin directories (daemons live in /usr/sbin)."""
    return shutil.which(command) or shutil.which(command, path=os.pathsep.join(SBIN))


def missing_commands() -> list[str]:
    return [c for c in SLURM_COMMANDS if which(c) is None]


def ensure_slurm() -> str | None:
    """Install the SLURM and munge packages when missing; ``None`` when ready, else why not."""
    return ensure_debian_packages(SLURM_PACKAGES, SLURM_COMMANDS, which=which)


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on localhost (held together while chosen)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def foreign_slurm_config() -> Path | None:
    """A SLURM configuration at the default place that is not a leftover of this test cluster."""
    for name in ("slurm.conf", "gres.conf"):
        path = SYSTEM_CONF_DIR / name
        if path.exists() and not path.read_text(errors="replace").startswith(MARKER):
            return path
    return None


def memory_mb() -> int:
    """Memory the node offers: 90 % of the machine's."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total / 2**20 * 0.9)


class LocalSlurm:
    """munged + slurmctld + slurmd on localhost; state, logs and the munge key and socket under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.state = self.root / "state"
        self.conf = SYSTEM_CONF_DIR / "slurm.conf"
        self.munge_socket = self.root / "munge/munge.socket"
        self.cpus = len(os.sched_getaffinity(0))
        self.memory_mb = memory_mb()
        self.processes: dict[str, subprocess.Popen] = {}
        self.written: list[Path] = []
        self.lock = None
        self.env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}

    # -- configuration -------------------------------------------------------------------------
    def write_config(self) -> None:
        foreign = foreign_slurm_config()
        if foreign is not None:
            raise RuntimeError(f"{foreign} exists and was not written by this test: refusing to replace it")
        for d in (self.state / "ctld", self.state / "slurmd", SYSTEM_CONF_DIR, self.munge_socket.parent):
            d.mkdir(parents=True, exist_ok=True)
        self.munge_socket.parent.chmod(0o700)
        ctld_port, slurmd_port = free_ports(2)
        fields = {
            "ctld_port": ctld_port,
            "slurmd_port": slurmd_port,
            "user": getpass.getuser(),
            "munge_socket": self.munge_socket,
            "state": self.state,
            "cpus": self.cpus,
            "memory_mb": self.memory_mb,
        }
        text = string.Template((TEMPLATES / "slurm.conf").read_text()).substitute(fields)
        self._write_system(self.conf, text)
        self._write_system(SYSTEM_CONF_DIR / "gres.conf", (TEMPLATES / "gres.conf").read_text())  # next to slurm.conf
        key = self.root / "munge/munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)

    def _write_system(self, path: Path, text: str) -> None:
        path.write_text(f"{MARKER}\n{text}")
        self.written.append(path)

    def _remove_config(self) -> None:
        for path in self.written:
            if path.exists() and path.read_text(errors="replace").startswith(MARKER):
                path.unlink()
        self.written = []

    # -- daemons -------------------------------------------------------------------------------
    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.out", "w")
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()

    def _alive(self, name: str) -> None:
        proc = self.processes[name]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{self.daemon_output(name)}")

    def daemon_output(self, name: str) -> str:
        text = (self.root / f"{name}.out").read_text(errors="replace")
        log = self.state / f"{name}.log"
        if log.exists():
            text += log.read_text(errors="replace")
        return text[-3000:]

    def start(self, timeout: float = 60) -> None:
        """Start the three daemons and wait until the node is idle; stop them again on failure."""
        self.lock = open(LOCK, "w")
        fcntl.flock(self.lock, fcntl.LOCK_EX)  # another session's test cluster: wait for it to stop
        try:
            self.write_config()
            m = self.root / "munge"
            self._start(
                "munged",
                [
                    which("munged"),
                    "--foreground",
                    "--force",
                    f"--key-file={m / 'munge.key'}",
                    f"--socket={self.munge_socket}",
                    f"--pid-file={m / 'munged.pid'}",
                    f"--log-file={m / 'munged.log'}",
                    f"--seed-file={m / 'munged.seed'}",
                ],
            )
            self._wait(lambda: self.munge_socket.exists(), "munged", timeout)
            self._start("slurmctld", [which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._wait(lambda: "UP" in self._run("scontrol", "ping").stdout, "slurmctld", timeout)
            self._start("slurmd", [which("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)])
            self._wait(lambda: self.node_state() in {"idle", "mixed", "allocated"}, "slurmd", timeout)
        except BaseException:
            self.stop()
            raise

    def _run(self, command: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([which(command), *args], capture_output=True, text=True, env=self.env, timeout=30)

    def _wait(self, ready, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self._alive(name)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not become ready within {timeout:.0f} s:\n{self.daemon_output(name)}")
            time.sleep(0.2)

    def node_state(self) -> str:
        proc = self._run("sinfo", "-h", "-N", "-o", "%T")
        return proc.stdout.strip().rstrip("*~#!%$@^-")

    def show_job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict of its key=value fields."""
        proc = self._run("scontrol", "show", "job", "-o", job_id)
        if proc.returncode != 0:
            raise RuntimeError(f"scontrol show job {job_id}: {proc.stderr}")
        fields = {}
        for token in proc.stdout.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        return fields

    def stop(self) -> None:
        """Stop the daemons this object started (slurmd first), by their PIDs, wait for them to exit,
        remove the configuration it wrote and release the lock. Jobs still on this private cluster (a
        run that failed half-way) are cancelled first and their steps given time to end, so that no
        job step outlives the daemons."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self._run("scancel", "--full", "--user", getpass.getuser())
            deadline = time.monotonic() + 60
            while self._run("squeue", "-h", "-t", "PD,R,CG,S").stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        self._remove_config()
        if self.lock is not None:
            self.lock.close()  # releases the flock
            self.lock = None

    def __enter__(self) -> LocalSlurm:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
