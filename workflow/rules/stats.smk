rule pass_fail:
    """Mixed-effects model + Tukey comparisons, and the PASS/FAIL table (docs/criteria.md)."""
    input:
        utility="results/{dataset}/metrics/utility.csv",
        model_metrics=expand("results/{{dataset}}/models/{model}/evaluation.json", model=MODELS),
        similarity="results/{dataset}/metrics/similarity.csv",
        randomization_tests="results/{dataset}/summary/randomization_tests.csv",
    output:
        **{
            name: report(
                f"results/{{dataset}}/summary/{name}.csv",
                caption=f"../report/{name}.rst",
                category=QUESTION_CATEGORIES[name],
            )
            for name in QUESTION_TABLES
        },
        csv=report(
            "results/{dataset}/summary/pass_fail.csv",
            caption="../report/pass_fail.rst",
            category="PASS/FAIL",
        ),
        md="results/{dataset}/summary/pass_fail.md",
        html=report(
            "results/{dataset}/summary/pass_fail.html",
            caption="../report/pass_fail_html.rst",
            category="PASS/FAIL",
        ),
        tex="results/{dataset}/summary/pass_fail.tex",
        pairwise=report(
            "results/{dataset}/summary/pairwise.csv",
            caption="../report/pairwise.rst",
            category="PASS/FAIL",
        ),
    log:
        "results/{dataset}/logs/stats/pass_fail.log",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        models=MODELS,
        primary_models=primary_models(config),
        methods=METHODS,
        metric=config["stats"]["utility_metric"],
        alpha=config["stats"]["alpha"],
        randomized_model=RANDOMIZED_MODELS[0] if "cascading" in RANDOMIZATION_MODES else None,
        high=HIGH_REPLICATES[0].split("-r")[0] if HIGH_REPLICATES else None,
        rules=config["stats"]["rules"],
        questions=QUESTION_TABLES,
        controls=CONTROLS,
        options=stats_options(config),
    script:
        "../scripts/pass_fail.py"


rule randomization_tests:
    """One-sided test per randomization step: is the SSIM to the trained map below the degradation threshold?"""
    input:
        scores="results/{dataset}/metrics/randomization.csv",
        thresholds="results/{dataset}/metrics/randomization_threshold.csv",
    output:
        report(
            "results/{dataset}/summary/randomization_tests.csv",
            caption="../report/randomization_tests.rst",
            category="Sensitivity to trained weights",
        ),
    log:
        "results/{dataset}/logs/stats/randomization_tests.log",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        alpha=config["stats"]["alpha"],
        test=config["randomization"]["test"],
    script:
        "../scripts/randomization_tests.py"


rule cross_dataset_summary:
    """PASS/FAIL verdicts of every dataset side by side (when the config lists several)."""
    input:
        expand("results/{dataset}/summary/pass_fail.csv", dataset=LOCALIZED_DATASETS),
    output:
        csv="results/summary/pass_fail.csv",
        md=report("results/summary/pass_fail.md", caption="../report/cross_dataset.rst", category="PASS/FAIL"),
    log:
        "results/logs/cross_dataset_summary.log",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        datasets=LOCALIZED_DATASETS,
    script:
        "../scripts/cross_dataset_summary.py"


if STABILITY_SEEDS:

    rule stability_table:
        """Stability mode: the PASS/FAIL table across the seeds' runs, unstable cells marked (stats/stability.py)."""
        input:
            lambda wildcards: [f"results/{run}/summary/pass_fail.csv" for run in RUNS[wildcards.dataset]],
        output:
            csv=report(
                "results/{dataset,[A-Za-z0-9_-]+}/summary/pass_fail.csv",
                caption="../report/stability.rst",
                category="PASS/FAIL",
            ),
            md="results/{dataset,[A-Za-z0-9_-]+}/summary/pass_fail.md",
            tex="results/{dataset,[A-Za-z0-9_-]+}/summary/pass_fail.tex",
            html=report(
                "results/{dataset,[A-Za-z0-9_-]+}/summary/pass_fail.html",
                caption="../report/stability.rst",
                category="PASS/FAIL",
            ),
            seeds="results/{dataset,[A-Za-z0-9_-]+}/summary/pass_fail_seeds.csv",
        log:
            "results/{dataset}/logs/stats/stability_table.log",
        conda:
            "../../envs/stats.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            seeds=STABILITY_SEEDS,
            small_n=config["stats"]["small_n"],
        script:
            "../scripts/stability_table.py"
