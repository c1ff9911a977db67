"""One linter and formatter for the Python code (ruff) and one for the Snakemake files (snakefmt), configured
in pyproject.toml (docs/development.md). Fix a failure with ``ruff check --fix``, ``ruff format`` and
``snakefmt Snakefile workflow/rules``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PYTHON_PATHS = ["src", "tests", "workflow/scripts", "benchmarks"]
SNAKEMAKE_PATHS = ["Snakefile", "workflow/rules"]
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "--no-cache", *PYTHON_PATHS),
        ("ruff", "format", "--no-cache", "--check", *PYTHON_PATHS),
        ("snakefmt", "--check", *SNAKEMAKE_PATHS),
    ],
    ids=["ruff-check", "ruff-format", "snakefmt"],
)
def test_the_code_is_linted_and_formatted(command):
    proc = run(str(BIN / command[0]), *command[1:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_the_linter_catches_an_undefined_name(tmp_path):
    """The check can fail: a file with an undefined name and a wrongly sorted import is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\nprint(undefined_name, os, sys)\n")
    proc = run(str(BIN / "ruff"), "check", "--no-cache", "--config", str(REPO / "pyproject.toml"), str(bad))
    assert proc.returncode == 1 and "F821" in proc.stdout and "I001" in proc.stdout, proc.stdout
