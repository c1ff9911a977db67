"""Snakemake entry: rule plot_randomization_examples."""

from saliency_trust.config import setup_logging, split_run
from saliency_trust.plots.examples import run_randomization_panel

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
style = snakemake.params.style
methods = snakemake.params.methods
run_randomization_panel(
    snakemake.input.images,
    trained=dict(zip(methods, snakemake.input.trained)),
    randomized=dict(zip(methods, snakemake.input.randomized)),
    paths=[snakemake.output.png, snakemake.output.pdf],
    label=snakemake.params.target_label,
    seed=snakemake.params.seed,
    dataset=split_run(snakemake.wildcards.dataset)[0],  # the dataset of the run
    scores_path=snakemake.input.scores,
    model=snakemake.params.model,
    max_steps_shown=style["max_steps_shown"],
    colormap=style["colormap"],
    dpi=style["dpi"],
    has_masks=snakemake.params.has_masks,
)
