#!/usr/bin/env bash
# Snakemake runs this after creating envs/detrprune.yaml's environment (--sdm conda), from the
# workflow's own envs/ folder. mmcv 2.1.0 is built against the installed torch by the same code
# as `make install` (CUDA ops only for a CUDA torch with an nvcc of the same CUDA major; set
# MMCV_CUDA=yes or no to force), then the workflow's package is installed for the rules' scripts.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python "$repo/detrprune/mmcv_build.py" install --cuda "${MMCV_CUDA:-auto}"
pip install --no-deps -e "$repo"
