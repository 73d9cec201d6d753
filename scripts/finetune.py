"""Rule finetune: the fine-tuned twin of one pruned checkpoint (zeros of weight pruning kept)."""

from detrprune.gpus import claimed_gpus
from detrprune.jobs import log_to
from detrprune.train.runner import finetune_checkpoint

# params.train holds what decides the result; the config adds the run-only values
# (log_interval, num_workers, ...), which are kept out of the params so they rerun nothing.
# The GPUs the rule declares (resources: gpu), each held by one job at a time.
with log_to(snakemake.log[0]), claimed_gpus(snakemake.resources.gpu):
    finetune_checkpoint(
        snakemake.input.model,
        snakemake.params.model,
        {**snakemake.config["train"], **snakemake.params.train},
        snakemake.params.finetune,
        train_json=snakemake.input.train,
        val_json=snakemake.input.val,
        data_root=snakemake.params.data_root,
        work_dir=snakemake.params.work_dir,
        out_model=snakemake.output[0],
        seed=snakemake.params.seed,
        variant=snakemake.params.variant,
    )
