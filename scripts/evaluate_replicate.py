"""Rule evaluate_replicate: COCO and KITTI AP of one seed replicate -> metrics.json (its latency,
FLOPs and size are those of the variant it replicates)."""

from detrprune.constants import CLASSES
from detrprune.evaluate.metrics import evaluate_accuracy
from detrprune.gpus import claimed_gpus
from detrprune.jobs import log_to, provenance, write_json

# The GPUs the rule declares (resources: gpu), each held by one job at a time.
with log_to(snakemake.log[0]), claimed_gpus(snakemake.resources.gpu):
    settings = snakemake.params.evaluate
    record = evaluate_accuracy(
        snakemake.input.model,
        val_json=snakemake.input.val,
        data_root=snakemake.params.data_root,
        input_scale=tuple(snakemake.params.input_scale),
        classes=CLASSES,
        threads=settings["threads"],
        bootstrap_resamples=settings["bootstrap"]["resamples"],
        seed=snakemake.params.seed,
        out_resamples=snakemake.output.resamples,
    )
    record["provenance"] = provenance(
        {"evaluate": settings, "input_scale": snakemake.params.input_scale},
        device=record["inference_device"],
        threads=settings["threads"],
    )
    write_json(record, snakemake.output.metrics)
