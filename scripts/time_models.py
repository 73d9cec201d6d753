"""Rule time_models: every evaluated model timed in one process, interleaved -> latency.json."""

from detrprune.evaluate.latency import Schedule, time_models
from detrprune.jobs import log_to, provenance, write_json

with log_to(snakemake.log[0]):
    settings = snakemake.params.latency
    record = time_models(
        dict(zip(snakemake.params.models, snakemake.input.models, strict=True)),
        val_json=snakemake.input.val,
        data_root=snakemake.params.data_root,
        input_scale=tuple(snakemake.params.input_scale),
        threads=snakemake.params.threads,
        schedule=Schedule.from_config(settings),
        images=settings["images"],
        seed=snakemake.params.seed,
    )
    record["provenance"] = provenance(
        {"latency": settings, "input_scale": snakemake.params.input_scale},
        device=record["latency_device"],
        threads=snakemake.params.threads,
    )
    write_json(record, snakemake.output.latency)
