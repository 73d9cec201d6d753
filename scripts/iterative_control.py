"""Rule iterative_control: the baseline fine-tuned as the iterative loop fine-tuned its result."""

from detrprune.gpus import claimed_gpus
from detrprune.jobs import log_to
from detrprune.prune.iterative import iterative_control

# The GPUs the rule declares (resources: gpu), each held by one job at a time.
with log_to(snakemake.log[0]), claimed_gpus(snakemake.resources.gpu):
    iterative_control(
        snakemake.input.baseline,
        snakemake.input.steps,
        snakemake.params.iterative,
        model=snakemake.params.model,
        train={**snakemake.config["train"], **snakemake.params.train},
        finetune=snakemake.params.finetune,
        train_json=snakemake.input.train,
        val_json=snakemake.input.val,
        data_root=snakemake.params.data_root,
        work_dir=snakemake.params.work_dir,
        out_model=snakemake.output[0],
        seed=snakemake.params.seed,
    )
