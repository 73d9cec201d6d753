"""Rule finetune: the fine-tuned twin of one pruned checkpoint (zeros of weight pruning kept)."""

from detrprune.training import finetune_checkpoint
from detrprune.workflow import log_to

with log_to(snakemake.log[0]):
    finetune_checkpoint(
        snakemake.input.model,
        snakemake.params.model,
        snakemake.params.train,
        snakemake.params.finetune,
        train_json=snakemake.input.train,
        val_json=snakemake.input.val,
        data_root=snakemake.params.data_root,
        work_dir=snakemake.params.work_dir,
        out_model=snakemake.output[0],
        seed=snakemake.params.seed,
    )
