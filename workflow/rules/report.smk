rule plot_utility:
    """Utility box plots per method with both baselines (Arun et al., Fig. 2)."""
    input:
        "results/{dataset}/metrics/utility.csv",
    output:
        report(
            "results/{dataset}/figures/utility.png",
            caption="../report/utility.rst",
            category="Localization utility",
        ),
    params:
        methods=METHODS,
        metric=config["stats"]["utility_metric"],
    threads: 1
    log:
        "results/{dataset}/logs/plots/utility.log",
    conda:
        "../../envs/plots.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/plot_utility.py"


rule plot_randomization:
    """SSIM to the trained map per cascading randomization step, thresholds dashed (Arun et al., Fig. 3)."""
    input:
        scores="results/{dataset}/metrics/randomization.csv",
        thresholds="results/{dataset}/metrics/randomization_threshold.csv",
    output:
        report(
            "results/{dataset}/figures/randomization.png",
            caption="../report/randomization.rst",
            category="Sensitivity to trained weights",
        ),
    params:
        methods=METHODS,
    threads: 1
    log:
        "results/{dataset}/logs/plots/randomization.log",
    conda:
        "../../envs/plots.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/plot_randomization.py"


rule plot_similarity:
    """Repeatability and reproducibility box plots with both baselines (Arun et al., Fig. 4)."""
    input:
        "results/{dataset}/metrics/similarity.csv",
    output:
        report(
            "results/{dataset}/figures/similarity.png",
            caption="../report/similarity.rst",
            category="Repeatability and reproducibility",
        ),
    params:
        methods=METHODS,
    threads: 1
    log:
        "results/{dataset}/logs/plots/similarity.log",
    conda:
        "../../envs/plots.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/plot_similarity.py"
