"""Rule download_weights: a pretrained start of model.init given by URL, fetched and verified."""

from detrprune.jobs import log_to
from detrprune.train.pretrained_files import fetch

with log_to(snakemake.log[0]):
    # The pinned sha256 is read from the config, not a param: pinning it reruns nothing.
    fetch(snakemake.params.url, snakemake.output[0], snakemake.config["model"]["init"])
