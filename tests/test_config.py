"""Config schema validation and the names derived from the config (docs/troubleshooting.md)."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

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


def _tiny():
    return yaml.safe_load((REPO / "tests/data/tiny_config.yaml").read_text())


@pytest.mark.parametrize(
    "mutate,line",
    [
        (
            lambda c: c["models"][1].update(arch="vgg16"),
            "config: models[1].arch = 'vgg16': must be one of simple_cnn, tiny_resnet, inception_v3, densenet121",
        ),
        (lambda c: c["training"].update(epochs="ten"), "config: training.epochs = 'ten': must be of type integer"),
        (
            lambda c: c["saliency"].update(methods=["GRAD", "FOO"]),
            "config: saliency.methods[1] = 'FOO': must be one of GRAD, SG, IG, SIG, GCAM, XRAI, GBP, GGCAM, IXG, LRP",
        ),
        (
            lambda c: c["datasets"]["tiny"].update(source="nowhere"),
            "config: datasets.tiny.source = 'nowhere': must be one of synthetic, siim, rsna, mura, chexpert, generic",
        ),
        (
            lambda c: c["datasets"]["tiny"].update(root="/x"),
            "config: datasets.tiny.root: root is not used by source synthetic; remove it",
        ),
        (
            lambda c: c["datasets"].update(real={"source": "siim"}),
            "config: datasets.real.root: required key is missing",
        ),
        (lambda c: c.update(stats={"alpha": 1.5}), "config: stats.alpha = 1.5: must be a number < 1"),
        (
            lambda c: c.update(unknown_key=1),
            "config: unknown key 'unknown_key'; allowed keys: baselines, datasets, hdf5_file_locking, "
            "metrics, models, plots, qc, randomization, saliency, seed, seeds, stats, storage, training",
        ),
        (lambda c: c.update(seeds=[3]), "config: seeds = [3]: must be at least 2 item(s)"),
        (lambda c: c["randomization"].update(draws=0), "config: randomization.draws = 0: must be a number >= 1"),
        (
            lambda c: c["randomization"].update(models="prim"),
            "config: randomization.models = 'prim': must be one of primary, first_replicates, all or a list of strings "
            "matching ^[a-z0-9_]+-r[0-9]+$",
        ),
        # cross-key rules
        (
            lambda c: c["models"][0].update(replicates=1),
            "config: models[0].replicates = 1: repeatability needs >= 2 replicates of the primary architecture "
            "simple_cnn; change it or remove repeatability from stats.criteria",
        ),
        (
            lambda c: c.update(models=[{"arch": "simple_cnn", "replicates": 2}]),
            "config: models = ['simple_cnn']: reproducibility needs >= 2 architectures; change it or remove "
            "reproducibility from stats.criteria",
        ),
        (
            lambda c: c["randomization"].update(modes=["independent"]),
            "config: randomization.modes = ['independent']: randomization needs the cascading mode; change it or "
            "remove randomization from stats.criteria",
        ),
        (
            lambda c: c["baselines"].update(replicates=1),
            "config: baselines.replicates = 1: the high baseline of repeatability and reproducibility needs >= 2 "
            "replicates; set 2, or baselines.high: none",
        ),
        (
            lambda c: c["models"].append({"arch": "simple_cnn"}),
            "config: models[2].arch = 'simple_cnn': listed twice; give each architecture one entry and set its "
            "replicates",
        ),
        (
            lambda c: c.update(stats={"primary_architecture": "densenet121"}),
            "config: stats.primary_architecture = 'densenet121': must be one of the configured architectures "
            "simple_cnn, tiny_resnet",
        ),
        (
            lambda c: c["datasets"].update(site2={"source": "synthetic", "evaluate": {"models_from": "absent"}}),
            "config: datasets.site2.evaluate.models_from = 'absent': must name another dataset of the config (tiny)",
        ),
        (
            lambda c: c["datasets"].update(
                site2={"source": "synthetic", "evaluate": {"models_from": "tiny"}, "synthetic": {"image_size": 32}},
                site3={"source": "synthetic", "evaluate": {"models_from": "site2"}, "synthetic": {"image_size": 32}},
            ),
            "config: datasets.site3.evaluate.models_from = 'site2': that dataset is an external test set itself; "
            "name the one its models come from",
        ),
        (
            lambda c: c["datasets"].update(site2={"source": "synthetic", "evaluate": {"models_from": "tiny"}}),
            "config: datasets.site2.evaluate.models_from = 'tiny': its images are 32 px, this dataset's 64 px; "
            "the models and baselines need the same image size (image_size, or synthetic.image_size)",
        ),
        (
            lambda c: c["randomization"].update(models=["simple_cnn-r3"]),
            "config: randomization.models[0] = 'simple_cnn-r3': must be one of the configured models simple_cnn-r1, "
            "simple_cnn-r2, tiny_resnet-r1",
        ),
    ],
)
def test_bad_config_stops_with_one_line_naming_the_key_and_what_is_allowed(mutate, line):
    from saliency_trust.validation import ConfigError, validate_config

    cfg = _tiny()
    mutate(cfg)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, SCHEMA)
    assert str(info.value) == line


def test_impossible_criteria_pass_once_left_out_of_stats_criteria(tmp_path):
    from saliency_trust.validation import ConfigError, validate_config

    cfg = _tiny()
    cfg["models"] = [{"arch": "simple_cnn", "replicates": 1}]
    cfg["stats"] = {"criteria": ["utility", "randomization"]}
    validate_config(cfg, SCHEMA)  # fills defaults, no error
    assert cfg["training"]["device"] == "auto" and cfg["stats"]["alpha"] == 0.05
    cfg = _tiny()
    cfg["datasets"]["real"] = {"source": "generic", "root": str(tmp_path / "absent"), "generic": {"labels": ["y"]}}
    with pytest.raises(ConfigError, match=r"^config: datasets\.real\.root: dataset folder '.*absent' does not exist"):
        validate_config(cfg, SCHEMA)
    (tmp_path / "absent").mkdir()
    validate_config(cfg, SCHEMA)


def test_config_mappings_compare_without_key_order():
    """Snakemake compares params by repr: a reordered mapping must give the same repr, keep its own order
    when iterated, and survive the pickling that hands params to a job's script."""
    import json
    import pickle

    from saliency_trust.config import OrderFreeDict, make_key_order_free

    a = {"seed": 1, "saliency": {"params": {"IG": {"n_steps": 25, "baseline": "black"}}, "methods": ["IG", "SG"]}}
    b = {"saliency": {"methods": ["IG", "SG"], "params": {"IG": {"baseline": "black", "n_steps": 25}}}, "seed": 1}
    make_key_order_free(a)
    make_key_order_free(b)
    assert repr(a["saliency"]) == repr(b["saliency"]) and a["saliency"] == b["saliency"]
    assert list(a["saliency"]["params"]["IG"]) == ["n_steps", "baseline"]  # iteration keeps the file's order
    assert a["saliency"]["methods"] == ["IG", "SG"]  # lists keep their order (it means something)
    assert (
        repr(OrderFreeDict(b=1, a={"d": 2, "c": 3})) == "{'a': {'d': 2, 'c': 3}, 'b': 1}"
    )  # only converted dicts sort
    copy = pickle.loads(pickle.dumps(a["saliency"]))
    assert isinstance(copy, OrderFreeDict) and copy == a["saliency"]
    assert json.loads(json.dumps(a)) == a


def test_an_external_test_set_takes_the_models_of_its_source_run_and_images_of_its_own():
    """models_run maps an external test set's run (plain or stability seed) to its source's; data_seed gives it
    image streams of its own and leaves every other dataset's seed as it was."""
    from saliency_trust.config import data_seed, is_external, models_run, run_seed

    cfg = _tiny()
    cfg["datasets"]["site2"] = {"source": "synthetic", "evaluate": {"models_from": "tiny"}}
    assert models_run(cfg, "site2") == "tiny" and models_run(cfg, "site2/seed-3") == "tiny/seed-3"
    assert models_run(cfg, "tiny") == "tiny" and models_run(cfg, "tiny/seed-3") == "tiny/seed-3"
    assert is_external(cfg["datasets"]["site2"]) and not is_external(cfg["datasets"]["tiny"])
    assert data_seed(cfg, "tiny") == run_seed(cfg, "tiny") and data_seed(cfg, "tiny/seed-3") == 3
    assert data_seed(cfg, "site2") != run_seed(cfg, "site2") and data_seed(cfg, "site2") == data_seed(cfg, "site2")
