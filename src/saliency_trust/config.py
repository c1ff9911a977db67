"""Config helpers shared by the Snakefile and the stage entry points: names and seeds derived from the
validated config (validation itself: :mod:`saliency_trust.validation`).
Model names are ``{arch}-r{replicate}`` (replicates count from 1).
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from saliency_trust.execution import log_job_environment
from saliency_trust.io import stable_seed


class OrderFreeDict(dict):
    """A config mapping whose ``repr`` lists its keys sorted. Snakemake compares a job's params with the
    recorded ones by ``repr``, so reordering the keys of a mapping in config.yaml changes no params and
    reruns nothing; iterating still follows the file's order (tables and figures keep it)."""

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in sorted(self.items(), key=lambda kv: repr(kv[0]))) + "}"


def order_free(value):
    """``value`` with every mapping in it (in lists too) turned into an :class:`OrderFreeDict`."""
    if isinstance(value, dict):
        return OrderFreeDict((k, order_free(v)) for k, v in value.items())
    if isinstance(value, list):
        return [order_free(v) for v in value]
    return value


def make_key_order_free(config: dict) -> None:
    """Turn every mapping of the (validated) config into an :class:`OrderFreeDict`, in place."""
    for key in list(config):
        config[key] = order_free(config[key])


MODEL_NAME = re.compile(r"^(?P<arch>[a-z0-9_]+)-r(?P<replicate>[0-9]+)$")


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


SEED_RUN = re.compile(r"^(?P<dataset>[A-Za-z0-9_-]+)/seed-(?P<seed>[0-9]+)$")


def stability_seeds(config: dict) -> list[int]:
    """The seeds of the stability mode (config ``seeds``); empty when it is off."""
    return [int(s) for s in config.get("seeds") or []]


def dataset_runs(config: dict, dataset: str) -> list[str]:
    """The runs of one dataset: the dataset itself, or one ``{dataset}/seed-{s}`` per stability seed.

    A run is what the workflow's ``{dataset}`` wildcard names: results of a run live in ``results/{run}/``.
    """
    seeds = stability_seeds(config)
    return [f"{dataset}/seed-{s}" for s in seeds] if seeds else [dataset]


def runs_regex(datasets: list[str] | None, seeded: bool) -> str:
    """Wildcard constraint matching the run names of ``datasets`` (None: any dataset name), with the stability
    mode's ``/seed-{s}`` when ``seeded``; a regex matching nothing when the list is empty."""
    suffix = "/seed-[0-9]+" if seeded else ""
    if datasets is None:
        return f"[A-Za-z0-9_-]+{suffix}"
    return "|".join(f"{re.escape(d)}{suffix}" for d in datasets) or "(?!)"


def run_regex(config: dict, datasets: list[str] | None = None) -> str:
    """:func:`runs_regex` for the config's mode (seeded when it has stability ``seeds``)."""
    return runs_regex(datasets, bool(stability_seeds(config)))


def split_run(run: str) -> tuple[str, int | None]:
    """(dataset, seed) of a run name; the seed is None for a plain dataset run (it uses config ``seed``)."""
    match = SEED_RUN.match(run)
    return (match["dataset"], int(match["seed"])) if match else (run, None)


def run_dataset(config: dict, run: str) -> dict:
    """The ``datasets`` entry of a run."""
    dataset, _ = split_run(run)
    if dataset not in config["datasets"]:
        raise KeyError(f"run '{run}' names no dataset of the config's 'datasets'")
    return config["datasets"][dataset]


def run_seed(config: dict, run: str) -> int:
    """The seed every random choice of a run derives from: its stability seed, else config ``seed``. A stability
    run with seed s therefore reproduces a plain run whose config ``seed`` is s."""
    _, seed = split_run(run)
    return config["seed"] if seed is None else seed


def models_run(config: dict, run: str) -> str:
    """The run whose trained models (and high-baseline models) a run explains: the run itself, or for an external
    test set (``evaluate.models_from``) the same-seed run of the dataset named there."""
    source = (run_dataset(config, run).get("evaluate") or {}).get("models_from")
    if not source:
        return run
    _, seed = split_run(run)
    return source if seed is None else f"{source}/seed-{seed}"


def is_external(dataset_cfg: dict) -> bool:
    """Whether a dataset is an external test set: all its images are test images, nothing is trained on it."""
    return bool((dataset_cfg.get("evaluate") or {}).get("models_from"))


def data_seed(config: dict, run: str) -> int:
    """Seed of a run's data preparation: the run's seed; an external test set's synthetic images come from
    streams of their own (derived from the seed and the dataset name), so they never repeat the source's."""
    dataset, _ = split_run(run)
    seed = run_seed(config, run)
    return stable_seed(seed, "external", dataset) if is_external(config["datasets"][dataset]) else seed


def model_seed(config: dict, run: str, name: str) -> int:
    """Seed of one replicate: derived from the run's seed, the dataset and the model name."""
    dataset, _ = split_run(run)
    return stable_seed(run_seed(config, run), dataset, name)


def primary_models(config: dict) -> list[str]:
    """Replicates of the architecture whose maps decide the PASS/FAIL table (``stats.primary_architecture``)."""
    arch = config["stats"].get("primary_architecture") or config["models"][0]["arch"]
    names = [n for n in model_names(config) if parse_model_name(n)[0] == arch]
    if not names:
        raise KeyError(f"stats.primary_architecture '{arch}' is not one of the config's models")
    return names


def qc_model(config: dict) -> str:
    """The model whose predictions the quality-control branch checks (``qc.model``, default the first replicate of
    the primary architecture)."""
    return (config.get("qc") or {}).get("model") or primary_models(config)[0]


def qc_datasets(config: dict) -> list[str]:
    """Datasets with the quality-control branch (``qc.datasets``)."""
    return list((config.get("qc") or {}).get("datasets") or [])


def runs_trust_criteria(dataset_cfg: dict) -> bool:
    """Whether a dataset runs the trust criteria (``datasets.<name>.trust_criteria``, default true)."""
    return bool(dataset_cfg.get("trust_criteria", True))


def setup_logging(log_path: str | Path | None, storage: dict | None = None) -> None:
    """Send log records (and warnings) of a job to its Snakemake log file and stderr; ``storage``: the config's
    ``storage`` options for the job's readers (:func:`saliency_trust.io.configure_storage`)."""
    from saliency_trust.io import configure_storage

    configure_storage(storage or {})
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )
    logging.captureWarnings(True)

    def log_uncaught(exc_type, exc, tb):  # the failure reason ends up in the job's log, not only on stderr
        logging.getLogger("saliency_trust").critical("job failed: %s", exc, exc_info=(exc_type, exc, tb))

    sys.excepthook = log_uncaught
    log_job_environment()  # host, SLURM job, visible GPUs, HDF5 locking: where this job ran


def model_pairs(models: list[str]) -> list[tuple[str, str, str]]:
    """(criterion, model_a, model_b) for every pair of models: replicates of one architecture give
    repeatability, models of different architectures give reproducibility (docs/criteria.md)."""
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
    """Whether a dataset has a localization ground truth (masks or boxes), which utility needs (docs/criteria.md).

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


def stats_options(config: dict) -> dict:
    """The design and test options of the PASS/FAIL statistics (``StatsOptions``), with the settings the table
    notes must name: how the SSIM maps were made and how the randomized models were initialized."""
    stats = config["stats"]
    return {
        "pooling": stats["pooling"],
        "low_test": stats["low_test"],
        "trained_vs_random_adjust": stats["trained_vs_random_adjust"],
        "small_n": stats["small_n"],
        "similarity_maps": config["metrics"]["similarity_maps"],
        "ssim_data_range": config["metrics"]["ssim_data_range"],
        "randomization_init": config["randomization"]["init"],
        "randomization_draws": config["randomization"]["draws"],
    }
