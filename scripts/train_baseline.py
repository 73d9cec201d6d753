"""Rule train_baseline: mmdet Deformable DETR trained by mmengine's Runner."""

from detrprune.gpus import claimed_gpus
from detrprune.jobs import log_to
from detrprune.train.runner import train_baseline

# params.train holds what decides the result; the config adds the run-only values
# (log_interval, num_workers, ...), which are kept out of the params so they rerun nothing.
# The GPUs the rule declares (resources: gpu), each held by one job at a time.
with log_to(snakemake.log[0]), claimed_gpus(snakemake.resources.gpu):
    train_baseline(
        # model.init from the config: params.model has its files' local paths without pins.
        {**snakemake.params.model, "init": snakemake.config["model"]["init"]},
        {**snakemake.config["train"], **snakemake.params.train},
        train_json=snakemake.input.train,
        val_json=snakemake.input.val,
        data_root=snakemake.params.data_root,
        work_dir=snakemake.params.work_dir,
        out_model=snakemake.output.model,
        out_config=snakemake.output.config,
        seed=snakemake.params.seed,
        out_validations=snakemake.output.validations,
    )
