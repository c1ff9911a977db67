"""Paper-scale presets and the data rules on fixture data (issue #6; docs/own-data.md)."""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, planned_jobs
from fixtures_datasets import write_chexpert, write_mura, write_rsna, write_siim
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate
from torch import nn

from saliency_trust.data.adapters import ADAPTERS, convert_options
from saliency_trust.data.adapters.convert import ConvertOptions
from saliency_trust.models.registry import get_architecture, load_backbone_weights
from saliency_trust.models.train import TrainSettings

SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")
PRESETS = {name: REPO / f"config/presets/{name}.yaml" for name in ("siim", "rsna", "mura", "chexpert")}
# Arun et al., Methods "Model Training"; INFORMER (CheXpert): DenseNet121 at 320 px, lr 1e-4, 3 epochs, batch 16.
PAPER = {
    "inception_v3": {"lr": 1e-4, "epochs": 20, "patience": 4, "input_size": 299},
    "densenet121": {"lr": 7e-5, "epochs": 30, "patience": 5, "input_size": 224},
}
INFORMER_DENSENET = {"lr": 1e-4, "epochs": 3, "input_size": 320, "batch_size": 16}
FIXTURES = {
    "siim": lambda tmp: write_siim(tmp / "siim").root,
    "rsna": lambda tmp: write_rsna(tmp / "rsna").root,
    "mura": lambda tmp: write_mura(tmp, annotate=False).root,
    "chexpert": lambda tmp: write_chexpert(tmp).root,
}


def load(name: str) -> dict:
    cfg = yaml.safe_load(PRESETS[name].read_text())
    validate(cfg, SCHEMA)
    return cfg


def snakemake(workdir, *args, configfiles=(), config=()):
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--replace-workflow-config",
        "--configfile",
        *map(str, configfiles),
    ]
    if config:
        cmd += ["--config", *config]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    return proc, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_is_valid_and_reproduces_the_papers_settings(name):
    cfg = load(name)
    ((ds_name, ds),) = cfg["datasets"].items()
    assert ds_name == ds["source"] == name and ds["root"].startswith("resources/datasets/")
    assert ds["splits"]["test_fraction"] == ds["splits"]["val_fraction"] == 0.1  # 90/10 then 90/10
    assert ds["target_label"]
    assert cfg["saliency"]["params"]["IG"]["n_steps"] == 25
    assert cfg["training"]["device"] in ("auto", "cuda") and cfg["saliency"]["device"] in ("auto", "cuda")
    archs = {m["arch"]: m for m in cfg["models"]}
    assert set(archs) == {"inception_v3", "densenet121"}  # two architectures: reproducibility
    primary = cfg["stats"]["primary_architecture"]
    assert archs[primary]["replicates"] >= 2  # repeatability
    for arch, entry in archs.items():
        settings = TrainSettings.from_config(cfg["training"], entry)
        expected = INFORMER_DENSENET if (name, arch) == ("chexpert", "densenet121") else PAPER[arch]
        assert {k: getattr(settings, k) for k in expected} == expected
        assert settings.pretrained_weights == f"resources/weights/{arch}_imagenet.pth"
    assert ds["image_size"] == max(m["input_size"] for m in cfg["models"])  # no model upsamples the canonical image


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_missing_pretrained_weights_give_the_clear_error(name):
    for entry in load(name)["models"]:
        path = REPO / entry["pretrained_weights"]
        assert not path.exists()  # weights are never shipped nor downloaded
        with pytest.raises(FileNotFoundError, match=r"models\[\]\.pretrained_weights") as info:
            load_backbone_weights(nn.Linear(1, 1), get_architecture(entry["arch"]), path)
        assert str(path) in str(info.value) and "Nothing is downloaded" in str(info.value)


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("source", sorted(ADAPTERS))
def test_schema_defaults_are_the_adapter_defaults(source):
    cfg = load("siim")
    extra = {"generic": {"labels": ["y"]}} if source == "generic" else {}
    cfg["datasets"] = {"d": {"source": source, "root": "/data", **extra}}
    validate(cfg, SCHEMA)
    filled = cfg["datasets"]["d"]
    defaults = {k: _plain(v) for k, v in dataclasses.asdict(ADAPTERS[source].Options()).items()}
    if source == "generic":
        defaults["labels"] = ["y"]
    assert filled[source] == defaults
    assert convert_options(filled) == ConvertOptions()
    assert filled["splits"]["group_by"] == "image"


@pytest.mark.parametrize(
    "dataset,needle",
    [
        ({"source": "siim"}, "'root' is a required property"),
        ({"source": "synthetic", "root": "/x"}, "root is not used by source synthetic"),
        ({"source": "rsna", "root": "/x", "siim": {}}, "siim options are only used by source siim"),
        ({"source": "mura", "root": "/x", "mura": {"consensus_min_raters": 0}}, "0 is less than the minimum"),
        ({"source": "nowhere", "root": "/x"}, "nowhere"),
    ],
)
def test_bad_dataset_config_is_refused(dataset, needle):
    cfg = copy.deepcopy(load("siim"))
    cfg["datasets"] = {"d": dataset}
    with pytest.raises(WorkflowError, match=needle):
        validate(cfg, SCHEMA)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_dry_run_on_fixture_data(tmp_path, name):
    root = FIXTURES[name](tmp_path / "data")
    for entry in load(name)["models"]:  # the dry run checks that the local ImageNet weights files exist
        weights = tmp_path / "work" / entry["pretrained_weights"]
        weights.parent.mkdir(parents=True, exist_ok=True)
        weights.write_bytes(b"")
    proc, out = snakemake(
        tmp_path / "work", "-n", configfiles=[PRESETS[name]], config=[f"datasets={{{name}: {{root: {root}}}}}"]
    )
    assert proc.returncode == 0, out[-3000:]
    assert "prepare_dataset" in out and "synthetic_dataset" not in out and "train_model" in out
    assert "similarity_scores" in out and "randomized_saliency" in out
    # CheXpert, and MURA without an annotation file (the presets' default), have no localization: no utility and
    # no PASS/FAIL table; the other criteria still run
    assert ("pass_fail" in out) == ("utility_scores" in out) == (name in ("siim", "rsna"))
    # CheXpert's preset quality-controls the DenseNet121's multi-label predictions as INFORMER (IXG and LRP maps)
    jobs = planned_jobs(proc.stdout)
    if name == "chexpert":
        assert jobs["qc_class_maps"] == 2 and jobs["qc_predictions"] == jobs["quality_control"] == 1
    else:
        assert "quality_control" not in jobs
    assert not (tmp_path / "work/results").exists()  # a dry run converts nothing


def test_missing_dataset_root_names_the_config_key(tmp_path):
    proc, out = snakemake(
        tmp_path, "-n", configfiles=[PRESETS["siim"]], config=[f"datasets={{siim: {{root: {tmp_path / 'nowhere'}}}}}"]
    )
    assert proc.returncode != 0
    assert "datasets.siim.root" in out and "nowhere" in out


def test_data_rules_convert_and_generate_side_by_side(tmp_path):
    """The SIIM preset plus a synthetic dataset: each dataset goes to its own rule; outputs and logs written."""
    root = write_siim(tmp_path / "data/siim").root
    override = tmp_path / "override.yaml"
    splits = {"test_fraction": 0.25, "val_fraction": 0.25}
    override.write_text(
        yaml.safe_dump(
            {
                "datasets": {
                    "siim": {"root": str(root), "image_size": 32, "splits": splits},
                    "synth": {"source": "synthetic", "splits": splits, "synthetic": {"n_images": 40, "image_size": 32}},
                }
            }
        )
    )
    work = tmp_path / "work"
    targets = [f"results/{d}/data/{f}" for d in ("siim", "synth") for f in ("manifest.csv", "images.h5")]
    proc, out = snakemake(work, *targets, "--cores", "2", configfiles=[PRESETS["siim"], override])
    assert proc.returncode == 0, out[-3000:]
    assert (work / "results/siim/data/skipped.csv").read_text().startswith("image_id,where,reason")
    assert "pneumothorax" in (work / "results/siim/data/manifest.csv").read_text().splitlines()[0]
    log = (work / "results/siim/logs/data/prepare_dataset.log").read_text()
    assert "40 images written, 0 skipped" in log
    assert (work / "results/synth/logs/data/synthetic_dataset.log").stat().st_size > 0
    (root / "train-rle.csv").write_text("ImageId, EncodedPixels\nbroken, 1 2 3\n")  # edited table: rerun, fail, log
    proc, out = snakemake(work, *targets, "--cores", "2", configfiles=[PRESETS["siim"], override])
    assert proc.returncode != 0
    log = (work / "results/siim/logs/data/prepare_dataset.log").read_text()
    assert "train-rle.csv row 2: image 'broken'" in log
    assert not (work / "results/siim/data/manifest.csv").exists()  # the failed job left no output


def test_missing_pretrained_weights_fail_the_dry_run(tmp_path):
    """A preset whose ImageNet weights file is absent stops at planning time, naming the file."""
    root = FIXTURES["siim"](tmp_path / "data")
    proc, out = snakemake(
        tmp_path / "work", "-n", configfiles=[PRESETS["siim"]], config=[f"datasets={{siim: {{root: {root}}}}}"]
    )
    assert proc.returncode != 0
    assert "resources/weights/inception_v3_imagenet.pth" in out
    assert not (tmp_path / "work/results").exists()


def test_chexpert_preset_quality_control_is_informers():
    """INFORMER (Shu et al.): DenseNet121's predictions, IXG and LRP maps, entropy and TTA baselines, grid step
    0.001, 30 bootstrap resamples; TTA rotations up to 45 degrees, a 10 x 10 box blur and crop padding 8."""
    qc = load("chexpert")["qc"]
    assert qc["datasets"] == ["chexpert"] and qc["model"] == "densenet121-r1"
    assert qc["methods"] == ["IXG", "LRP"] and qc["baselines"] == ["entropy", "tta"]
    assert qc["grid_step"] == 0.001 and qc["bootstrap"]["resamples"] == 30
    assert qc["tta"] == {"passes": 10, "rotation": 45, "blur_kernel": 10, "crop_padding": 8}
