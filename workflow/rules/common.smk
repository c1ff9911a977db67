# Names derived from the validated config; the logic lives in saliency_trust.config.
from saliency_trust.config import model_entry, model_names, model_seed, parse_model_name, primary_models
from saliency_trust.models.train import TrainSettings

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
