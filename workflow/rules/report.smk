rule plot_utility:
    """Utility box plots per method with the AVG baseline (Arun et al., Fig. 2)."""
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
    log:
        "results/{dataset}/logs/plots/utility.log",
    conda:
        "../../envs/plots.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/plot_utility.py"
