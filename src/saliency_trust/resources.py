"""The SLURM profile's memory and runtime, fitted from measured jobs (docs/clusters.md, docs/scaling.md).

The heavy rules carry Snakemake ``benchmark:`` directives: every run leaves, per job,
``results/{dataset}/benchmarks/<rule>/<job>.tsv`` with its wall time (``s``) and peak resident memory
(``max_rss``, MB). :func:`fit_resources` reads those of a finished run (a pilot on the cluster, for example on
the dataset's first ``max_images`` images) and fits per rule

- the peak memory: the largest measured ``max_rss`` (memory is bounded by the batch, not by the dataset:
  docs/scaling.md, so it does not grow with the images), and
- the time per image: the least-squares line ``s = fixed + per_image x images`` through the jobs' wall times
  (one size only: through the origin),

where a job's images are those of the part of the data it reads (``trainval`` for training, ``explained``
for the maps; counted in ``results/{dataset}/data/fingerprints.json``). ``python -m saliency_trust.resources
results/ --scale 20`` prints the profile's ``set-resources`` for a run 20 times the pilot's size: each rule
asks for 1.5 x the measured peak and 1.5 x the predicted time (whole minutes, at least 5).
"""

from __future__ import annotations

import json
import math
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


def set_resources(measured: dict, pilot: pd.DataFrame, scale: float) -> dict:
    """The profile's ``set-resources`` of each measured rule for a run ``scale`` times the pilot's size (each
    rule's largest measured job, scaled)."""
    out = {}
    for rule in measured:
        images = int(math.ceil(pilot.loc[pilot["rule"] == rule, "images"].max() * scale))
        mem_mb, runtime = request(measured, rule, images)
        out[rule] = {"mem_mb": mem_mb, "runtime": runtime}
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m saliency_trust.resources RESULTS [--scale S]``: the fit of a finished run's benchmark files,
    and the SLURM profile's ``set-resources`` for a run S times its size, as YAML."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m saliency_trust.resources", description=main.__doc__)
    ap.add_argument("results", help="the results/ folder of a finished (pilot) run")
    ap.add_argument("--scale", type=float, default=1.0, help="size of the full run relative to the pilot")
    args = ap.parse_args(argv)
    table = read_benchmarks(args.results)
    if table.empty:
        raise SystemExit(
            f"{args.results}: no benchmark files (results/<dataset>/benchmarks/<rule>/*.tsv) of a finished run"
        )
    measured = fit_resources(table)
    print("# measured per rule (peak_mb, fixed_s + per_image_s x images), from " + args.results)
    print(yaml.safe_dump({"measured": measured}, sort_keys=True), end="")
    print(f"# paste into workflow/profiles/slurm/config.yaml: a run {args.scale:g} x the pilot's size")
    print(yaml.safe_dump({"set-resources": set_resources(measured, table, args.scale)}, sort_keys=True), end="")


if __name__ == "__main__":
    main()
