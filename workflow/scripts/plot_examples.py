"""Snakemake entry: rule plot_examples."""

from saliency_trust.config import setup_logging, split_run
from saliency_trust.plots.examples import run_example_panels

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
style = snakemake.params.style
run_example_panels(
    snakemake.input.images,
    maps={tuple(entry): path for entry, path in zip(snakemake.params.entries, snakemake.input.maps)},
    paths=[list(pair) for pair in zip(snakemake.output.png, snakemake.output.pdf)],
    label=snakemake.params.target_label,
    seed=snakemake.params.seed,
    dataset=split_run(snakemake.wildcards.dataset)[0],  # the dataset of the run
    utility_path=snakemake.input.get("utility"),
    metric=snakemake.params.metric,
    colormap=style["colormap"],
    dpi=style["dpi"],
    has_masks=snakemake.params.has_masks,
)
