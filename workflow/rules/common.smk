# Names derived from the validated config; the logic lives in saliency_trust.config.
# Modules that import torch are imported inside the functions that need them: every cluster job parses
# this workflow again (twice per SLURM job), and a parse without torch takes seconds less.

from pathlib import Path

from saliency_trust.config import (
    data_seed,
    dataset_runs,
    is_external,
    make_key_order_free,
    order_free,
    has_localization,
    model_entry,
    model_names,
    model_pairs,
    model_seed,
    models_run,
    parse_model_name,
    primary_models,
    qc_datasets,
    qc_model,
    question_tables,
    randomized_models,
    run_dataset,
    run_regex,
    run_seed,
    runs_trust_criteria,
    stability_seeds,
    stats_options,
)
from saliency_trust.execution import (
    configure_hdf5_locking,
    default_gpu_cap,
    export_package_path,
    gpu_request,
    visible_gpu_count,
)
from saliency_trust.metrics.shortcut import confounder_of
from saliency_trust.storage.maps import package_versions

make_key_order_free(config)  # reordering keys in config.yaml changes no params and reruns nothing
configure_hdf5_locking(config["hdf5_file_locking"])  # HDF5_USE_FILE_LOCKING, inherited by every job
export_package_path(workflow.basedir)  # jobs (conda envs, SLURM) import this checkout's saliency_trust
# one GPU job at a time where this machine has a GPU, unless --resources gpu=N says otherwise (docs/clusters.md)
GPU_CAP = default_gpu_cap(workflow.global_resources, visible_gpu_count())
if GPU_CAP is not None:
    workflow.register_resource("gpu", GPU_CAP)
DATASETS = list(config["datasets"])
# Stability mode (config "seeds"): every dataset runs once per seed as results/{dataset}/seed-{s}/, a "run";
# otherwise a dataset's run is the dataset itself. The {dataset} wildcard of every per-run rule names a run.
STABILITY_SEEDS = stability_seeds(config)
RUNS = {d: dataset_runs(config, d) for d in DATASETS}
MODELS = model_names(config)
# control maps (Adebayo et al. 2018; model-independent, must FAIL randomization) run wherever the methods run
CONTROLS = list(config["saliency"]["controls"])
METHODS = config["saliency"]["methods"] + [c for c in CONTROLS if c not in config["saliency"]["methods"]]
RANDOMIZED_MODELS = randomized_models(config)
RANDOMIZATION_MODES = config["randomization"]["modes"]
HIGH_BASELINE = config["baselines"]["high"]  # "unet", "detector" or "none"
# maps of the high baseline's replicates: UNET-r1, UNET-r2 (or DETECTOR-r1, ...)
HIGH_REPLICATES = (
    [f"{HIGH_BASELINE.upper()}-r{k}" for k in range(1, config["baselines"]["replicates"] + 1)]
    if HIGH_BASELINE != "none"
    else []
)

HIGH_MODEL_DIRS = [r.lower() for r in HIGH_REPLICATES]  # results/{dataset}/baselines/{unet-r1,...}
# datasets that run the trust criteria (datasets.<name>.trust_criteria); the others are only quality-controlled
TRUST_DATASETS = [d for d, cfg in config["datasets"].items() if runs_trust_criteria(cfg)]
LOCALIZED_DATASETS = [d for d in TRUST_DATASETS if has_localization(config["datasets"][d])]
# quality control of multi-label predictions (INFORMER; docs/quality-control.md): datasets, model, methods
QC_DATASETS = qc_datasets(config)
QC_MODEL = qc_model(config) if QC_DATASETS else None
QC_METHODS = config["qc"]["methods"]

# a planted shortcut (synthetic.shortcut.enabled) or a configured confounder: the shortcut check runs there
CONFOUNDED_DATASETS = [d for d in TRUST_DATASETS if confounder_of(d, config["datasets"][d]) is not None]
CONFOUNDED_REGEX = run_regex(config, CONFOUNDED_DATASETS)  # their runs, and no other
QUESTION_TABLES = question_tables(config)  # one table per question of Arun et al. (summary/{name}.csv)
QUESTION_CATEGORIES = {
    "utility_vs_avg": "Localization utility",
    "utility_vs_high": "Localization utility",
    "utility_trained_vs_random": "Sensitivity to trained weights",
    "similarity_vs_baselines": "Repeatability and reproducibility",
}
N_EXAMPLES = config["plots"]["n_examples"]


# Rules that only gather tables, plot them or test summary tables run where Snakemake runs instead of
# queueing as cluster jobs (SLURM profile); on a workstation this changes nothing.
localrules:
    utility_table,
    randomization_table,
    randomization_tests,
    pass_fail,
    plot_utility,
    plot_randomization,
    plot_similarity,
    plot_randomization_examples,
    plot_examples,
    plot_training_curves,
    cross_dataset_summary,
    constant_maps,
    stability_table,
    plot_quality_control,


wildcard_constraints:
    dataset=run_regex(config),
    model="[a-z0-9_]+-r[0-9]+",
    method="[A-Z]+",
    mode="cascading|independent",
    baseline="AVG|UNET-r[0-9]+|DETECTOR-r[0-9]+",
    replicate="[0-9]+",


def final_outputs():
    """Every run's tables and figures; utility, PASS/FAIL and their figures only where a localization ground
    truth exists; the shortcut check where a dataset has a known confounder; in the stability mode each
    dataset's PASS/FAIL table across seeds; the cross-dataset summary when several datasets have one."""
    outputs = [f"results/{run}/qc/{f}" for d in QC_DATASETS for run in RUNS[d] for f in QC_FILES]
    for dataset in TRUST_DATASETS:
        cfg = config["datasets"][dataset]
        files = [
            "metrics/randomization.csv",
            "metrics/randomization_threshold.csv",
            "metrics/similarity.csv",
            "summary/randomization_tests.csv",
            "summary/constant_maps.csv",
            *[f"figures/examples/example{k}.png" for k in range(1, N_EXAMPLES + 1)],
        ]
        if not is_external(cfg):  # an external test set trains nothing: its models' curves are its source's
            files.append("figures/training_curves.png")
        if model_pairs(MODELS) or len(HIGH_REPLICATES) >= 2:
            files.append("figures/similarity.png")
        if "cascading" in RANDOMIZATION_MODES:
            files += ["figures/randomization.png", "figures/randomization_examples.png"]
        if has_localization(cfg):
            files += [
                "summary/pass_fail.csv",
                "summary/pass_fail.md",
                "summary/pass_fail.tex",
                "figures/utility.png",
                "metrics/utility.csv",
            ]
            files += [f"summary/{name}.csv" for name in QUESTION_TABLES]
        if dataset in CONFOUNDED_DATASETS:
            files += ["summary/shortcut.csv", "summary/shortcut.md"]
        outputs += [f"results/{run}/{f}" for run in RUNS[dataset] for f in files]
        if STABILITY_SEEDS and has_localization(cfg):
            outputs += [f"results/{dataset}/summary/{f}" for f in STABILITY_FILES]
    if len(LOCALIZED_DATASETS) > 1:
        outputs += ["results/summary/pass_fail.csv", "results/summary/pass_fail.md"]
    return outputs


# the quality-control branch's outputs (results/{dataset}/qc/)
QC_FILES = [
    "thresholds.csv",
    "scores.csv",
    "f1.csv",
    "bootstrap.csv",
    "comparisons.csv",
    "table1.csv",
    "table1.md",
    "table1.tex",
    "table1.html",
    "bootstrap.png",
    "bootstrap.pdf",
]
# the PASS/FAIL table across seeds of the stability mode (results/{dataset}/summary/)
STABILITY_FILES = ["pass_fail.csv", "pass_fail.md", "pass_fail.tex", "pass_fail.html", "pass_fail_seeds.csv"]


def job_benchmark(rule_name, job="{model}"):
    """The Snakemake benchmark file of one job (wall time, peak memory): what the SLURM profile's memory and
    runtime are fitted from (python -m saliency_trust.resources; docs/clusters.md)."""
    return f"results/{{dataset}}/benchmarks/{rule_name}/{job}.tsv"


def train_settings(wildcards):
    """Training settings of one model: config 'training' overridden by its 'models' entry."""
    from saliency_trust.models.train import TrainSettings

    settings = TrainSettings.from_config(config["training"], model_entry(config, wildcards.model))
    return settings.__dict__


def dataset_files(wildcards):
    return {
        "manifest": f"results/{wildcards.dataset}/data/manifest.csv",
        "images": f"results/{wildcards.dataset}/data/images.h5",
    }


def data_checkpoint(run):
    """The checkpoint that prepares a run's canonical data: synthetic_dataset or prepare_dataset."""
    synthetic = run_dataset(config, run)["source"] == "synthetic"
    return checkpoints.synthetic_dataset if synthetic else checkpoints.prepare_dataset


def stable_dataset_files(wildcards, boxes=False):
    """The canonical files of the expensive stages, read as ancient: the data preparation rewriting them reruns
    nothing by itself; the stage's `data` parameter (data_part) reruns it when the part it reads changed
    (docs/new-data.md). Waits for the preparation (a checkpoint), so the parameter is the new data's."""
    data_checkpoint(wildcards.dataset).get(dataset=wildcards.dataset)
    files = dataset_files(wildcards)
    if boxes:
        files["boxes"] = f"results/{wildcards.dataset}/data/boxes.csv"
    return {key: ancient(path) for key, path in files.items()}


def stable_dataset_files_with_boxes(wildcards):
    return stable_dataset_files(wildcards, boxes=True)


def data_part(*parts):
    """Parameter: the fingerprints of the parts of the run's data a stage reads (data/fingerprints.json;
    "explained" = the positive test images of the run's target label), e.g. "trainval: 1215 images, sha256 ..."."""
    from saliency_trust.data.fingerprint import read_fingerprint

    def param(wildcards):
        path = f"results/{wildcards.dataset}/data/fingerprints.json"
        label = run_dataset(config, wildcards.dataset).get("target_label")
        return "; ".join(f"{part}: {read_fingerprint(path, part, label)}" for part in parts)

    return param


def map_store(run):
    """Folder of the run's store of per-image saliency maps: not an output, so it survives Snakemake's removal of
    a rerun job's outputs (storage.maps.MapStore; docs/new-data.md)."""
    return f"results/{run}/store/maps"


def model_file(wildcards):
    """A run's trained model: its own, or for an external test set the models_from dataset's (same replicate)."""
    return f"results/{models_run(config, wildcards.dataset)}/models/{wildcards.model}/model.pt"


def qc_model_file(wildcards):
    """The model whose predictions the quality-control branch checks (qc.model), trained on the run itself."""
    return f"results/{wildcards.dataset}/models/{QC_MODEL}/model.pt"


def baseline_model_file(kind):
    """The high baseline's model of a replicate (kind: unet or detector), from the models_from dataset for an
    external test set."""

    def path(wildcards):
        return f"results/{models_run(config, wildcards.dataset)}/baselines/{kind}-r{wildcards.replicate}/model.pt"

    return path


def evaluate_inputs(wildcards):
    """Dataset, the model and the training job's metrics (validation AUC)."""
    source = models_run(config, wildcards.dataset)
    return {
        **dataset_files(wildcards),
        "model": model_file(wildcards),
        "training_metrics": f"results/{source}/models/{wildcards.model}/metrics.json",
    }


def avg_map_inputs(wildcards):
    """Dataset; for an external test set also the models_from dataset, whose training masks are averaged."""
    files = dataset_files(wildcards)
    source = models_run(config, wildcards.dataset)
    if source != wildcards.dataset:
        files["fit_manifest"] = f"results/{source}/data/manifest.csv"
        files["fit_images"] = f"results/{source}/data/images.h5"
    return files


def train_inputs(wildcards):
    """Dataset, plus the local ImageNet weights file when the model names one (a missing file fails the dry run,
    checked before waiting for the data preparation)."""
    weights = train_settings(wildcards).get("pretrained_weights")
    if weights and not Path(weights).exists():
        raise FileNotFoundError(
            f"pretrained_weights: the ImageNet weights file {weights} of model {wildcards.model} does not exist "
            "(nothing is downloaded: place the file there or set pretrained_weights: null; docs/own-data.md)"
        )
    files = stable_dataset_files(wildcards)
    if weights:
        files["pretrained_weights"] = weights
    return files


def saliency_inputs(wildcards):
    """Dataset and model; XRAI also reads the dataset's shared segments file."""
    files = {
        **stable_dataset_files(wildcards),
        "model": model_file(wildcards),
    }
    from saliency_trust.saliency.methods import get_method

    if get_method(wildcards.method).uses_segments:
        files["segments"] = f"results/{wildcards.dataset}/saliency/xrai_segments.h5"
    return files


def utility_table_inputs(wildcards):
    """Utility of trained maps, of the fully randomized models' maps, and of the baselines."""
    d = wildcards.dataset
    files = [f"results/{d}/metrics/utility/{m}.csv" for m in MODELS]
    if "cascading" in RANDOMIZATION_MODES:
        files += [f"results/{d}/metrics/utility/randomized/{m}.csv" for m in RANDOMIZED_MODELS]
    files.append(f"results/{d}/metrics/utility/baselines.csv")
    if config["metrics"]["human_reference"]:
        files.append(f"results/{d}/metrics/utility/human/RATER.csv")
    return files


def shortcut_inputs(wildcards):
    """Dataset, every trained model, every trained map file and, where there is a ground truth, the utility table."""
    d = wildcards.dataset
    files = {
        **dataset_files(wildcards),
        "models": [f"results/{models_run(config, d)}/models/{m}/model.pt" for m in MODELS],
        "maps": [f"results/{d}/saliency/{m}/{me}.h5" for m in MODELS for me in METHODS],
    }
    if has_localization(run_dataset(config, d)):
        files["utility"] = f"results/{d}/metrics/utility.csv"
    return files


def similarity_entries():
    """(model, method) of every map file the similarity table reads: all models x methods, then the U-Nets."""
    entries = [(m, me) for m in MODELS for me in METHODS]
    return entries + [(b.lower(), b.split("-r")[0]) for b in HIGH_REPLICATES]


def similarity_pairs():
    """(criterion, model_a, model_b): model pairs, plus the U-Net pair as the high baseline of both criteria."""
    pairs = [list(p) for p in model_pairs(MODELS)]
    if len(HIGH_REPLICATES) >= 2:
        a, b = (r.lower() for r in HIGH_REPLICATES[:2])
        pairs += [[c, a, b] for c in ("repeatability", "reproducibility")]
    return pairs


def similarity_inputs(wildcards):
    d = wildcards.dataset
    files = [f"results/{d}/saliency/{m}/{me}.h5" for m, me in similarity_entries()[: len(MODELS) * len(METHODS)]]
    return files + [f"results/{d}/saliency/baselines/{b}.h5" for b in HIGH_REPLICATES]


def constant_maps_inputs(wildcards):
    """Every saliency cache of a dataset whose constant maps are listed: trained models and high baseline (the
    similarity inputs), and randomized models."""
    d = wildcards.dataset
    randomized = [
        f"results/{d}/saliency/{m}/randomized/{mode}/{me}.h5"
        for m in RANDOMIZED_MODELS
        for mode in RANDOMIZATION_MODES
        for me in METHODS
    ]
    return similarity_inputs(wildcards) + randomized


def example_entries(wildcards):
    """(row, method) of the example panels' maps: every model x method, then the AVG and first high baseline
    maps where the dataset has a localization ground truth."""
    entries = [[m, me] for m in MODELS for me in METHODS]
    if has_localization(run_dataset(config, wildcards.dataset)):
        entries += [["baselines", "AVG"]] + [["baselines", b] for b in HIGH_REPLICATES[:1]]
    return entries


def example_inputs(wildcards):
    """Dataset, the utility table (scores in the titles) and the map files of :func:`example_entries`."""
    d = wildcards.dataset
    files = dataset_files(wildcards)
    if has_localization(run_dataset(config, d)):
        files["utility"] = f"results/{d}/metrics/utility.csv"
    files["maps"] = [f"results/{d}/saliency/{row}/{method}.h5" for row, method in example_entries(wildcards)]
    return files


def figure(dataset_path, name, caption, category):
    """Output pair (png in the report, pdf) of one figure."""
    return {
        "png": report(f"{dataset_path}/figures/{name}.png", caption=f"../report/{caption}.rst", category=category),
        "pdf": f"{dataset_path}/figures/{name}.pdf",
    }
