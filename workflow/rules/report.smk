# Figures (docs/outputs.md): one rule per figure, PNG (in the HTML report) and PDF. Each takes the `plots` config as a
# parameter, so changing only a plotting option reruns only these rules.


rule plot_utility:
    """Utility box plots per method with both baselines (Arun et al., Fig. 2)."""
    input:
        "results/{dataset}/metrics/utility.csv",
    output:
        **figure("results/{dataset}", "utility", "utility", "Localization utility"),
    log:
        "results/{dataset}/logs/plots/utility.log",
    conda:
        "../../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        methods=METHODS,
        metric=config["stats"]["utility_metric"],
        style=config["plots"],
    script:
        "../scripts/plot_utility.py"


rule plot_randomization:
    """SSIM to the trained map per cascading randomization step, thresholds dashed (Arun et al., Fig. 3)."""
    input:
        scores="results/{dataset}/metrics/randomization.csv",
        thresholds="results/{dataset}/metrics/randomization_threshold.csv",
    output:
        **figure("results/{dataset}", "randomization", "randomization", "Sensitivity to trained weights"),
    log:
        "results/{dataset}/logs/plots/randomization.log",
    conda:
        "../../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        methods=METHODS,
        style=config["plots"],
    script:
        "../scripts/plot_randomization.py"


rule plot_randomization_examples:
    """One image's maps degrading as the primary randomized model's blocks are re-initialized (Fig. 3 panel)."""
    input:
        unpack(dataset_files),
        trained=expand("results/{{dataset}}/saliency/{model}/{method}.h5", model=RANDOMIZED_MODELS[:1], method=METHODS),
        randomized=expand(
            "results/{{dataset}}/saliency/{model}/randomized/cascading/{method}.h5",
            model=RANDOMIZED_MODELS[:1],
            method=METHODS,
        ),
        scores="results/{dataset}/metrics/randomization.csv",
    output:
        **figure(
            "results/{dataset}", "randomization_examples", "randomization_examples", "Sensitivity to trained weights"
        ),
    log:
        "results/{dataset}/logs/plots/randomization_examples.log",
    conda:
        "../../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        methods=METHODS,
        model=RANDOMIZED_MODELS[0] if RANDOMIZED_MODELS else None,
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
        has_masks=lambda wildcards: has_localization(run_dataset(config, wildcards.dataset)),
        seed=lambda wildcards: run_seed(config, wildcards.dataset),
        style=config["plots"],
    script:
        "../scripts/plot_randomization_examples.py"


rule plot_similarity:
    """Repeatability and reproducibility box plots with both baselines (Arun et al., Fig. 4)."""
    input:
        "results/{dataset}/metrics/similarity.csv",
    output:
        **figure("results/{dataset}", "similarity", "similarity", "Repeatability and reproducibility"),
    log:
        "results/{dataset}/logs/plots/similarity.log",
    conda:
        "../../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        methods=METHODS,
        low=config["stats"]["rules"]["low_ssim"],
        style=config["plots"],
    script:
        "../scripts/plot_similarity.py"


rule plot_examples:
    """Example panels: image with the ground-truth outline and every model's and method's map, with scores."""
    input:
        unpack(example_inputs),
    output:
        png=[
            report(
                f"results/{{dataset}}/figures/examples/example{k}.png",
                caption="../report/examples.rst",
                category="Examples",
            )
            for k in range(1, N_EXAMPLES + 1)
        ],
        pdf=[f"results/{{dataset}}/figures/examples/example{k}.pdf" for k in range(1, N_EXAMPLES + 1)],
    log:
        "results/{dataset}/logs/plots/examples.log",
    conda:
        "../../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        entries=example_entries,
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
        has_masks=lambda wildcards: has_localization(run_dataset(config, wildcards.dataset)),
        metric=config["stats"]["utility_metric"],
        seed=lambda wildcards: run_seed(config, wildcards.dataset),
        style=config["plots"],
    script:
        "../scripts/plot_examples.py"


rule plot_training_curves:
    """Loss and validation AUC per epoch of every classifier, and the high baseline's validation score."""
    input:
        histories=expand("results/{{dataset}}/models/{model}/history.csv", model=MODELS),
        metrics=expand("results/{{dataset}}/models/{model}/metrics.json", model=MODELS),
        baselines=expand("results/{{dataset}}/baselines/{baseline}/history.csv", baseline=HIGH_MODEL_DIRS),
    output:
        **figure("results/{dataset}", "training_curves", "training_curves", "Models"),
    log:
        "results/{dataset}/logs/plots/training_curves.log",
    conda:
        "../../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        models=MODELS,
        baselines=HIGH_MODEL_DIRS,
        style=config["plots"],
    script:
        "../scripts/plot_training_curves.py"
