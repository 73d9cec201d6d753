"""Rule download_kitti: one official KITTI archive, resumable, verified when a sha256 is set."""

from detrprune.data.download import download
from detrprune.jobs import log_to

with log_to(snakemake.log[0]):
    download(
        snakemake.params.url,
        snakemake.output[0],
        sha256=snakemake.params.sha256,
        # Not a param: how the download copes with the network changes no archive.
        retries=snakemake.config["kitti"]["retries"],
        alternative="point kitti.archives_dir at a folder holding both archives",
    )
