# Quality control of multi-label predictions (INFORMER, Shu et al.; docs/quality-control.md): class maps of every
# validation and test image, predictions with their entropy and TTA spread, then the flagging thresholds, test F1,
# bootstrap tests and the Table 1 layout. Runs for the datasets of qc.datasets only.


rule qc_class_maps:
    """One map per class (every class's logit explained) of every validation and test image, for one saliency
    method of qc.methods, in the HDF5 cache format (docs/quality-control.md)."""
    input:
        unpack(dataset_files),
        model=qc_model_file,
    output:
        "results/{dataset}/qc/maps/{method}.h5",
    log:
        "results/{dataset}/logs/qc/maps_{method}.log",
    benchmark:
        job_benchmark("qc_class_maps", "{method}")
    conda:
        "../../envs/saliency.yaml"
    threads: config["qc"]["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpu_request(config["qc"]["device"]),
    params:
        method_params=lambda wildcards: config["saliency"]["params"].get(wildcards.method, {}),
        batch_size=config["qc"]["batch_size"],
        max_batch_inputs=config["saliency"]["max_batch_inputs"],
        amp=config["saliency"]["amp"],
        device=config["qc"]["device"],
        seed=lambda wildcards: run_seed(config, wildcards.dataset),
    script:
        "../scripts/qc_class_maps.py"


rule qc_predictions:
    """Sigmoid outputs, predictive entropy and TTA spread of every validation and test image and class."""
    input:
        unpack(dataset_files),
        model=qc_model_file,
    output:
        "results/{dataset}/qc/predictions.csv",
    log:
        "results/{dataset}/logs/qc/predictions.log",
    benchmark:
        job_benchmark("qc_predictions", "predictions")
    conda:
        "../../envs/saliency.yaml"
    threads: config["qc"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu_request(config["qc"]["device"]),
    params:
        tta=config["qc"]["tta"],
        with_tta="tta" in config["qc"]["baselines"],
        batch_size=config["qc"]["batch_size"],
        device=config["qc"]["device"],
        seed=lambda wildcards: run_seed(config, wildcards.dataset),
    script:
        "../scripts/qc_predictions.py"


rule quality_control:
    """Youden thresholds, INFORMER's class distinctiveness, flagging thresholds, test F1, bootstrap tests and the
    table in the layout of INFORMER's Table 1 (docs/quality-control.md)."""
    input:
        predictions="results/{dataset}/qc/predictions.csv",
        maps=expand("results/{{dataset}}/qc/maps/{method}.h5", method=QC_METHODS),
    output:
        thresholds="results/{dataset}/qc/thresholds.csv",
        scores="results/{dataset}/qc/scores.csv",
        f1="results/{dataset}/qc/f1.csv",
        bootstrap="results/{dataset}/qc/bootstrap.csv",
        comparisons="results/{dataset}/qc/comparisons.csv",
        table_csv=report(
            "results/{dataset}/qc/table1.csv", caption="../report/quality_control.rst", category="Quality control"
        ),
        table_md="results/{dataset}/qc/table1.md",
        table_tex="results/{dataset}/qc/table1.tex",
        table_html=report(
            "results/{dataset}/qc/table1.html",
            caption="../report/quality_control_html.rst",
            category="Quality control",
        ),
    log:
        "results/{dataset}/logs/qc/quality_control.log",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        methods=QC_METHODS,
        settings=lambda wildcards: {
            "methods": config["qc"]["methods"],
            "baselines": config["qc"]["baselines"],
            "maps": config["qc"]["maps"],
            "grid_step": config["qc"]["grid_step"],
            "resamples": config["qc"]["bootstrap"]["resamples"],
            "ci_resamples": config["qc"]["bootstrap"]["ci_resamples"],
            "confidence": config["qc"]["bootstrap"]["confidence"],
            "tta": config["qc"]["tta"],
        },
        seed=lambda wildcards: run_seed(config, wildcards.dataset),
        model=QC_MODEL,
    script:
        "../scripts/quality_control.py"


rule plot_quality_control:
    """Mean F1 over classes on the bootstrap resamples per method, paired t-test marks (INFORMER, Fig. 3)."""
    input:
        bootstrap="results/{dataset}/qc/bootstrap.csv",
        comparisons="results/{dataset}/qc/comparisons.csv",
    output:
        png=report(
            "results/{dataset}/qc/bootstrap.png",
            caption="../report/quality_control_bootstrap.rst",
            category="Quality control",
        ),
        pdf="results/{dataset}/qc/bootstrap.pdf",
    log:
        "results/{dataset}/logs/plots/quality_control.log",
    conda:
        "../../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        style=config["plots"],
    script:
        "../scripts/plot_quality_control.py"
