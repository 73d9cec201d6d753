"""Rule extract_kitti: safe extraction of the two archives into data/kitti/training."""

from detrprune.data.archive import extract_kitti
from detrprune.jobs import log_to

with log_to(snakemake.log[0]):
    extract_kitti(snakemake.input.images, snakemake.input.labels, snakemake.params.root)
