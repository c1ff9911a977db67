"""Config schema validation and the names derived from the config (SPEC 11)."""

from __future__ import annotations

import copy

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from conftest import REPO
from saliency_trust.config import model_entry, model_names, model_seed, parse_model_name, primary_models

SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


def _default():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_and_tiny_configs_are_valid_and_get_defaults():
    for path in (REPO / "config.yaml", REPO / "tests/data/tiny_config.yaml"):
        cfg = yaml.safe_load(path.read_text())
        validate(cfg, SCHEMA)
        assert cfg["stats"]["alpha"] == 0.05
        assert cfg["saliency"]["output"] == "logit"


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda c: c["models"][0].__setitem__("arch", "vgg16"), "vgg16"),
        (lambda c: c["saliency"].__setitem__("methods", ["GRAD", "FOO"]), "FOO"),
        (lambda c: c["training"].__setitem__("epochs", "ten"), "ten"),
        (lambda c: c["stats"].__setitem__("alpha", 1.5), "1.5"),
        (lambda c: c.__setitem__("unknown_key", 1), "unknown_key"),
        (lambda c: c["datasets"]["synthetic"].__setitem__("source", "nowhere"), "nowhere"),
    ],
)
def test_bad_config_is_refused_naming_the_value(mutate, needle):
    cfg = _default()
    mutate(cfg)
    with pytest.raises(WorkflowError, match=needle):
        validate(cfg, SCHEMA)


def test_model_names_entries_and_seeds():
    cfg = _default()
    validate(cfg, SCHEMA)
    assert model_names(cfg) == ["simple_cnn-r1", "simple_cnn-r2", "tiny_resnet-r1"]
    assert parse_model_name("tiny_resnet-r1") == ("tiny_resnet", 1)
    assert model_entry(cfg, "simple_cnn-r2")["replicates"] == 2
    with pytest.raises(KeyError):
        model_entry(cfg, "simple_cnn-r3")
    with pytest.raises(ValueError):
        parse_model_name("simple_cnn")
    seeds = {model_seed(cfg, "synthetic", m) for m in model_names(cfg)}
    assert len(seeds) == 3  # replicates differ
    assert model_seed(cfg, "synthetic", "simple_cnn-r1") == model_seed(copy.deepcopy(cfg), "synthetic", "simple_cnn-r1")
    other = copy.deepcopy(cfg)
    other["seed"] += 1
    assert model_seed(other, "synthetic", "simple_cnn-r1") != model_seed(cfg, "synthetic", "simple_cnn-r1")
    assert primary_models(cfg) == ["simple_cnn-r1", "simple_cnn-r2"]


def test_has_localization_by_source():
    from saliency_trust.config import has_localization

    assert has_localization({"source": "synthetic"}) and has_localization({"source": "siim"})
    assert has_localization({"source": "rsna"})
    assert not has_localization({"source": "chexpert"})
    assert not has_localization({"source": "mura", "mura": {"annotations": None}})
    assert has_localization({"source": "mura", "mura": {"annotations": "boxes.csv"}})
    assert not has_localization({"source": "generic", "generic": {"masks_dir": None, "box_columns": None}})
    assert has_localization({"source": "generic", "generic": {"masks_dir": "masks"}})
