"""Snakemake entry: rule pass_fail."""

from saliency_trust.config import setup_logging
from saliency_trust.stats.pass_fail import PassFailInputs, run_pass_fail

setup_logging(snakemake.log[0], snakemake.config.get("storage"))
run_pass_fail(
    PassFailInputs(
        utility=snakemake.input.utility,
        model_metrics=dict(zip(snakemake.params.models, snakemake.input.model_metrics)),
        similarity=snakemake.input.similarity,
        randomization_tests=snakemake.input.randomization_tests,
    ),
    dict(
        csv_path=snakemake.output.csv,
        md_path=snakemake.output.md,
        pairwise_path=snakemake.output.pairwise,
        tex_path=snakemake.output.tex,
        html_path=snakemake.output.html,
        question_paths={name: snakemake.output[name] for name in snakemake.params.questions},
    ),
    primary_models=snakemake.params.primary_models,
    methods=snakemake.params.methods,
    metric=snakemake.params.metric,
    alpha=snakemake.params.alpha,
    randomized_model=snakemake.params.randomized_model,
    high=snakemake.params.high,
    rules=snakemake.params.rules,
    options=snakemake.params.options,
    controls=snakemake.params.controls,
    dataset=snakemake.wildcards.dataset,
)
