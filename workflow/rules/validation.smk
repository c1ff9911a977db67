# Known-answer validation (Arun et al.; Adebayo et al. 2018): the shortcut check of the datasets with a known
# confounder (a planted synthetic marker, or datasets.<name>.confounder for user data).


rule shortcut_check:
    """Does a classifier rely on the confounder? Counterfactual test AUC, map mass on the confounder vs the lesion,
    utility by marker presence; one flag line (metrics/shortcut.py)."""
    input:
        unpack(shortcut_inputs),
    output:
        csv=report(
            "results/{dataset}/summary/shortcut.csv",
            caption="../report/shortcut.rst",
            category="Shortcut check",
        ),
        md="results/{dataset}/summary/shortcut.md",
        mass="results/{dataset}/metrics/shortcut_mass.csv",
        regions="results/{dataset}/metrics/confounder_regions.csv",
    log:
        "results/{dataset}/logs/validation/shortcut_check.log",
    wildcard_constraints:
        dataset=CONFOUNDED_REGEX,
    conda:
        "../../envs/saliency.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        dataset_cfg=lambda wildcards: run_dataset(config, wildcards.dataset),
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
        models=MODELS,
        map_models=[m for m in MODELS for _ in METHODS],
        map_methods=[me for _ in MODELS for me in METHODS],
        controls=CONTROLS,
        seed=lambda wildcards: run_seed(config, wildcards.dataset),
        shortcut=config["metrics"]["shortcut"],
        alpha=config["stats"]["alpha"],
        utility_metric=config["stats"]["utility_metric"],
        device=config["saliency"]["device"],
    script:
        "../scripts/shortcut_check.py"
