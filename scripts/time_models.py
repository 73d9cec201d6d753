"""Rule time_models: every evaluated model timed in one process, interleaved -> latency.json."""

from detrprune.config import cpu_latency
from detrprune.evaluate.latency import Schedule, time_models
from detrprune.gpus import claimed_gpus
from detrprune.jobs import log_to, provenance, write_json

# The GPUs the rule declares (resources: gpu), each held by one job at a time.
with log_to(snakemake.log[0]), claimed_gpus(snakemake.resources.gpu):
    settings = snakemake.params.latency
    record = time_models(
        dict(zip(snakemake.params.models, snakemake.input.models, strict=True)),
        val_json=snakemake.input.val,
        data_root=snakemake.params.data_root,
        input_scale=tuple(snakemake.params.input_scale),
        threads=snakemake.params.threads,
        schedule=Schedule.from_config(cpu_latency(settings)),
        gpu_schedule=Schedule.from_config(settings),
        images=settings["images"],
        seed=snakemake.params.seed,
    )
    record["provenance"] = provenance(
        {"latency": settings, "input_scale": snakemake.params.input_scale},
        device=record["latency_device"],
        threads=snakemake.params.threads,
    )
    write_json(record, snakemake.output.latency)
