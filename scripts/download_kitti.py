"""Rule download_kitti: the real KITTI download is not implemented yet (see issue tracker)."""

from detrprune.workflow import log_to

with log_to(snakemake.log[0]):
    raise SystemExit(
        "dataset.source: kitti: downloading the KITTI archives is not implemented yet; "
        f"place data_object_image_2.zip and data_object_label_2.zip at {snakemake.output.images} "
        f"and {snakemake.output.labels}, or use dataset.source: synthetic"
    )
