rule pass_fail:
    """Mixed-effects model + Tukey comparisons, and the PASS/FAIL table (SPEC 7)."""
    input:
        utility="results/{dataset}/metrics/utility.csv",
        model_metrics=expand("results/{{dataset}}/models/{model}/metrics.json", model=MODELS),
        similarity="results/{dataset}/metrics/similarity.csv",
        randomization_tests="results/{dataset}/summary/randomization_tests.csv",
    output:
        csv="results/{dataset}/summary/pass_fail.csv",
        md="results/{dataset}/summary/pass_fail.md",
        pairwise="results/{dataset}/summary/pairwise.csv",
    params:
        models=MODELS,
        primary_models=primary_models(config),
        methods=METHODS,
        metric=config["stats"]["utility_metric"],
        alpha=config["stats"]["alpha"],
        randomized_model=RANDOMIZED_MODELS[0] if "cascading" in RANDOMIZATION_MODES else None,
        high=HIGH_REPLICATES[0].split("-r")[0] if HIGH_REPLICATES else None,
    threads: 1
    log:
        "results/{dataset}/logs/stats/pass_fail.log",
    conda:
        "../../envs/stats.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/pass_fail.py"


rule randomization_tests:
    """One-sided test per randomization step: is the SSIM to the trained map below the degradation threshold?"""
    input:
        scores="results/{dataset}/metrics/randomization.csv",
        thresholds="results/{dataset}/metrics/randomization_threshold.csv",
    output:
        "results/{dataset}/summary/randomization_tests.csv",
    params:
        alpha=config["stats"]["alpha"],
    threads: 1
    log:
        "results/{dataset}/logs/stats/randomization_tests.log",
    conda:
        "../../envs/stats.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/randomization_tests.py"
