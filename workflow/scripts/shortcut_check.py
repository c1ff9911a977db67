"""Snakemake entry: rule shortcut_check."""

from saliency_trust.config import setup_logging, split_run
from saliency_trust.metrics.shortcut import run_shortcut_check

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_shortcut_check(
    split_run(snakemake.wildcards.dataset)[0],  # the dataset of the run (stability mode: without /seed-s)
    snakemake.params.dataset_cfg,
    snakemake.input.manifest,
    snakemake.input.images,
    model_paths=dict(zip(snakemake.params.models, snakemake.input.models)),
    maps_paths=list(snakemake.input.maps),
    map_models=snakemake.params.map_models,
    map_methods=snakemake.params.map_methods,
    utility_path=snakemake.input.get("utility"),
    target_label=snakemake.params.target_label,
    controls=snakemake.params.controls,
    seed=snakemake.params.seed,
    min_auc_drop=snakemake.params.shortcut["min_auc_drop"],
    n_bootstrap=snakemake.params.shortcut["n_bootstrap"],
    alpha=snakemake.params.alpha,
    utility_metric=snakemake.params.utility_metric,
    device=snakemake.params.device,
    batch_size=snakemake.params.shortcut["batch_size"],
    threads=snakemake.threads,
    out_csv=snakemake.output.csv,
    out_md=snakemake.output.md,
    out_mass=snakemake.output.mass,
    out_regions=snakemake.output.regions,
)
