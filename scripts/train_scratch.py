"""Rule train_scratch: a filter target's pruned architecture trained from a fresh initialisation."""

from detrprune.gpus import claimed_gpus
from detrprune.jobs import log_to
from detrprune.train.runner import train_scratch
from detrprune.train.scratch import iterations_of_job

# params.train holds what decides the result; the config adds the run-only values.
with log_to(snakemake.log[0]), claimed_gpus(snakemake.resources.gpu):
    train = {**snakemake.config["train"], **snakemake.params.train}
    train_scratch(
        snakemake.input.pruned,
        snakemake.params.model,
        train,
        iterations_of_job(
            snakemake.params.budget,
            train["max_iters"],
            snakemake.params.finetune_iters,
            snakemake.input.get("baseline_metrics"),
            snakemake.input.get("pruned_metrics"),
        ),
        train_json=snakemake.input.train,
        val_json=snakemake.input.val,
        data_root=snakemake.params.data_root,
        work_dir=snakemake.params.work_dir,
        out_model=snakemake.output[0],
        seed=snakemake.params.seed,
        variant=snakemake.params.variant,
    )
