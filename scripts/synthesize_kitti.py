"""Rule synthesize_kitti: seeded KITTI-format archives (no download)."""

from pathlib import Path

from detrprune.data.synthetic import synthesize_kitti
from detrprune.jobs import log_to

with log_to(snakemake.log[0]):
    synthetic = snakemake.params.synthetic
    images, labels = synthesize_kitti(
        Path(snakemake.output.images).parent,
        num_scenes=synthetic["num_scenes"],
        seed=snakemake.params.seed,
        width=synthetic["width"],
        height=synthetic["height"],
    )
    assert str(images) == snakemake.output.images and str(labels) == snakemake.output.labels
