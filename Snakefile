# saliency-trust: can the saliency maps of an imaging classifier be trusted?
# Thin entry point (docs/outputs.md): config, schema validation, rule files, targets.
from snakemake.utils import min_version

from saliency_trust.validation import ConfigError, validate_config

min_version("9.0")


configfile: "config.yaml"


# schema and cross-key rules; a bad config stops here with one line naming the key and what is allowed
try:
    validate_config(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")
except ConfigError as err:
    raise SystemExit(str(err))


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/saliency.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/validation.smk"
include: "workflow/rules/qc.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
