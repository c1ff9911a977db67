rule saliency_maps:
    """Saliency maps of one model and method for every positive test image, cached in HDF5 (SPEC 5)."""
    input:
        unpack(dataset_files),
        model="results/{dataset}/models/{model}/model.pt",
    output:
        maps="results/{dataset}/saliency/{model}/{method}.h5",
    params:
        method_params=lambda wildcards: config["saliency"]["params"].get(wildcards.method, {}),
        target_label=lambda wildcards: config["datasets"][wildcards.dataset]["target_label"],
        output=config["saliency"]["output"],
        batch_size=config["saliency"]["batch_size"],
        device=config["saliency"]["device"],
    threads: config["saliency"]["threads"]
    log:
        "results/{dataset}/logs/saliency/{model}/{method}.log",
    conda:
        "../../envs/saliency.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/saliency_maps.py"
