"""Rule iterative: prune / fine-tune in steps towards a target ratio, stopping early on mAP."""

from detrprune.gpus import claimed_gpus
from detrprune.jobs import log_to
from detrprune.prune.iterative import iterative_prune
from detrprune.report.convergence import read_validations

# params.train holds what decides the result; the config adds the run-only values
# (log_interval, num_workers, ...), which are kept out of the params so they rerun nothing.
# The GPUs the rule declares (resources: gpu), each held by one job at a time.
with log_to(snakemake.log[0]), claimed_gpus(snakemake.resources.gpu):
    baseline_map = float(read_validations(snakemake.input.baseline_validations)["mAP"].iloc[-1])
    iterative_prune(
        snakemake.input.baseline,
        baseline_map,
        snakemake.params.spec,
        snakemake.params.iterative,
        model=snakemake.params.model,
        train={**snakemake.config["train"], **snakemake.params.train},
        finetune=snakemake.params.finetune,
        train_json=snakemake.input.train,
        val_json=snakemake.input.val,
        data_root=snakemake.params.data_root,
        work_dir=snakemake.params.work_dir,
        out_model=snakemake.output.model,
        out_steps=snakemake.output.steps,
        seed=snakemake.params.seed,
        flops_images=snakemake.params.flops_images,
    )
