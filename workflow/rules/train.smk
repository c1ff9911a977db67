rule train_model:
    """Train one replicate of one architecture (docs/outputs.md)."""
    input:
        unpack(train_inputs),
    output:
        model="results/{dataset}/models/{model}/model.pt",
        history="results/{dataset}/models/{model}/history.csv",
        metrics="results/{dataset}/models/{model}/metrics.json",
    log:
        "results/{dataset}/logs/train/{model}.log",
    benchmark:
        job_benchmark("train_model", "{model}")
    priority: 10  # train every model first: training is the critical path
    conda:
        "../../envs/train.yaml"
    threads: config["training"]["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpu_request(config["training"]["device"]),
    params:
        arch=lambda wildcards: parse_model_name(wildcards.model)[0],
        settings=train_settings,
        seed=lambda wildcards: model_seed(config, wildcards.dataset, wildcards.model),
        device=config["training"]["device"],
        data=data_part("trainval"),
    script:
        "../scripts/train_model.py"


rule evaluate_model:
    """Test AUC of one model on the dataset's current test images, apart from training: new test images
    re-evaluate the model without retraining it (docs/new-data.md)."""
    input:
        unpack(evaluate_inputs),
    output:
        "results/{dataset}/models/{model}/evaluation.json",
    log:
        "results/{dataset}/logs/train/evaluate_{model}.log",
    benchmark:
        job_benchmark("evaluate_model", "{model}")
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
        gpu=gpu_request(config["training"]["device"]),
    params:
        device=config["training"]["device"],
    script:
        "../scripts/evaluate_model.py"
