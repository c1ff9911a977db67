"""Snakemake entry: rule randomized_saliency."""

from saliency_trust.config import setup_logging
from saliency_trust.saliency.compute import run_randomized_saliency

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_randomized_saliency(
    snakemake.input.manifest,
    snakemake.input.images,
    snakemake.input.model,
    method_key=snakemake.wildcards.method,
    params=snakemake.params.method_params,
    target_label=snakemake.params.target_label,
    output=snakemake.params.output,
    batch_size=snakemake.params.batch_size,
    device=snakemake.params.device,
    threads=snakemake.threads,
    out_path=snakemake.output.maps,
    mode=snakemake.wildcards.mode,
    init=snakemake.params.init,
    n_images=snakemake.params.n_images,
    seed=snakemake.params.seed,
    max_batch_inputs=snakemake.params.max_batch_inputs,
    amp=snakemake.params.amp,
    segments_path=snakemake.input.get("segments"),
    control=snakemake.params.control,
    draws=snakemake.params.draws,
    store_root=snakemake.params.store,
)
