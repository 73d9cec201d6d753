"""Rule export_onnx: ONNX graph of one variant, onnxruntime parity and latency -> onnx.json."""

from detrprune.evaluate.onnx_export import export_checkpoint
from detrprune.jobs import log_to, provenance, write_json

with log_to(snakemake.log[0]):
    settings = snakemake.params.evaluate
    record = export_checkpoint(
        snakemake.input.model,
        snakemake.output.onnx,
        val_json=snakemake.input.val,
        data_root=snakemake.params.data_root,
        input_scale=tuple(snakemake.params.input_scale),
        frames=settings["onnx"]["frames"],
        threads=settings["threads"],
        warmup=settings["latency"]["warmup"],
        runs=settings["latency"]["runs"],
    )
    record["provenance"] = provenance(
        {"evaluate": settings}, device=record["onnx_latency_device"], threads=settings["threads"]
    )
    write_json(record, snakemake.output.metrics)
