rule xrai_segments:
    """Felzenszwalb segments of every explained image, computed once and shared by all models (docs/saliency.md)."""
    input:
        unpack(stable_dataset_files),
    output:
        "results/{dataset}/saliency/xrai_segments.h5",
    log:
        "results/{dataset}/logs/saliency/xrai_segments.log",
    benchmark:
        job_benchmark("xrai_segments", "segments")
    conda:
        "../../envs/saliency.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
        data=data_part("explained"),
    script:
        "../scripts/xrai_segments.py"


rule saliency_maps:
    """Saliency maps of one model and method for every positive test image, cached in HDF5 (docs/saliency.md)."""
    input:
        unpack(saliency_inputs),
    output:
        maps="results/{dataset}/saliency/{model}/{method}.h5",
    log:
        "results/{dataset}/logs/saliency/{model}/{method}.log",
    benchmark:
        job_benchmark("saliency_maps", "{model}-{method}")
    conda:
        "../../envs/saliency.yaml"
    threads: config["saliency"]["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpu_request(config["saliency"]["device"]),
    params:
        method_params=lambda wildcards: config["saliency"]["params"].get(wildcards.method, {}),
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
        output=config["saliency"]["output"],
        batch_size=config["saliency"]["batch_size"],
        max_batch_inputs=config["saliency"]["max_batch_inputs"],
        amp=config["saliency"]["amp"],
        device=config["saliency"]["device"],
        seed=lambda wildcards: run_seed(config, wildcards.dataset),
        control=lambda wildcards: wildcards.method in CONTROLS,
        versions=package_versions(),
        data=data_part("explained"),
        store=lambda wildcards: map_store(wildcards.dataset),
    script:
        "../scripts/saliency_maps.py"


rule randomized_saliency:
    """Maps of one method at every randomization step of one model (docs/criteria.md), one cache file."""
    input:
        unpack(saliency_inputs),
    output:
        maps="results/{dataset}/saliency/{model}/randomized/{mode}/{method}.h5",
    log:
        "results/{dataset}/logs/saliency/{model}/randomized_{mode}_{method}.log",
    benchmark:
        job_benchmark("randomized_saliency", "{model}-{mode}-{method}")
    conda:
        "../../envs/saliency.yaml"
    threads: config["saliency"]["threads"]
    resources:
        mem_mb=4000,
        runtime=240 * config["randomization"]["draws"],  # minutes; each draw repeats every step
        gpu=gpu_request(config["saliency"]["device"]),
    params:
        method_params=lambda wildcards: config["saliency"]["params"].get(wildcards.method, {}),
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
        output=config["saliency"]["output"],
        batch_size=config["saliency"]["batch_size"],
        max_batch_inputs=config["saliency"]["max_batch_inputs"],
        amp=config["saliency"]["amp"],
        device=config["saliency"]["device"],
        seed=lambda wildcards: run_seed(config, wildcards.dataset),
        init=config["randomization"]["init"],
        n_images=config["randomization"]["n_images"],
        draws=config["randomization"]["draws"],
        control=lambda wildcards: wildcards.method in CONTROLS,
        versions=package_versions(),
        data=data_part("explained"),
        store=lambda wildcards: map_store(wildcards.dataset),
    script:
        "../scripts/randomized_saliency.py"


rule constant_maps:
    """Every constant (all-zero once post-processed) map of the dataset's caches: scored as it is, and listed."""
    input:
        constant_maps_inputs,
    output:
        "results/{dataset}/summary/constant_maps.csv",
    log:
        "results/{dataset}/logs/saliency/constant_maps.log",
    conda:
        "../../envs/saliency.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/constant_maps.py"
