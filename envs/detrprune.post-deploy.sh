#!/usr/bin/env bash
# Snakemake runs this after creating envs/detrprune.yaml's environment (--sdm conda).
# mmcv 2.1.0 must be built against the installed torch without build isolation, or its compiled
# ops (deformable attention) are silently skipped.
set -euo pipefail
FORCE_CUDA=0
if command -v nvcc >/dev/null 2>&1; then FORCE_CUDA=1; fi
MMCV_WITH_OPS=1 FORCE_CUDA=$FORCE_CUDA MAX_JOBS=$(nproc) \
  pip install --no-build-isolation mmcv==2.1.0
python -c "import mmcv.ops"
