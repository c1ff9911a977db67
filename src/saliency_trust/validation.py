"""Config validation before any job runs (docs/troubleshooting.md).

:func:`validate_config` checks the config against ``workflow/schemas/config.schema.yaml``
(filling its defaults) and the rules that span several keys; a bad config stops the run with one
line naming the key and what is allowed. Only the Snakefile and the tests import this module, so the
stage scripts do not need jsonschema or Snakemake.
"""

from __future__ import annotations

from pathlib import Path

from saliency_trust.config import model_names


class ConfigError(ValueError):
    """A config value the run cannot use; the message is one line: ``config: <key> = <value>: <what is allowed>``."""


def _key(path) -> str:
    """``models[1].arch`` from a JSON path such as ``['models', 1, 'arch']``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(schema: dict) -> str:
    """What a (sub)schema allows, in words."""
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    kind = schema.get("type")
    if kind == "array" and isinstance(schema.get("items"), dict):
        items = schema["items"]
        return (
            f"a list of strings matching {items['pattern']}" if "pattern" in items else f"a list of {_describe(items)}"
        )
    if "pattern" in schema:
        return f"a string matching {schema['pattern']}"
    if isinstance(kind, list):
        return " or ".join(kind)
    return str(kind or schema.get("description", "a valid value"))


_BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


def schema_error_line(error) -> str:
    """One line for a jsonschema ``ValidationError``: the key, the value and what is allowed."""
    v, expected, path = error.validator, error.validator_value, list(error.absolute_path)
    key = _key(path)
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f" under {key}" if path else ""
        return f"config: unknown key '{_key(path + extra[:1])}'{where}; allowed keys: {', '.join(allowed)}"
    if v == "required":
        missing = [k for k in expected if k not in error.instance]
        return f"config: {_key(path + missing[:1])}: required key is missing"
    if v == "not":
        return f"config: {key}: {expected.get('description', 'not allowed here')}; remove it"
    if v in _BOUNDS:
        allowed = f"a number {_BOUNDS[v]} {expected}"
    elif v == "type":
        allowed = "of type " + (" or ".join(expected) if isinstance(expected, list) else expected)
    elif v in ("oneOf", "anyOf"):
        allowed = " or ".join(_describe(s) for s in expected)
    elif v in ("minItems", "minProperties", "minLength"):
        allowed = f"at least {expected} item(s)" if v != "minLength" else "a non-empty string"
    elif v == "uniqueItems":
        allowed = "a list without repeated items"
    else:
        allowed = _describe(error.schema)
    return f"config: {key} = {_short(error.instance)}: must be {allowed}"


def validate_config(config: dict, schema_path: str | Path) -> None:
    """Validate ``config`` against the schema (filling defaults), then the cross-key rules.

    Raises :class:`ConfigError` with one line naming the key and what is allowed.
    An error on a dataset's ``source`` is reported first, since the source decides its other keys.
    """
    import yaml
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match
    from snakemake.utils import validate

    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = list(Draft202012Validator(schema).iter_errors(config))
    if errors:
        source = [e for e in errors if list(e.absolute_path)[-1:] == ["source"]]
        raise ConfigError(schema_error_line(best_match(source or errors)))
    validate(config, str(schema_path))  # fills the schema's defaults
    check_config(config)


def _image_size(dataset: dict) -> int | None:
    """The canonical image size of a dataset entry (defaults filled by the schema)."""
    if dataset.get("source") == "synthetic":
        return (dataset.get("synthetic") or {}).get("image_size")
    return dataset.get("image_size")


def check_config(config: dict) -> None:
    """Rules the schema cannot express (one :class:`ConfigError` line each), on a config with defaults filled.

    Architectures listed once; ``stats.primary_architecture`` and ``randomization.models`` name configured
    models; each criterion of ``stats.criteria`` can be decided (repeatability: >= 2 replicates of the primary
    architecture; reproducibility: >= 2 architectures; randomization: the cascading mode; the high baseline's
    similarity: ``baselines.replicates`` >= 2); an external test set (``evaluate.models_from``) names another dataset
    that is not one itself; every dataset folder (``root``) exists.
    """
    archs = [m["arch"] for m in config["models"]]
    for i, arch in enumerate(archs):
        if arch in archs[:i]:
            raise ConfigError(
                f"config: models[{i}].arch = '{arch}': listed twice; give each architecture one entry "
                "and set its replicates"
            )
    stats = config["stats"]
    primary = stats.get("primary_architecture") or archs[0]
    if primary not in archs:
        raise ConfigError(
            f"config: stats.primary_architecture = '{primary}': must be one of the configured "
            f"architectures {', '.join(archs)}"
        )
    choice = config["randomization"]["models"]
    if isinstance(choice, list):
        names = model_names(config)
        for i, name in enumerate(choice):
            if name not in names:
                raise ConfigError(
                    f"config: randomization.models[{i}] = '{name}': must be one of the configured "
                    f"models {', '.join(names)}"
                )
    # criteria are decided only where a dataset runs them (a config of quality-controlled datasets needs none)
    trust = any(d.get("trust_criteria", True) for d in config["datasets"].values())
    criteria = stats.get("criteria", []) if trust else []
    index = archs.index(primary)
    needs = {
        "repeatability": (
            config["models"][index]["replicates"] < 2,
            f"models[{index}].replicates",
            config["models"][index]["replicates"],
            f"repeatability needs >= 2 replicates of the primary architecture {primary}",
        ),
        "reproducibility": (len(archs) < 2, "models", archs, "reproducibility needs >= 2 architectures"),
        "randomization": (
            "cascading" not in config["randomization"]["modes"],
            "randomization.modes",
            config["randomization"]["modes"],
            "randomization needs the cascading mode",
        ),
    }
    for criterion, (impossible, key, value, why) in needs.items():
        if criterion in criteria and impossible:
            raise ConfigError(
                f"config: {key} = {_short(value)}: {why}; change it or remove {criterion} from stats.criteria"
            )
    baselines = config["baselines"]
    if (
        baselines["high"] != "none"
        and baselines["replicates"] < 2
        and {"repeatability", "reproducibility"} & set(criteria)
    ):
        raise ConfigError(
            f"config: baselines.replicates = {baselines['replicates']}: the high baseline of "
            "repeatability and reproducibility needs >= 2 replicates; set 2, or baselines.high: none"
        )
    for name, dataset in config["datasets"].items():
        source = (dataset.get("evaluate") or {}).get("models_from")
        if source is None:
            continue
        key = f"config: datasets.{name}.evaluate.models_from = '{source}'"
        if source not in config["datasets"] or source == name:
            others = [d for d in config["datasets"] if d != name]
            raise ConfigError(f"{key}: must name another dataset of the config ({', '.join(others) or 'none'})")
        if config["datasets"][source].get("evaluate"):
            raise ConfigError(f"{key}: that dataset is an external test set itself; name the one its models come from")
        sizes = {d: _image_size(config["datasets"][d]) for d in (name, source)}
        if sizes[name] != sizes[source]:
            raise ConfigError(
                f"{key}: its images are {sizes[source]} px, this dataset's {sizes[name]} px; the models and "
                "baselines need the same image size (image_size, or synthetic.image_size)"
            )
    check_quality_control(config)
    from saliency_trust.data.adapters import context

    for name, dataset in config["datasets"].items():
        if dataset["source"] != "synthetic":
            try:
                context(name, dataset)
            except (FileNotFoundError, ValueError) as err:
                raise ConfigError(f"config: {err}") from None


def dataset_labels(dataset: dict) -> list[str] | None:
    """The labels a dataset entry will have, where the config says (None where only its data does: MURA, RSNA
    and SIIM have one label each)."""
    source = dataset["source"]
    if source == "synthetic":
        spec = dataset.get("synthetic") or {}
        return list(spec.get("lesion_kinds", ["nodule", "opacity"])) if spec.get("multi_label") else ["abnormal"]
    if source == "chexpert":
        return list(((dataset.get("chexpert") or {}).get("findings") or {}).values())
    if source == "generic":
        return list((dataset.get("generic") or {}).get("labels") or [])
    return None


def check_quality_control(config: dict) -> None:
    """``qc``: its datasets exist, are multi-label and train their own models; its model is configured; a dataset
    that runs no trust criteria is quality-controlled (else it would do nothing)."""
    from saliency_trust.config import qc_model

    qc = config.get("qc") or {}
    for i, name in enumerate(qc.get("datasets", [])):
        key = f"config: qc.datasets[{i}] = '{name}'"
        if name not in config["datasets"]:
            raise ConfigError(f"{key}: must name a dataset of the config ({', '.join(config['datasets'])})")
        dataset = config["datasets"][name]
        if (dataset.get("evaluate") or {}).get("models_from"):
            raise ConfigError(f"{key}: an external test set has no validation split to fit the flagging thresholds")
        labels = dataset_labels(dataset)
        if labels is not None and len(labels) < 2:
            hint = " (set synthetic.multi_label: true)" if dataset["source"] == "synthetic" else ""
            raise ConfigError(f"{key}: quality control needs a multi-label dataset; it has the labels {labels}{hint}")
    if qc.get("datasets"):
        try:
            name = qc_model(config)
        except KeyError as err:
            raise ConfigError(f"config: qc.model = '{qc.get('model')}': {err.args[0]}") from None
        if name not in model_names(config):
            raise ConfigError(
                f"config: qc.model = '{name}': must be one of the configured models {', '.join(model_names(config))}"
            )
    for name, dataset in config["datasets"].items():
        if not dataset.get("trust_criteria", True) and name not in qc.get("datasets", []):
            raise ConfigError(
                f"config: datasets.{name}.trust_criteria = false: the dataset would run nothing; add it to "
                "qc.datasets or set trust_criteria: true"
            )
