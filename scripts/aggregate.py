"""Rule aggregate: every variant's metrics.json, resamples.npz (and onnx.json), the models'
latency.json and the seed replicates' metrics.json -> summary.csv."""

from detrprune.jobs import log_to
from detrprune.report.summary import aggregate

with log_to(snakemake.log[0]):
    aggregate(
        list(snakemake.input.metrics),
        snakemake.output[0],
        list(snakemake.input.onnx),
        list(snakemake.input.resamples),
        list(snakemake.input.replicates),
        latency_path=snakemake.input.latency,
    )
