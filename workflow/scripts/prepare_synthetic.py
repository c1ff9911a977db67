"""Snakemake entry: rule synthetic_dataset."""

from saliency_trust.config import setup_logging
from saliency_trust.data.prepare import prepare_synthetic

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
prepare_synthetic(
    snakemake.params.dataset,
    snakemake.params.seed,
    snakemake.output.manifest,
    snakemake.output.images,
    snakemake.output.boxes,
    fingerprints_path=snakemake.output.fingerprints,
    encoding=snakemake.params.encoding,
)
