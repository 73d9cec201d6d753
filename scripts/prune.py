"""Rule prune: one pruned, reloadable checkpoint per named method and ratio."""

from detrprune.jobs import log_to
from detrprune.prune.methods import prune_checkpoint

with log_to(snakemake.log[0]):
    width, height = snakemake.params.input_scale
    prune_checkpoint(
        snakemake.input[0],
        snakemake.output[0],
        method=snakemake.wildcards.method,
        spec=snakemake.params.spec,
        ratio_percent=int(snakemake.wildcards.ratio),
        input_hw=(height, width),
        seed=snakemake.params.seed,
    )
