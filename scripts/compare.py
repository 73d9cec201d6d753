"""Rule compare: a variant's mAP against its control's, paired on the same bootstrap resamples."""

from detrprune.evaluate.paired import compare_files
from detrprune.jobs import log_to, write_json

with log_to(snakemake.log[0]):
    record = compare_files(
        snakemake.input.val,
        snakemake.input.metrics,
        snakemake.input.detections,
        snakemake.input.control_metrics,
        snakemake.input.control_detections,
        resamples=snakemake.params.resamples,
        seed=snakemake.params.seed,
    )
    write_json(record, snakemake.output[0])
