"""Snakemake entry: rule qc_class_maps."""

from saliency_trust.config import setup_logging
from saliency_trust.qc.inference import run_class_maps

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_class_maps(
    snakemake.input.manifest,
    snakemake.input.images,
    snakemake.input.model,
    method_key=snakemake.wildcards.method,
    params=snakemake.params.method_params,
    batch_size=snakemake.params.batch_size,
    max_batch_inputs=snakemake.params.max_batch_inputs,
    amp=snakemake.params.amp,
    device=snakemake.params.device,
    threads=snakemake.threads,
    seed=snakemake.params.seed,
    out_path=snakemake.output[0],
)
