# The two data rules write the same canonical files; each is limited to the datasets of its sources. They are
# checkpoints: the expensive stages read the files as ancient and rerun only when the fingerprint of the part they
# read changed (stable_dataset_files, data_part; docs/new-data.md), known once the preparation has run.
from saliency_trust.data.adapters import input_tables
from saliency_trust.data.prepare import dataset_regex


checkpoint synthetic_dataset:
    """Generate the synthetic radiograph benchmark in canonical form (docs/own-data.md)."""
    output:
        manifest="results/{dataset}/data/manifest.csv",
        images="results/{dataset}/data/images.h5",
        boxes="results/{dataset}/data/boxes.csv",
        fingerprints="results/{dataset}/data/fingerprints.json",
    log:
        "results/{dataset}/logs/data/synthetic_dataset.log",
    benchmark:
        job_benchmark("synthetic_dataset", "data")
    wildcard_constraints:
        dataset=dataset_regex(config["datasets"], synthetic=True, seeded=bool(STABILITY_SEEDS)),
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        dataset=lambda wildcards: run_dataset(config, wildcards.dataset),
        seed=lambda wildcards: data_seed(config, wildcards.dataset),
        encoding=config["storage"]["image_dtype"],
    script:
        "../scripts/prepare_synthetic.py"


checkpoint prepare_dataset:
    """Convert a dataset on disk (SIIM-ACR, RSNA, MURA, CheXpert, generic) to canonical form (docs/own-data.md).

    Inputs are the dataset's label tables (an edited table reruns the conversion); a missing
    root or table stops the DAG with an error naming its config key.
    """
    input:
        tables=lambda wildcards: input_tables(wildcards.dataset, run_dataset(config, wildcards.dataset)),
    output:
        manifest="results/{dataset}/data/manifest.csv",
        images="results/{dataset}/data/images.h5",
        boxes="results/{dataset}/data/boxes.csv",
        skipped="results/{dataset}/data/skipped.csv",
        fingerprints="results/{dataset}/data/fingerprints.json",
    log:
        "results/{dataset}/logs/data/prepare_dataset.log",
    benchmark:
        job_benchmark("prepare_dataset", "data")
    wildcard_constraints:
        dataset=dataset_regex(config["datasets"], synthetic=False, seeded=bool(STABILITY_SEEDS)),
    conda:
        "../../envs/data.yaml"
    threads: 4
    resources:
        mem_mb=4000,
        runtime=480,
    params:
        dataset=lambda wildcards: run_dataset(config, wildcards.dataset),
        seed=lambda wildcards: data_seed(config, wildcards.dataset),
        encoding=config["storage"]["image_dtype"],
    script:
        "../scripts/prepare_dataset.py"
