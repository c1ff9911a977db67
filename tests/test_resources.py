"""The SLURM profile's memory and runtime fitted from the jobs' benchmark files (saliency_trust.resources)."""

from __future__ import annotations

import json

import pytest
import yaml

from saliency_trust.resources import fit_resources, main, read_benchmarks, request, set_resources

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _run(root, name: str, trainval: int, explained: int, jobs: dict[str, list[tuple[float, float]]]) -> None:
    """A finished run's folder: its fingerprints (image counts) and benchmark files (seconds, max_rss MB)."""
    data = root / name / "data"
    data.mkdir(parents=True)
    part = lambda n: {"images": n, "sha256": "x", "text": f"{n} images"}  # noqa: E731
    fingerprints = {
        "label_names": ["abnormal"],
        "trainval": part(trainval),
        "trainval_masks": part(trainval),
        "trainval_boxes": part(trainval),
        "explained": {"abnormal": part(explained)},
    }
    (data / "fingerprints.json").write_text(json.dumps(fingerprints))
    for rule, measurements in jobs.items():
        folder = root / name / "benchmarks" / rule
        folder.mkdir(parents=True)
        for k, (seconds, rss) in enumerate(measurements):
            (folder / f"job{k}.tsv").write_text(HEADER + f"{seconds}\t0:00:01\t{rss}\t0\t0\t0\t0\t0\t0\t0\n")


def test_the_fit_is_the_line_through_the_jobs_and_the_largest_peak(tmp_path):
    # saliency: 10 s + 0.5 s per explained image (hand-computed: 20 images -> 20 s, 100 images -> 60 s)
    _run(tmp_path, "small", 400, 20, {"saliency_maps": [(20.0, 900.0)], "train_model": [(80.0, 1500.0)]})
    _run(tmp_path, "large", 2000, 100, {"saliency_maps": [(60.0, 950.0)]})
    table = read_benchmarks(tmp_path)
    assert sorted(table["images"]) == [20, 100, 400]
    fit = fit_resources(table)
    assert fit["saliency_maps"]["per_image_s"] == pytest.approx(0.5)
    assert fit["saliency_maps"]["fixed_s"] == pytest.approx(10.0)
    assert fit["saliency_maps"]["peak_mb"] == 950.0
    assert fit["train_model"] == {"peak_mb": 1500.0, "fixed_s": 0.0, "per_image_s": 0.2, "jobs": 1, "images": [400]}
    # request: 1.5 x peak; 1.5 x (10 + 0.5 x 1000) s = 765 s -> 13 min; a retry asks twice as much
    assert request(fit, "saliency_maps", 1000) == (1425, 13)
    assert request(fit, "saliency_maps", 1000, attempt=2) == (2850, 26)
    assert request(fit, "train_model", 10) == (2250, 5)  # at least 5 minutes
    assert request(fit, "unet_maps", 10) is None  # not measured: the rule's own numbers


def test_the_cli_prints_the_profile_block_for_a_larger_run(tmp_path, capsys):
    _run(tmp_path, "pilot", 400, 20, {"saliency_maps": [(20.0, 900.0), (30.0, 1000.0)]})
    main([str(tmp_path), "--scale", "10"])
    printed = yaml.safe_load(capsys.readouterr().out)
    # per image: mean 25 s / 20 images = 1.25 s; 200 images x 1.25 s x 1.5 = 375 s -> 7 min; 1.5 x 1000 MB
    assert printed["set-resources"] == {"saliency_maps": {"mem_mb": 1500, "runtime": 7}}
    assert printed["measured"]["saliency_maps"]["per_image_s"] == pytest.approx(1.25)
    fit = fit_resources(read_benchmarks(tmp_path))
    assert set_resources(fit, read_benchmarks(tmp_path), 10) == printed["set-resources"]


def test_no_benchmark_files_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no benchmark files"):
        main([str(tmp_path)])
