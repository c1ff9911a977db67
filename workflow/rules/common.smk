# Names derived from the validated config; the logic lives in saliency_trust.config.
from saliency_trust.config import model_entry, model_names, model_seed, parse_model_name, primary_models
from saliency_trust.models.train import TrainSettings
from saliency_trust.saliency.cache import package_versions
from saliency_trust.saliency.methods import get_method

DATASETS = list(config["datasets"])
MODELS = model_names(config)
METHODS = config["saliency"]["methods"]


wildcard_constraints:
    dataset="[A-Za-z0-9_-]+",
    model="[a-z0-9_]+-r[0-9]+",
    method="[A-Z]+",


def final_outputs():
    return expand(
        [
            "results/{dataset}/summary/pass_fail.csv",
            "results/{dataset}/summary/pass_fail.md",
            "results/{dataset}/figures/utility.png",
        ],
        dataset=DATASETS,
    )


def train_settings(wildcards):
    """Training settings of one model: config 'training' overridden by its 'models' entry."""
    settings = TrainSettings.from_config(config["training"], model_entry(config, wildcards.model))
    return settings.__dict__


def dataset_files(wildcards):
    return {
        "manifest": f"results/{wildcards.dataset}/data/manifest.csv",
        "images": f"results/{wildcards.dataset}/data/images.h5",
    }


def saliency_inputs(wildcards):
    """Dataset and model; XRAI also reads the dataset's shared segments file."""
    files = {**dataset_files(wildcards), "model": f"results/{wildcards.dataset}/models/{wildcards.model}/model.pt"}
    if get_method(wildcards.method).uses_segments:
        files["segments"] = f"results/{wildcards.dataset}/saliency/xrai_segments.h5"
    return files
