"""Snakemake entry: rule prepare_dataset."""

from saliency_trust.config import setup_logging, split_run
from saliency_trust.data.prepare import prepare_dataset

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
prepare_dataset(
    split_run(snakemake.wildcards.dataset)[0],  # the dataset of the run (stability mode: without /seed-s)
    snakemake.params.dataset,
    snakemake.params.seed,
    snakemake.output.manifest,
    snakemake.output.images,
    snakemake.output.boxes,
    snakemake.output.skipped,
    workers=snakemake.threads,
    fingerprints_path=snakemake.output.fingerprints,
    encoding=snakemake.params.encoding,
)
