"""Rule aggregate: every variant's metrics.json -> results/summary.csv."""

from detrprune.report import aggregate
from detrprune.workflow import log_to

with log_to(snakemake.log[0]):
    aggregate(list(snakemake.input), snakemake.output[0])
