"""Rule prune: one pruned, reloadable checkpoint per named method and ratio."""

from pathlib import Path

from detrprune.jobs import log_to
from detrprune.prune.methods import prune_checkpoint

with log_to(snakemake.log[0]):
    width, height = snakemake.params.input_scale
    # Only a criterion that ranks by gradients gets the training split as inputs.
    images = snakemake.input.get("images")
    prune_checkpoint(
        snakemake.input.model,
        snakemake.output[0],
        method=snakemake.wildcards.method,
        spec=snakemake.params.spec,
        ratio_percent=int(snakemake.wildcards.ratio),
        input_hw=(height, width),
        seed=snakemake.params.seed,
        train_json=snakemake.input.get("train"),
        # data/kitti/training -> data/kitti, the data_root mmdet's datasets take.
        data_root=Path(images).parent if images else None,
    )
