"""Config helpers shared by the Snakefile and the stage entry points.

:func:`validate_config` checks the config against ``workflow/schemas/config.schema.yaml``
(filling its defaults) and the rules that span several keys, before any job runs;
a bad config stops the run with one line naming the key and what is allowed.
The other helpers derive names and seeds from it.
Model names are ``{arch}-r{replicate}`` (replicates count from 1).
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from saliency_trust.io import stable_seed

MODEL_NAME = re.compile(r"^(?P<arch>[a-z0-9_]+)-r(?P<replicate>[0-9]+)$")


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
        return f"a list of strings matching {items['pattern']}" if "pattern" in items else f"a list of {_describe(items)}"
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


def check_config(config: dict) -> None:
    """Rules the schema cannot express (one :class:`ConfigError` line each), on a config with defaults filled.

    Architectures listed once; ``stats.primary_architecture`` and ``randomization.models`` name configured
    models; each criterion of ``stats.criteria`` can be decided (repeatability: >= 2 replicates of the primary
    architecture; reproducibility: >= 2 architectures; randomization: the cascading mode; the high baseline's
    similarity: ``baselines.replicates`` >= 2); every dataset folder (``root``) exists.
    """
    archs = [m["arch"] for m in config["models"]]
    for i, arch in enumerate(archs):
        if arch in archs[:i]:
            raise ConfigError(f"config: models[{i}].arch = '{arch}': listed twice; give each architecture one entry "
                              "and set its replicates")
    stats = config["stats"]
    primary = stats.get("primary_architecture") or archs[0]
    if primary not in archs:
        raise ConfigError(f"config: stats.primary_architecture = '{primary}': must be one of the configured "
                          f"architectures {', '.join(archs)}")
    choice = config["randomization"]["models"]
    if isinstance(choice, list):
        names = model_names(config)
        for i, name in enumerate(choice):
            if name not in names:
                raise ConfigError(f"config: randomization.models[{i}] = '{name}': must be one of the configured "
                                  f"models {', '.join(names)}")
    criteria = stats.get("criteria", [])
    index = archs.index(primary)
    needs = {
        "repeatability": (config["models"][index]["replicates"] < 2, f"models[{index}].replicates",
                          config["models"][index]["replicates"],
                          f"repeatability needs >= 2 replicates of the primary architecture {primary}"),
        "reproducibility": (len(archs) < 2, "models", archs, "reproducibility needs >= 2 architectures"),
        "randomization": ("cascading" not in config["randomization"]["modes"], "randomization.modes",
                          config["randomization"]["modes"], "randomization needs the cascading mode"),
    }
    for criterion, (impossible, key, value, why) in needs.items():
        if criterion in criteria and impossible:
            raise ConfigError(f"config: {key} = {_short(value)}: {why}; change it or remove {criterion} from "
                              "stats.criteria")
    baselines = config["baselines"]
    if baselines["high"] != "none" and baselines["replicates"] < 2 and {"repeatability", "reproducibility"} & set(criteria):
        raise ConfigError(f"config: baselines.replicates = {baselines['replicates']}: the high baseline of "
                          "repeatability and reproducibility needs >= 2 replicates; set 2, or baselines.high: none")
    from saliency_trust.data.adapters import context

    for name, dataset in config["datasets"].items():
        if dataset["source"] != "synthetic":
            try:
                context(name, dataset)
            except (FileNotFoundError, ValueError) as err:
                raise ConfigError(f"config: {err}") from None


def model_names(config: dict) -> list[str]:
    """All trained models of the config, architecture by architecture."""
    return [f"{m['arch']}-r{r}" for m in config["models"] for r in range(1, m["replicates"] + 1)]


def parse_model_name(name: str) -> tuple[str, int]:
    match = MODEL_NAME.match(name)
    if not match:
        raise ValueError(f"model name '{name}' is not of the form '<arch>-r<replicate>'")
    return match["arch"], int(match["replicate"])


def model_entry(config: dict, name: str) -> dict:
    """The ``models`` entry of the config that a model name belongs to."""
    arch, replicate = parse_model_name(name)
    for entry in config["models"]:
        if entry["arch"] == arch and 1 <= replicate <= entry["replicates"]:
            return entry
    raise KeyError(f"model '{name}' is not defined by the config's 'models' list")


def model_seed(config: dict, dataset: str, name: str) -> int:
    """Seed of one replicate: derived from the config seed, the dataset and the model name."""
    return stable_seed(config["seed"], dataset, name)


def primary_models(config: dict) -> list[str]:
    """Replicates of the architecture whose maps decide the PASS/FAIL table (``stats.primary_architecture``)."""
    arch = config["stats"].get("primary_architecture") or config["models"][0]["arch"]
    names = [n for n in model_names(config) if parse_model_name(n)[0] == arch]
    if not names:
        raise KeyError(f"stats.primary_architecture '{arch}' is not one of the config's models")
    return names


def setup_logging(log_path: str | Path | None) -> None:
    """Send log records (and warnings) of a job to its Snakemake log file and stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True)
    logging.captureWarnings(True)

    def log_uncaught(exc_type, exc, tb):  # the failure reason ends up in the job's log, not only on stderr
        logging.getLogger("saliency_trust").critical("job failed: %s", exc, exc_info=(exc_type, exc, tb))

    sys.excepthook = log_uncaught


def model_pairs(models: list[str]) -> list[tuple[str, str, str]]:
    """(criterion, model_a, model_b) for every pair of models: replicates of one architecture give
    repeatability, models of different architectures give reproducibility (SPEC 6.3-6.4)."""
    out = []
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            same = parse_model_name(a)[0] == parse_model_name(b)[0]
            out.append(("repeatability" if same else "reproducibility", a, b))
    return out


def randomized_models(config: dict) -> list[str]:
    """Models whose weights are randomized (``randomization.models``): ``primary`` (first replicate of the
    primary architecture), ``first_replicates`` (first replicate of every architecture), ``all``, or a list."""
    choice = config["randomization"]["models"]
    names = model_names(config)
    if choice == "primary":
        return primary_models(config)[:1]
    if choice == "first_replicates":
        return [n for n in names if parse_model_name(n)[1] == 1]
    if choice == "all":
        return names
    unknown = [m for m in choice if m not in names]
    if unknown:
        raise KeyError(f"randomization.models: '{unknown[0]}' is not one of the config's models {names}")
    return list(choice)


def has_localization(dataset_cfg: dict) -> bool:
    """Whether a dataset has a localization ground truth (masks or boxes), which utility needs (SPEC 6.1).

    CheXpert has none; MURA only with an annotation file; a generic manifest only with a mask folder or
    box columns. Without it, the pipeline computes the criteria that need no ground truth
    (randomization, repeatability, reproducibility) and no utility or PASS/FAIL table.
    """
    source = dataset_cfg.get("source")
    if source == "chexpert":
        return False
    if source == "mura":
        return bool(dataset_cfg.get("mura", {}).get("annotations"))
    if source == "generic":
        generic = dataset_cfg.get("generic", {})
        return bool(generic.get("masks_dir") or generic.get("box_columns"))
    return True


def question_tables(config: dict) -> list[str]:
    """Names of the per-question tables of Arun et al. the config yields for a dataset with localization:
    utility vs AVG always; vs the high baseline when one is configured; trained vs random when cascading
    randomization runs; similarity vs baselines when there is a pair of models."""
    names = ["utility_vs_avg"]
    if config["baselines"]["high"] != "none":
        names.append("utility_vs_high")
    if "cascading" in config["randomization"]["modes"] and randomized_models(config):
        names.append("utility_trained_vs_random")
    if model_pairs(model_names(config)):
        names.append("similarity_vs_baselines")
    return names
