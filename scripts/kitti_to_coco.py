"""Rule kitti_to_coco: KITTI labels -> COCO JSON (Car, Pedestrian, Cyclist), seeded split."""

from detrprune.data.coco import kitti_to_coco
from detrprune.jobs import log_to

with log_to(snakemake.log[0]):
    kitti_to_coco(
        snakemake.params.root,
        snakemake.output.train,
        snakemake.output.val,
        val_fraction=snakemake.params.val_fraction,
        seed=snakemake.params.seed,
        split=snakemake.params.split,
    )
