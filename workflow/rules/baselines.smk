rule train_unet:
    """High baseline: one U-Net replicate trained on the target label's masks (Arun et al., methods "U-Net")."""
    input:
        unpack(stable_dataset_files),
    output:
        model="results/{dataset}/baselines/unet-r{replicate}/model.pt",
        history="results/{dataset}/baselines/unet-r{replicate}/history.csv",
        metrics="results/{dataset}/baselines/unet-r{replicate}/metrics.json",
    log:
        "results/{dataset}/logs/baselines/train_unet-r{replicate}.log",
    benchmark:
        job_benchmark("train_unet", "r{replicate}")
    priority: 5
    conda:
        "../../envs/train.yaml"
    threads: config["baselines"]["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpu_request(config["baselines"]["device"]),
    params:
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
        # the map format (output) is the maps rule's: changing it does not retrain
        settings=order_free({k: v for k, v in config["baselines"]["unet"].items() if k != "output"}),
        seed=lambda wildcards: model_seed(config, wildcards.dataset, f"unet-r{wildcards.replicate}"),
        device=config["baselines"]["device"],
        data=data_part("trainval", "trainval_masks"),
    script:
        "../scripts/train_unet.py"


rule unet_maps:
    """U-Net heat maps of the positive test images (sigmoid, or the paper's uint8 image), in the saliency cache
    format."""
    input:
        unpack(stable_dataset_files),
        model=baseline_model_file("unet"),
    output:
        "results/{dataset}/saliency/baselines/UNET-r{replicate}.h5",
    log:
        "results/{dataset}/logs/baselines/unet_maps-r{replicate}.log",
    benchmark:
        job_benchmark("unet_maps", "r{replicate}")
    conda:
        "../../envs/saliency.yaml"
    threads: config["baselines"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=gpu_request(config["baselines"]["device"]),
    params:
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
        output=config["baselines"]["unet"]["output"],
        device=config["baselines"]["device"],
        data=data_part("explained"),
    script:
        "../scripts/unet_maps.py"


rule avg_map:
    """Low utility baseline: the mean train+val mask as a map of every positive test image."""
    input:
        unpack(avg_map_inputs),
    output:
        "results/{dataset}/saliency/baselines/AVG.h5",
    log:
        "results/{dataset}/logs/baselines/avg_map.log",
    conda:
        "../../envs/saliency.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
    script:
        "../scripts/avg_map.py"


rule train_detector:
    """High baseline for box datasets: one RetinaNet replicate trained on the target label's boxes (docs/outputs.md)."""
    input:
        unpack(stable_dataset_files_with_boxes),
    output:
        model="results/{dataset}/baselines/detector-r{replicate}/model.pt",
        history="results/{dataset}/baselines/detector-r{replicate}/history.csv",
        metrics="results/{dataset}/baselines/detector-r{replicate}/metrics.json",
    log:
        "results/{dataset}/logs/baselines/train_detector-r{replicate}.log",
    benchmark:
        job_benchmark("train_detector", "r{replicate}")
    priority: 5
    conda:
        "../../envs/train.yaml"
    threads: config["baselines"]["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpu_request(config["baselines"]["device"]),
    params:
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
        settings=config["baselines"]["detector"],
        seed=lambda wildcards: model_seed(config, wildcards.dataset, f"detector-r{wildcards.replicate}"),
        device=config["baselines"]["device"],
        data=data_part("trainval", "trainval_masks", "trainval_boxes"),
    script:
        "../scripts/train_detector.py"


rule detector_maps:
    """Detector heat maps (highest score of the boxes above min_score) of the positive test images."""
    input:
        unpack(stable_dataset_files),
        model=baseline_model_file("detector"),
    output:
        "results/{dataset}/saliency/baselines/DETECTOR-r{replicate}.h5",
    log:
        "results/{dataset}/logs/baselines/detector_maps-r{replicate}.log",
    benchmark:
        job_benchmark("detector_maps", "r{replicate}")
    conda:
        "../../envs/saliency.yaml"
    threads: config["baselines"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=gpu_request(config["baselines"]["device"]),
    params:
        target_label=lambda wildcards: run_dataset(config, wildcards.dataset)["target_label"],
        device=config["baselines"]["device"],
        data=data_part("explained"),
    script:
        "../scripts/detector_maps.py"
