"""Snakemake entry: rule pass_fail."""
from saliency_trust.config import setup_logging
from saliency_trust.stats.pass_fail import run_pass_fail

setup_logging(snakemake.log[0])
run_pass_fail(
    snakemake.input.utility,
    model_metrics=dict(zip(snakemake.params.models, snakemake.input.model_metrics)),
    primary_models=snakemake.params.primary_models,
    methods=snakemake.params.methods,
    metric=snakemake.params.metric,
    alpha=snakemake.params.alpha,
    csv_path=snakemake.output.csv,
    md_path=snakemake.output.md,
    pairwise_path=snakemake.output.pairwise,
    similarity_path=snakemake.input.similarity,
    randomization_tests_path=snakemake.input.randomization_tests,
    randomized_model=snakemake.params.randomized_model,
    high=snakemake.params.high,
    tex_path=snakemake.output.tex,
    html_path=snakemake.output.html,
    rules=snakemake.params.rules,
    question_paths={name: snakemake.output[name] for name in snakemake.params.questions},
    dataset=snakemake.wildcards.dataset,
    controls=snakemake.params.controls,
    options=snakemake.params.options,
)
