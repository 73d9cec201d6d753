# Two entry points for a fresh machine (README Quickstart): `make demo` and `make test`.
# Everything runs from .venv; `make install` is idempotent (a stamp records the installed pins).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt Makefile detrprune/mmcv_build.py | sha256sum | cut -c1-12)
CORES ?= all
# torch's own wheel index for another build than pip's default, e.g. TORCH_INDEX=cpu on a machine
# where PyPI's torch is the multi-GB CUDA build, or TORCH_INDEX=cu128 for CUDA 12.8.
TORCH_INDEX ?=
TORCH_INDEX_URL := $(if $(TORCH_INDEX),--index-url https://download.pytorch.org/whl/$(TORCH_INDEX))
# mmcv 2.1.0 has no wheel on PyPI: it is built from source. auto: CUDA ops only for a CUDA torch
# with an nvcc of the same CUDA major (detrprune/mmcv_build.py); yes or no force the choice.
MMCV_CUDA ?= auto

.PHONY: install demo test test-slurm gpu-smoke bench lint format clean-results

install: $(STAMP)

$(STAMP): requirements.txt Makefile detrprune/mmcv_build.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade "pip>=24" "setuptools<82" wheel ninja
	$(BIN)/pip install torch==2.13.0 $(TORCH_INDEX_URL)
	$(BIN)/python detrprune/mmcv_build.py install --cuda $(MMCV_CUDA)
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install --no-deps -e .
	$(BIN)/python -c "import mmcv.ops, mmdet, torch_pruning, snakemake, onnxruntime; print('stack ok')"
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/snakemake --cores $(CORES) results/report.pdf

# The real-SLURM tests install Debian's slurm-wlm and munge and start daemons: only when asked
# (DETRPRUNE_TEST_SLURM=1, as `make test-slurm` and .ci/run do); otherwise they skip and say why.
test: install
	$(BIN)/python -m pytest -v -rs tests

test-slurm: install
	DETRPRUNE_TEST_SLURM=1 $(BIN)/python -m pytest -v -rs tests/test_slurm.py

# On a GPU machine (a CUDA torch, mmcv built with CUDA ops): the full-size micro study on CUDA,
# its GPU checks required rather than skipped (docs/real-study.md); under 8 min on one GPU.
# Then 2:4 sparse Linears against dense fp16, demo and full size (bench/README.md; needs
# compute capability >= 8.0, an older GPU prints why and passes).
gpu-smoke: install
	DETRPRUNE_REQUIRE_GPU=1 $(BIN)/python -m pytest -v -rs tests/test_full_study.py tests/test_evaluation.py tests/test_semi_structured.py
	DETRPRUNE_REQUIRE_GPU=1 $(BIN)/python bench/semi_structured.py
	DETRPRUNE_REQUIRE_GPU=1 $(BIN)/python bench/semi_structured.py --full-size
	DETRPRUNE_REQUIRE_GPU=1 $(BIN)/python bench/semi_structured.py --full-size --modules encoder \
		--layers ffn --out results/bench/semi_structured_full_size_encoder_ffn.json

# The measured goals, round_to 1 vs 8, contiguous sampling in deformable attention and the run's
# cost per rule on the demo's results; run after `make demo`.
bench: install
	$(BIN)/python bench/pruning_goals.py --retime
	$(BIN)/python bench/round_to.py
	$(BIN)/python bench/deformable_sampling.py
	$(BIN)/python bench/demo_budget.py

# The linters are development tools, not part of the pinned stack: installed here on first use.
lint: install
	test -x $(BIN)/ruff -a -x $(BIN)/snakefmt || $(BIN)/pip install ruff snakefmt
	$(BIN)/snakemake --lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules

clean-results:
	rm -rf results logs benchmarks data work .snakemake
