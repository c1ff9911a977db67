"""Wall time of the reruns after new data, against the full run, on a config (default: config.yaml).

Runs the config from scratch in a work folder (or takes a finished one, ``--finished``), then, each on its own
copy of the finished run:

1. **20 new positive test images**: ``synthetic.test_images`` set to the smallest number of test-only images that
   holds 20 positives;
2. **a new rater's boxes**: ``synthetic.raters`` + 1.

Prints per run the wall time, its ratio to the full run, the jobs run per rule and the maps the saliency jobs
computed and took from the map store (docs/new-data.md). Measured figures are in the README and the issue notes.

Usage: python benchmarks/new_data_reruns.py [--config config.yaml] [--work /tmp/new-data] [--finished DIR]
       [--cores 2] [--positives 20]
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir: Path, cfg: dict, cores: int) -> tuple[float, str]:
    path = workdir / "bench_config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
        + ["--configfile", str(path), "--cores", str(cores)],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"snakemake failed in {workdir}:\n{out[-3000:]}")
    return seconds, out


def jobs_run(out: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", out, flags=re.M):
        counts[name] = counts.get(name, 0) + 1
    return counts


def store_totals(workdir: Path, since: float) -> tuple[int, int]:
    """(maps taken from the store, maps computed) by the saliency jobs whose logs were written after ``since``."""
    reused = computed = 0
    for log in (workdir / "results").rglob("logs/saliency/**/*.log"):
        if log.stat().st_mtime < since:
            continue
        for m in re.finditer(r"(\d+) of (\d+) maps reused from the store, (\d+) computed", log.read_text()):
            reused, computed = reused + int(m.group(1)), computed + int(m.group(3))
    return reused, computed


def test_images_for(cfg: dict, dataset: str, positives: int) -> int:
    """The smallest ``synthetic.test_images`` whose images hold ``positives`` positives."""
    from saliency_trust.data.synthetic import TEST_ONLY_STREAM, SyntheticSpec, generate_image

    spec = SyntheticSpec.from_config(cfg["datasets"][dataset].get("synthetic", {}))
    found = n = 0
    while found < positives:
        found += int(generate_image(spec, cfg["seed"], TEST_ONLY_STREAM + n).labels.any())
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    parser.add_argument("--work", default="/tmp/saliency-trust-new-data")
    parser.add_argument("--finished", default=None, help="a finished run of the config (skips the full run)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--positives", type=int, default=20)
    args = parser.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())
    dataset = next(n for n, d in cfg["datasets"].items() if d.get("source") == "synthetic")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.finished:
        finished, full = Path(args.finished), None
    else:
        finished = work / "full"
        shutil.rmtree(finished, ignore_errors=True)
        finished.mkdir()
        full, out = snakemake(finished, cfg, args.cores)
        print(f"full run: {full:.0f} s, {sum(jobs_run(out).values())} jobs")

    synthetic = cfg["datasets"][dataset].setdefault("synthetic", {})
    n_test = test_images_for(cfg, dataset, args.positives)
    scenarios = {
        f"{args.positives} new positive test images (test_images: {n_test})": {"test_images": n_test},
        f"a new rater's boxes (raters: {synthetic.get('raters', 0) + 1})": {"raters": synthetic.get("raters", 0) + 1},
    }
    for name, change in scenarios.items():
        workdir = work / re.sub(r"\W+", "_", name)[:40]
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(finished, workdir, symlinks=True)
        changed = copy.deepcopy(cfg)
        changed["datasets"][dataset].setdefault("synthetic", {}).update(change)
        since = time.time()
        seconds, out = snakemake(workdir, changed, args.cores)
        ran = jobs_run(out)
        reused, computed = store_totals(workdir, since)
        ratio = f", {seconds / full:.2f} of the full run" if full else ""
        print(f"{name}: {seconds:.0f} s{ratio}; {sum(ran.values())} jobs; maps from the store {reused}, computed")
        print(f"  {computed}; jobs per rule: {dict(sorted(ran.items()))}")


if __name__ == "__main__":
    main()
