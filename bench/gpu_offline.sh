#!/usr/bin/env bash
# The GPU checks of `make gpu-smoke` on a CUDA machine that reaches no package index (a GPU
# node without internet whose python3 already has a CUDA torch): `fetch`, on a machine with an
# index, downloads what that python lacks into a wheelhouse; `run`, on the GPU machine, installs
# the wheelhouse into a folder of its own beside that torch (nothing installed is replaced),
# builds mmcv 2.1.0 from its source there, and runs the GPU tests and the 2:4 bench.
#
#   bench/gpu_offline.sh fetch [WHEELHOUSE]        # default .whl; PYTHON_VERSION (3.12) of there
#   bench/gpu_offline.sh run [WHEELHOUSE] [OUT]    # OUT (default results/gpu_offline): logs, JSON
#
# run's environment: MMCV_CUDA=no (default) builds mmcv's CPU ops only, in minutes, and the GPU
# then runs deformable attention's PyTorch path, which every record names
# (gpu_deformable_attention); MMCV_CUDA=yes builds its CUDA kernels too (TORCH_CUDA_ARCH_LIST,
# default the GPU's own), which takes longer. SITE (default .gpu-site) gets the packages;
# MAX_JOBS (default all cores) is the build's parallelism.
set -euo pipefail

# What the GPU machine's python lacks, pinned as the stack's venv has them (requirements.txt and
# their requirements); numpy, scipy, torch, matplotlib, pandas, opencv, onnx, pytest and the
# like are taken as they are there. setuptools < 82 keeps pkg_resources for mmcv's setup.py.
WHEELS=(
  mmengine==0.10.7 mmdet==3.3.0 torch-pruning==1.6.1 yacs==0.1.8 pycocotools==2.0.11
  shapely==2.2.0 terminaltables==3.1.10 addict==2.4.0 yapf==0.43.0 platformdirs==4.14.9
  termcolor==3.3.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
  rpds-py==2026.9.1
  "setuptools<82"
)
# Pure Python, published as source only: built into wheels here.
SOURCE_ONLY=(fvcore==0.1.5.post20221221 iopath==0.1.10)
MMCV=mmcv==2.1.0
VENV_PYTHON=${VENV_PYTHON:-.venv/bin/python}

fetch() {
  [ -x "$VENV_PYTHON" ] || { echo "fetch needs the stack's venv: make install" >&2; return 1; }
  local wheelhouse=${1:-.whl} version=${PYTHON_VERSION:-3.12} platforms=()
  for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
  done
  mkdir -p "$wheelhouse"
  "$VENV_PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "$version" \
    --implementation cp "${platforms[@]}" -d "$wheelhouse" "${WHEELS[@]}"
  "$VENV_PYTHON" -m pip wheel --no-deps -w "$wheelhouse" "${SOURCE_ONLY[@]}"
  # mmcv's source: pip checks the index's sha256 and reads its metadata by running setup.py,
  # which imports torch, hence the stack's venv (make install) without build isolation.
  "$VENV_PYTHON" -m pip download --no-deps --no-binary=:all: --no-build-isolation \
    -d "$wheelhouse" "$MMCV"
  du -sh "$wheelhouse"
}

run() {
  local wheelhouse=${1:-.whl} out=${2:-results/gpu_offline}
  local site=${SITE:-$PWD/.gpu-site} cuda=${MMCV_CUDA:-no} status=0
  mkdir -p "$out"
  python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "(no GPU)")' |
    tee "$out/versions.txt"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$wheelhouse"/*.whl
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  local force=0 expect=cpu
  if [ "$cuda" = yes ]; then
    force=1 expect=cuda
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python3 -c \
      'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
  fi
  # A second run on the same machine reuses the build it made.
  if ! python3 detrprune/mmcv_build.py verify --expect "$expect" >/dev/null 2>&1; then
    echo "building $MMCV (FORCE_CUDA=$force) into $site"
    local start=$SECONDS
    MMCV_WITH_OPS=1 FORCE_CUDA=$force MAX_JOBS=${MAX_JOBS:-$(nproc)} python3 -m pip install \
      --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target "$site" \
      "$wheelhouse/mmcv-${MMCV#*==}.tar.gz" >"$out/mmcv_build.log" 2>&1 ||
      { tail -30 "$out/mmcv_build.log"; return 1; }
    echo "mmcv built in $((SECONDS - start)) s"
  fi
  python3 detrprune/mmcv_build.py verify --expect "$expect" | tee -a "$out/versions.txt"
  export DETRPRUNE_REQUIRE_GPU=1 PYTHONUNBUFFERED=1
  # pipefail: the pytest status decides; the terminal gets the verdict lines, the log all.
  python3 -m pytest -v -rs -p no:cacheprovider tests/test_semi_structured.py \
    tests/test_evaluation.py 2>&1 | tee "$out/pytest.log" |
    grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed" || status=1
  python3 bench/semi_structured.py --out "$out/semi_structured.json" || status=1
  python3 bench/semi_structured.py --full-size --out "$out/semi_structured_full_size.json" ||
    status=1
  python3 bench/semi_structured.py --full-size --modules encoder --layers ffn \
    --out "$out/semi_structured_full_size_encoder_ffn.json" || status=1
  return $status
}

case ${1:-} in
  fetch | run) "$@" ;;
  *) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
