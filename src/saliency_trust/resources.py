"""Memory and runtime requests of the heavy jobs, derived from measurement (docs/clusters.md, docs/scaling.md).

The heavy rules carry Snakemake ``benchmark:`` directives: every run leaves, per job,
``results/{dataset}/benchmarks/<rule>/<job>.tsv`` with its wall time (``s``) and peak resident memory
(``max_rss``, MB). :func:`fit_resources` reads those of a finished run (a pilot on the cluster, for example the
dataset's first ``max_images`` images) and fits per rule

- the peak memory: the largest measured ``max_rss`` (memory is bounded by the batch, not by the dataset:
  docs/scaling.md), and
- the time per image: the least-squares line ``s = fixed + per_image x images`` through the jobs' wall times
  (a single size: through the origin),

where a job's images are those its part of the data holds (``trainval`` for training, ``explained`` for the
maps; the counts come from ``results/{dataset}/data/fingerprints.json``). ``python -m saliency_trust.resources
results/ > measured.yaml`` writes the fit; with config ``measured_resources: measured.yaml`` each rule then asks
for ``headroom x`` the measured peak (``x attempt`` on a retry) and ``headroom x`` the predicted time for the
job's images, instead of the fixed numbers written in the rule.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

#: rule -> the fingerprint part whose image count sizes the job (saliency.smk, train.smk, ...)
RULE_PARTS = {
    "synthetic_dataset": "all",
    "prepare_dataset": "all",
    "train_model": "trainval",
    "train_unet": "trainval",
    "train_detector": "trainval",
    "evaluate_model": "test",
    "xrai_segments": "explained",
    "saliency_maps": "explained",
    "randomized_saliency": "explained",
    "unet_maps": "explained",
    "detector_maps": "explained",
    "utility_scores": "explained",
}
HEADROOM = 1.5
MIN_MEM_MB = 1000
MIN_RUNTIME_MIN = 5


def part_images(fingerprints: dict, part: str, label: str | None = None) -> int:
    """The number of images of one part of the fingerprints (``all``/``test``: from the parts they hold)."""
    if part == "explained":
        label = label or fingerprints["label_names"][0]
        return int(fingerprints["explained"][label]["images"])
    if part in ("all", "test"):
        explained = sum(int(v["images"]) for v in fingerprints["explained"].values())
        return int(fingerprints["trainval"]["images"]) + explained if part == "all" else explained
    return int(fingerprints[part]["images"])


def read_benchmarks(results: str | Path) -> pd.DataFrame:
    """One row per benchmark file under ``results``: rule, dataset, images, s, max_rss (MB)."""
    rows = []
    for path in sorted(Path(results).glob("*/benchmarks/*/*.tsv")) + sorted(
        Path(results).glob("*/seed-*/benchmarks/*/*.tsv")
    ):
        rule = path.parent.name
        run = path.parents[2]
        fingerprints = run / "data" / "fingerprints.json"
        if rule not in RULE_PARTS or not fingerprints.exists():
            continue
        table = pd.read_csv(path, sep="\t")
        images = part_images(json.loads(fingerprints.read_text()), RULE_PARTS[rule])
        for record in table.itertuples():
            rss = pd.to_numeric(record.max_rss, errors="coerce")
            rows.append({"rule": rule, "run": str(run), "images": images, "s": float(record.s), "max_rss": rss})
    return pd.DataFrame(rows, columns=["rule", "run", "images", "s", "max_rss"])


def fit_resources(table: pd.DataFrame) -> dict:
    """Per rule: peak_mb (largest measured), fixed_s and per_image_s (least squares), jobs measured."""
    out = {}
    for rule, group in table.groupby("rule", sort=True):
        n, s = group["images"].to_numpy(float), group["s"].to_numpy(float)
        if len(set(n)) >= 2:
            slope, fixed = (float(v) for v in np.polyfit(n, s, 1))
        else:
            slope, fixed = float(s.mean() / max(n.mean(), 1.0)), 0.0
        if slope < 0:  # noise on a flat cost: a constant time
            slope, fixed = 0.0, float(s.max())
        out[rule] = {
            "peak_mb": round(float(group["max_rss"].max()), 1),
            "fixed_s": round(max(fixed, 0.0), 3),
            "per_image_s": round(slope, 6),
            "jobs": int(len(group)),
            "images": sorted({int(v) for v in n}),
        }
    return out


def request(measured: dict, rule: str, images: int, attempt: int = 1) -> tuple[int, int] | None:
    """(mem_mb, runtime in minutes) for a job of ``rule`` on ``images`` images from the fit, None when the rule
    was not measured (the rule's own numbers apply)."""
    entry = measured.get(rule)
    if not entry:
        return None
    mem = max(MIN_MEM_MB, math.ceil(HEADROOM * entry["peak_mb"] * attempt))
    seconds = HEADROOM * (entry["fixed_s"] + entry["per_image_s"] * images) * attempt
    return mem, max(MIN_RUNTIME_MIN, math.ceil(seconds / 60))


def main(argv: list[str] | None = None) -> None:
    """``python -m saliency_trust.resources RESULTS``: print the fit of a finished run's benchmarks as YAML."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        raise SystemExit("usage: python -m saliency_trust.resources RESULTS_FOLDER > measured.yaml")
    table = read_benchmarks(args[0])
    if table.empty:
        raise SystemExit(f"{args[0]}: no benchmark files (results/<dataset>/benchmarks/<rule>/*.tsv) of a finished run")
    print(yaml.safe_dump(fit_resources(table), sort_keys=True), end="")


if __name__ == "__main__":
    main()
