"""End-to-end: the workflow on a tiny config through the snakemake command line (docs/outputs.md)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import h5py
import pandas as pd
import pytest
from conftest import REPO, SNAKEMAKE, TINY, planned_jobs
from conftest import run_snakemake as _snakemake  # the tiny_run fixture (one local run) is in conftest.py


@pytest.mark.slow
def test_outputs_follow_the_contract(tiny_run):
    manifest = pd.read_csv(tiny_run / "data/manifest.csv")
    assert {"image_id", "split", "abnormal"} <= set(manifest.columns)
    for model in ("simple_cnn-r1", "simple_cnn-r2", "tiny_resnet-r1"):
        mdir = tiny_run / "models" / model
        metrics = json.loads((mdir / "metrics.json").read_text())
        assert 0 <= metrics["test_auc"] <= 1 and 0 <= metrics["val_auc"] <= 1
        assert {"epoch", "train_loss", "val_auc"} <= set(pd.read_csv(mdir / "history.csv").columns)
        assert (mdir / "model.pt").stat().st_size > 0
        for method in ("GRAD", "IG", "GCAM"):
            with h5py.File(tiny_run / f"saliency/{model}/{method}.h5") as h5:
                n_pos = int(((manifest.split == "test") & (manifest.abnormal == 1)).sum())
                assert h5["map"].shape == (n_pos, 32, 32) and h5["raw"].shape == (n_pos, 1, 32, 32)
                assert h5.attrs["method"] == method and len(h5.attrs["model_sha256"]) == 64
                assert {"params", "versions", "created", "target"} <= set(h5.attrs)
    utility = pd.read_csv(tiny_run / "metrics/utility.csv")
    assert list(utility.columns) == ["image_id", "model", "method", "weights", "metric", "value"]
    assert set(utility.method) == {"GRAD", "IG", "GCAM", "EDGE", "AVG", "UNET", "RATER"}
    assert set(utility[utility.method == "RATER"].model) == {"human"}
    assert set(utility.metric) == {"pr_auc", "ap", "iou", "dice", "iou_box", "dice_box", "topk"}
    assert set(utility.weights) == {"trained", "randomized", "human"}
    assert set(utility[utility.weights == "randomized"].model) == {"simple_cnn-r1"}
    assert utility.value.between(0, 1).all()
    # cascading randomization of the primary model: 5 blocks of simple_cnn, 4 images, 3 re-initialization draws, SSIM per step
    randomization = pd.read_csv(tiny_run / "metrics/randomization.csv")
    assert set(randomization.step) == {1, 2, 3, 4, 5}
    assert set(randomization.method) == {"GRAD", "IG", "GCAM", "EDGE"}
    assert set(randomization.draw) == {1, 2, 3}  # randomization.draws (schema default 3)
    assert len(randomization) == 3 * 5 * 4 * 4 and randomization.value.between(-1, 1).all()
    with h5py.File(tiny_run / "saliency/simple_cnn-r1/randomized/cascading/GCAM.h5") as h5:
        assert h5["map"].shape == (3, 5, 4, 32, 32) and json.loads(h5.attrs["steps"])[0] == "fc"  # draws x steps
        assert len(json.loads(h5.attrs["draws"])) == 3
    thresholds = pd.read_csv(tiny_run / "metrics/randomization_threshold.csv")
    assert len(thresholds) == 4 and (thresholds.n_pairs == 10).all()
    tests = pd.read_csv(tiny_run / "summary/randomization_tests.csv")
    assert len(tests) == 5 * 4 and tests.p_value.between(0, 1).all()
    assert (tests.test == "welch").all() and {"threshold_sd", "df", "mde", "sd_draw"} <= set(tests.columns)
    assert (tests.n_draws == 3).all() and (tests.n_images == 4).all()
    similarity = pd.read_csv(tiny_run / "metrics/similarity.csv")
    pairs = set(zip(similarity.criterion, similarity.model_a, similarity.model_b))
    assert pairs == {
        ("repeatability", "simple_cnn-r1", "simple_cnn-r2"),
        ("reproducibility", "simple_cnn-r1", "tiny_resnet-r1"),
        ("reproducibility", "simple_cnn-r2", "tiny_resnet-r1"),
        ("repeatability", "unet-r1", "unet-r2"),
        ("reproducibility", "unet-r1", "unet-r2"),
    }
    assert set(similarity.metric) == {"ssim", "iou"}
    for name in ("AVG", "UNET-r1", "UNET-r2"):
        with h5py.File(tiny_run / f"saliency/baselines/{name}.h5") as h5:
            assert h5["map"].shape[1:] == (32, 32) and 0 <= h5["map"][:].min() <= h5["map"][:].max() <= 1
    pass_fail = pd.read_csv(tiny_run / "summary/pass_fail.csv")
    assert list(pass_fail.columns[:6]) == ["method", "criterion", "baseline", "estimate", "p_value", "verdict"]
    assert set(pass_fail.method) == {"GRAD", "IG", "GCAM", "EDGE"}
    assert set(pass_fail[pass_fail.control].method) == {"EDGE"}
    assert set(pass_fail.verdict) <= {"PASS", "FAIL"}
    assert set(zip(pass_fail.criterion, pass_fail.baseline)) == {
        ("utility", "AVG"),
        ("utility", "UNET"),
        ("randomization", "threshold"),
        ("repeatability", "LOW"),
        ("repeatability", "UNET"),
        ("reproducibility", "LOW"),
        ("reproducibility", "UNET"),
    }
    assert len(pass_fail) == 7 * 4 and pass_fail.p_value.between(0, 1).all()
    assert "Utility vs AVG" in (tiny_run / "summary/pass_fail.md").read_text()
    constant = pd.read_csv(tiny_run / "summary/constant_maps.csv")
    assert list(constant.columns) == ["file", "method", "draw", "step", "block", "image_id"]
    assert set(constant.method) <= {"GRAD", "IG", "GCAM", "EDGE", "UNET"}
    assert r"\begin{tabular}{lccccccc}" in (tiny_run / "summary/pass_fail.tex").read_text()
    assert "Repeatability vs high" in (tiny_run / "summary/pass_fail.html").read_text()
    # one table per question of Arun et al., each keeping the long contract
    for name, baselines in (
        ("utility_vs_avg", {"AVG"}),
        ("utility_vs_high", {"UNET"}),
        ("utility_trained_vs_random", {"random"}),
        ("similarity_vs_baselines", {"LOW", "UNET"}),
    ):
        q = pd.read_csv(tiny_run / f"summary/{name}.csv")
        assert set(q.baseline) == baselines and set(q.method) == {"GRAD", "IG", "GCAM", "EDGE"}, name
        assert list(q.columns[:6]) == list(pass_fail.columns[:6]) and q.p_value.between(0, 1).all(), name
    pairwise = pd.read_csv(tiny_run / "summary/pairwise.csv")
    criteria = {"utility", "utility_trained_vs_random", "repeatability", "reproducibility"}
    assert set(pairwise.criterion) == criteria | {f"{c} (controls)" for c in criteria}
    for fig in (
        "utility",
        "randomization",
        "randomization_examples",
        "similarity",
        "training_curves",
        "examples/example1",
        "examples/example2",
    ):
        assert (tiny_run / f"figures/{fig}.png").read_bytes()[:4] == b"\x89PNG", fig
        assert (tiny_run / f"figures/{fig}.pdf").read_bytes()[:5] == b"%PDF-", fig
    for log in ("data/synthetic_dataset.log", "train/simple_cnn-r1.log", "saliency/simple_cnn-r1/IG.log"):
        assert (tiny_run / "logs" / log).stat().st_size > 0


@pytest.mark.slow
def test_second_run_has_nothing_to_do(tiny_run):
    proc = _snakemake(tiny_run.parents[1], "-n", "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_lint_is_clean(tmp_path):
    proc = subprocess.run([*SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in out, out[-3000:]


def test_detector_baseline_and_independent_mode_plan(tmp_path):
    """With the detector as high baseline and both randomization modes, the DAG has the right jobs."""
    import yaml

    cfg = yaml.safe_load(TINY.read_text())
    cfg["baselines"] = {"high": "detector", "replicates": 2}
    cfg["randomization"]["modes"] = ["cascading", "independent"]
    alt = tmp_path / "detector.yaml"
    alt.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [
            *SNAKEMAKE,
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(alt),
            "-n",
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "train_detector" in out and "detector_maps" in out and "train_unet" not in out
    assert "randomized/independent/GCAM.h5" in out and "DETECTOR-r2.h5" in out


def test_invalid_config_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("methods: [GRAD, IG, GCAM]", "methods: [GRAD, BOGUS]"))
    proc = subprocess.run(
        [
            *SNAKEMAKE,
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(bad),
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "BOGUS" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_two_runs_from_scratch_give_identical_tables(tiny_run, tmp_path):
    proc = _snakemake(tmp_path, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    again = tmp_path / "results/tiny"
    for rel in (
        "data/manifest.csv",
        "metrics/utility.csv",
        "summary/pass_fail.csv",
        "summary/pairwise.csv",
        "models/simple_cnn-r1/history.csv",
        "metrics/randomization.csv",
        "metrics/similarity.csv",
        "metrics/randomization_threshold.csv",
        "summary/randomization_tests.csv",
        "summary/pass_fail.md",
        "models/tiny_resnet-r1/metrics.json",
        "summary/constant_maps.csv",
    ):
        a, b = (tiny_run / rel).read_text(), (again / rel).read_text()
        if rel.endswith("history.csv"):  # the per-epoch wall time differs; everything else must not
            a, b = (pd.read_csv(io.StringIO(t)).drop(columns="seconds").to_csv() for t in (a, b))
        assert a == b, rel
    # bit-identical weights and canonical images (docs/reproducibility.md)
    for rel in ("data/images.h5", "models/simple_cnn-r2/model.pt", "baselines/unet-r1/model.pt"):
        assert (tiny_run / rel).read_bytes() == (again / rel).read_bytes(), rel
    # caches record their creation time: their content checksums are equal
    for rel in (
        "saliency/simple_cnn-r1/IG.h5",
        "saliency/simple_cnn-r1/randomized/cascading/GCAM.h5",
        "saliency/baselines/UNET-r2.h5",
    ):
        with h5py.File(tiny_run / rel) as a, h5py.File(again / rel) as b:
            assert a.attrs["sha256"] == b.attrs["sha256"], rel


def _planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    return planned_jobs(proc.stdout + proc.stderr)


@pytest.mark.slow
def test_key_order_in_the_config_reruns_nothing(tiny_run, tmp_path):
    """Every mapping of the tiny config with its keys reversed: the same params, nothing to do."""
    import yaml

    def reverse(value):
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        return [reverse(v) for v in value] if isinstance(value, list) else value

    path = tmp_path / "reordered.yaml"
    path.write_text(yaml.safe_dump(reverse(yaml.safe_load(TINY.read_text())), sort_keys=False))
    assert list(yaml.safe_load(path.read_text())) != list(yaml.safe_load(TINY.read_text()))
    proc = subprocess.run(
        [
            *SNAKEMAKE,
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(tiny_run.parents[1]),
            "--configfile",
            str(path),
            "-n",
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "Nothing to be done" in out, _planned_jobs(proc)


@pytest.mark.slow
def test_a_plotting_option_reruns_only_plotting(tiny_run, tmp_path):
    """Plot rules take the `plots` config as a parameter: changing it reruns them and nothing upstream;
    changing a decision rule reruns the statistics and nothing upstream of them."""
    import yaml

    cfg = yaml.safe_load(TINY.read_text())
    workdir = tiny_run.parents[1]

    def plan(changes: dict) -> dict[str, int]:
        path = tmp_path / "changed.yaml"
        path.write_text(yaml.safe_dump({**cfg, **changes}, sort_keys=False))  # params compare in key order
        proc = subprocess.run(
            [
                *SNAKEMAKE,
                "-s",
                str(REPO / "Snakefile"),
                "--directory",
                str(workdir),
                "--configfile",
                str(path),
                "-n",
                "--cores",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return _planned_jobs(proc)

    plots = plan({"plots": {"dpi": 72}})
    assert set(plots) == {
        "all",
        "plot_utility",
        "plot_randomization",
        "plot_randomization_examples",
        "plot_similarity",
        "plot_examples",
        "plot_training_curves",
    }, plots
    stats = plan({"stats": {"rules": {"low_ssim": 0.4}}})
    assert set(stats) == {"all", "pass_fail", "plot_similarity"}, stats


@pytest.mark.slow
def test_report_is_produced_and_opens_in_headless_chromium(tiny_run, tmp_path):
    """`snakemake --report` gives one self-contained HTML file that Chromium opens without errors, with every
    category, the PASS/FAIL page and the figures."""
    import time

    from debian import ensure_debian_packages

    workdir = tiny_run.parents[1]
    report = tmp_path / "report.html"
    proc = _snakemake(workdir, "--report", str(report))
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = report.read_text()
    assert "utility.png" in html and "pass_fail.html" in html and "example1.png" in html
    why = ensure_debian_packages(["chromium", "chromium-driver"], ["chromium", "chromedriver"])
    if why:
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)

    def wait_for(xpath: str, timeout: float = 20.0):
        end = time.time() + timeout
        while time.time() < end:
            found = driver.find_elements(By.XPATH, xpath)
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"{xpath} not shown; page text: {driver.find_element(By.TAG_NAME, 'body').text[:500]}")

    def show(category: str, file: str):
        driver.get(report.as_uri())
        wait_for(f"//span[text()='{category}']").click()
        row = wait_for(f"//td[text()='results/tiny/{file}']/..")
        row.find_elements(By.TAG_NAME, "a")[0].click()  # the eye button: show the file

    try:
        driver.get(report.as_uri())
        for category in (
            "PASS/FAIL",
            "Localization utility",
            "Sensitivity to trained weights",
            "Repeatability and reproducibility",
            "Examples",
            "Models",
        ):
            wait_for(f"//span[text()='{category}']")
        show("PASS/FAIL", "summary/pass_fail.html")
        frame = wait_for("//iframe")
        driver.switch_to.frame(frame)
        assert "Utility vs AVG" in wait_for("//table").text
        driver.switch_to.default_content()
        driver.save_screenshot(str(tmp_path / "pass_fail.png"))
        show("Localization utility", "figures/utility.png")
        image = wait_for("//img[contains(@src, 'data:image/png')]")
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 100
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


def test_several_datasets_get_a_cross_dataset_summary(tmp_path):
    """Two datasets with localization: each gets its own tables, and one job puts their verdicts side by side."""
    import yaml

    cfg = yaml.safe_load(TINY.read_text())
    cfg["datasets"]["tiny2"] = {**cfg["datasets"]["tiny"]}
    alt = tmp_path / "two.yaml"
    alt.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = subprocess.run(
        [
            *SNAKEMAKE,
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(alt),
            "-n",
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _planned_jobs(proc)
    assert jobs["cross_dataset_summary"] == 1 and jobs["pass_fail"] == 2 and jobs["plot_examples"] == 2
    out = proc.stdout + proc.stderr
    assert "results/tiny2/summary/pass_fail.csv" in out and "results/summary/pass_fail.md" in out


def test_the_base_install_can_build_the_report():
    """`snakemake --report` needs pygments, which only the test tools brought in before: the package itself
    must require it, or the README's report command fails on a fresh install of the first Quick start line."""
    import importlib.metadata
    import re

    requires = importlib.metadata.requires("saliency-trust") or []
    base = [r for r in requires if "extra ==" not in r]
    assert any(re.match(r"pygments\b", r, re.I) for r in base), base


STABILITY_SEEDS = (7, 8)  # 7 is the tiny config's own seed: that run must equal the plain tiny run


@pytest.mark.slow
def test_stability_mode_marks_the_cells_on_which_seeds_disagree(tiny_run, tmp_path):
    """Stability mode on the tiny config with two seeds: each seed's run lands in results/tiny/seed-{s}/, the
    seed-7 run equals the plain run (seed 7) table for table, and the table across seeds marks exactly the
    cells on which the two seeds' verdicts differ, in every format."""
    seeds_cfg = tmp_path / "seeds.yaml"
    seeds_cfg.write_text(f"seeds: {list(STABILITY_SEEDS)}\n")
    proc = _snakemake(tmp_path, "--configfile", str(TINY), str(seeds_cfg), "--cores", "2", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = tmp_path / "results/tiny"
    for name in ("pass_fail.csv", "pass_fail.md", "randomization_tests.csv", "utility_vs_avg.csv"):
        assert (results / "seed-7/summary" / name).read_bytes() == (tiny_run / "summary" / name).read_bytes(), name
    seeds = {s: pd.read_csv(results / f"seed-{s}/summary/pass_fail.csv") for s in STABILITY_SEEDS}
    table = pd.read_csv(results / "summary/pass_fail.csv")
    assert len(table) == len(seeds[7])
    for row in table.itertuples():
        got = [
            seeds[s]
            .loc[
                (seeds[s]["method"] == row.method)
                & (seeds[s]["criterion"] == row.criterion)
                & (seeds[s]["baseline"] == row.baseline),
                "verdict",
            ]
            .item()
            for s in STABILITY_SEEDS
        ]
        assert row.verdicts == ";".join(got)
        assert row.stable == (got[0] == got[1])
        assert row.verdict == (got[0] if got[0] == got[1] else "unstable")
    assert (~table["stable"]).any(), "the two seeds agree on every cell: pick seeds that disagree somewhere"
    for ext in ("md", "tex", "html"):
        assert "unstable (PASS 1/2)" in (results / f"summary/pass_fail.{ext}").read_text(), ext
    long = pd.read_csv(results / "summary/pass_fail_seeds.csv")
    assert sorted(long["seed"].unique()) == list(STABILITY_SEEDS)
    dry = _snakemake(tmp_path, "--configfile", str(TINY), str(seeds_cfg), "-n")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
