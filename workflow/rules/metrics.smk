rule utility_scores:
    """Localization utility of one model x method per positive test image (SPEC 6.1)."""
    input:
        unpack(dataset_files),
        maps="results/{dataset}/saliency/{model}/{method}.h5",
    output:
        "results/{dataset}/metrics/utility/{model}/{method}.csv",
    params:
        target_label=lambda wildcards: config["datasets"][wildcards.dataset]["target_label"],
        metrics=config["metrics"]["utility"],
    log:
        "results/{dataset}/logs/metrics/utility/{model}/{method}.log",
    conda:
        "../../envs/metrics.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/utility_scores.py"


rule utility_avg_baseline:
    """Utility of the AVG low baseline: the mean train+val mask (SPEC 6.1)."""
    input:
        unpack(dataset_files),
    output:
        "results/{dataset}/metrics/utility/baseline/AVG.csv",
    params:
        target_label=lambda wildcards: config["datasets"][wildcards.dataset]["target_label"],
        metrics=config["metrics"]["utility"],
    log:
        "results/{dataset}/logs/metrics/utility/baseline_AVG.log",
    conda:
        "../../envs/metrics.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/utility_avg_baseline.py"


rule utility_table:
    """Gather per-model/method utility into one tidy table."""
    input:
        maps=expand("results/{{dataset}}/metrics/utility/{model}/{method}.csv", model=MODELS, method=METHODS),
        baseline="results/{dataset}/metrics/utility/baseline/AVG.csv",
    output:
        "results/{dataset}/metrics/utility.csv",
    log:
        "results/{dataset}/logs/metrics/utility_table.log",
    conda:
        "../../envs/metrics.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/concat_tables.py"
