"""Pruning a Deformable DETR on KITTI: data -> baseline -> pruned variants -> evaluation -> report."""

import sys

from snakemake.utils import min_version

min_version("9.11")


configfile: "config.yaml"


# `snakemake --report results/report.html` (after the study): every plot and table, captioned.
report: "report/workflow.rst"


sys.path.insert(0, workflow.basedir)
from detrprune.config import ConfigError, train_result_settings, validate_config
from detrprune.report import report_plots
from detrprune.variants import FINETUNED_BASELINE, ITERATIVE_CONTROL, replicate_of

try:
    validate_config(config, source="config")
except ConfigError as error:
    sys.exit(f"Invalid configuration: {error}")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/prune.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


localrules:
    all,


rule all:
    default_target: True
    input:
        "results/summary.csv",
        "results/report.pdf",
