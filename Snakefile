"""Pruning a Deformable DETR on KITTI: data -> baseline -> pruned variants -> evaluation -> report."""

import os
import sys

from snakemake.utils import min_version

min_version("9.11")


# The embedded default study; `--configfile` files and `--config` values apply over it
# (docs/configuration.md).
configfile: "config.yaml"


# `snakemake --report results/report.html` (after the study): every plot and table, captioned.
report: "report/workflow.rst"


sys.path.insert(0, workflow.basedir)
from detrprune.config import (
    ConfigError,
    cpu_latency,
    data_split,
    gpu_latency,
    latency_params,
    load_config,
    scratch_settings,
    train_result_settings,
)
from detrprune.report import report_plots
from detrprune.variants import FINETUNED_BASELINE, ITERATIVE_CONTROL, replicate_of

# Snakemake merged the layers key by key; they are resolved again here as the package does it
# (detrprune.config.load_config): a file with pruning.replace_methods: true gives the whole
# method set, and a value a layer changes that the chosen options ignore is refused. Jobs
# Snakemake spawns get the same config files and --config, so they resolve the same config.
try:
    _resolved = load_config(
        default=(
            None
            if workflow.config_settings.replace_workflow_config
            or not os.path.exists("config.yaml")
            else "config.yaml"
        ),
        configfiles=workflow.overwrite_configfiles,
        overrides=workflow.config_settings.config,
    )
except ConfigError as error:
    sys.exit(f"Invalid configuration: {error}")
config.clear()
config.update(_resolved)


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
