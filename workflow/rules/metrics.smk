rule utility_scores:
    """Localization utility of one model's maps, every method, per positive test image (docs/criteria.md)."""
    input:
        unpack(dataset_files),
        maps=expand("results/{{dataset}}/saliency/{{model}}/{method}.h5", method=METHODS),
    output:
        "results/{dataset}/metrics/utility/{model}.csv",
    log:
        "results/{dataset}/logs/metrics/utility/{model}.log",
    benchmark:
        job_benchmark("utility_scores", "{model}")
    conda:
        "../../envs/metrics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
        metrics=config["metrics"]["utility"],
        methods=METHODS,
        randomized=False,
    script:
        "../scripts/utility_scores.py"


use rule utility_scores as utility_scores_randomized with:
    input:
        unpack(dataset_files),
        maps=expand("results/{{dataset}}/saliency/{{model}}/randomized/cascading/{method}.h5", method=METHODS),
    output:
        "results/{dataset}/metrics/utility/randomized/{model}.csv",
    log:
        "results/{dataset}/logs/metrics/utility/randomized_{model}.log",
    benchmark:
        job_benchmark("utility_scores_randomized", "{model}")
    params:
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
        metrics=config["metrics"]["utility"],
        methods=METHODS,
        randomized=True,


use rule utility_scores as utility_baselines with:
    input:
        unpack(dataset_files),
        maps=["results/{dataset}/saliency/baselines/AVG.h5"]
        + [f"results/{{dataset}}/saliency/baselines/{b}.h5" for b in HIGH_REPLICATES[:1]],
    output:
        "results/{dataset}/metrics/utility/baselines.csv",
    log:
        "results/{dataset}/logs/metrics/utility/baselines.log",
    benchmark:
        job_benchmark("utility_baselines", "baselines")
    params:
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
        metrics=config["metrics"]["utility"],
        methods=["AVG"] + [b.split("-r")[0] for b in HIGH_REPLICATES[:1]],
        randomized=False,


rule utility_table:
    """Gather utility of trained and randomized maps and of the baselines into one tidy table."""
    input:
        utility_table_inputs,
    output:
        "results/{dataset}/metrics/utility.csv",
    log:
        "results/{dataset}/logs/metrics/utility_table.log",
    conda:
        "../../envs/metrics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/concat_tables.py"


rule randomization_scores:
    """SSIM of every randomization step's map to the trained map, per image and method (docs/criteria.md)."""
    input:
        trained=expand("results/{{dataset}}/saliency/{{model}}/{method}.h5", method=METHODS),
        randomized=expand("results/{{dataset}}/saliency/{{model}}/randomized/{{mode}}/{method}.h5", method=METHODS),
    output:
        "results/{dataset}/metrics/randomization/{model}/{mode}.csv",
    log:
        "results/{dataset}/logs/metrics/randomization/{model}_{mode}.log",
    conda:
        "../../envs/metrics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        methods=METHODS,
        data_range=config["metrics"]["ssim_data_range"],
        similarity_maps=config["metrics"]["similarity_maps"],
    script:
        "../scripts/randomization_scores.py"


rule randomization_table:
    """Gather the randomization SSIM of every model and mode into one tidy table."""
    input:
        expand(
            "results/{{dataset}}/metrics/randomization/{model}/{mode}.csv",
            model=RANDOMIZED_MODELS,
            mode=RANDOMIZATION_MODES,
        ),
    output:
        "results/{dataset}/metrics/randomization.csv",
    log:
        "results/{dataset}/logs/metrics/randomization_table.log",
    conda:
        "../../envs/metrics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/concat_tables.py"


rule randomization_threshold:
    """Degradation threshold per model x method: mean SSIM of seeded random pairs of different images' maps."""
    input:
        expand("results/{{dataset}}/saliency/{model}/{method}.h5", model=RANDOMIZED_MODELS, method=METHODS),
    output:
        "results/{dataset}/metrics/randomization_threshold.csv",
    log:
        "results/{dataset}/logs/metrics/randomization_threshold.log",
    conda:
        "../../envs/metrics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        models=[m for m in RANDOMIZED_MODELS for _ in METHODS],
        methods=[me for _ in RANDOMIZED_MODELS for me in METHODS],
        n_pairs=config["randomization"]["threshold_pairs"],
        seed=lambda wildcards: run_seed(config, wildcards.dataset),
        data_range=config["metrics"]["ssim_data_range"],
        similarity_maps=config["metrics"]["similarity_maps"],
    script:
        "../scripts/randomization_threshold.py"


rule similarity_scores:
    """Repeatability and reproducibility: SSIM and Otsu IoU between maps of model pairs (docs/criteria.md)."""
    input:
        similarity_inputs,
    output:
        "results/{dataset}/metrics/similarity.csv",
    log:
        "results/{dataset}/logs/metrics/similarity.log",
    conda:
        "../../envs/metrics.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        models=[e[0] for e in similarity_entries()],
        methods=[e[1] for e in similarity_entries()],
        pairs=similarity_pairs(),
        data_range=config["metrics"]["ssim_data_range"],
        similarity_maps=config["metrics"]["similarity_maps"],
    script:
        "../scripts/similarity_scores.py"


rule rater_reference:
    """Human reference: each rater's boxes against the consensus of the other raters (docs/criteria.md)."""
    input:
        unpack(dataset_files),
        boxes="results/{dataset}/data/boxes.csv",
    output:
        table="results/{dataset}/metrics/utility/human/RATER.csv",
        per_rater="results/{dataset}/metrics/raters/per_rater.csv",
    log:
        "results/{dataset}/logs/metrics/rater_reference.log",
    conda:
        "../../envs/metrics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
        metrics=config["metrics"]["utility"],
    script:
        "../scripts/rater_reference.py"
