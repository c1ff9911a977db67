rule synthetic_dataset:
    """Generate the synthetic radiograph benchmark in canonical form (SPEC 3.2)."""
    output:
        manifest="results/{dataset}/data/manifest.csv",
        images="results/{dataset}/data/images.h5",
        boxes="results/{dataset}/data/boxes.csv",
    params:
        dataset=lambda wildcards: config["datasets"][wildcards.dataset],
        seed=config["seed"],
    log:
        "results/{dataset}/logs/data/synthetic_dataset.log",
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/prepare_synthetic.py"
