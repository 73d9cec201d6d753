# Two entry points for a fresh machine (README Quickstart): `make demo` and `make test`.
# Everything runs from .venv; `make install` is idempotent (a stamp records the installed pins).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt Makefile | sha256sum | cut -c1-12)
CORES ?= all
# mmcv 2.1.0 has no wheel on PyPI: it is built from source with its compiled ops. With a CUDA
# toolkit present the CUDA kernels are built too.
MMCV_FORCE_CUDA := $(if $(shell command -v nvcc 2>/dev/null),1,0)

.PHONY: install demo test bench lint format clean-results

install: $(STAMP)

$(STAMP): requirements.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade "pip>=24" "setuptools<82" wheel ninja
	$(BIN)/pip install torch==2.13.0
	MMCV_WITH_OPS=1 FORCE_CUDA=$(MMCV_FORCE_CUDA) MAX_JOBS=$$(nproc) \
	  $(BIN)/pip install --no-build-isolation mmcv==2.1.0
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install --no-deps -e .
	$(BIN)/python -c "import mmcv.ops, mmdet, torch_pruning, snakemake, onnxruntime; print('stack ok')"
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/snakemake --cores $(CORES) results/report.pdf

test: install
	$(BIN)/python -m pytest -v -rs tests

# The measured goals (issues 4, 5) on the demo's results; run after `make demo`.
bench: install
	$(BIN)/python bench/pruning_goals.py --retime

lint: install
	$(BIN)/snakemake --lint
	$(BIN)/ruff check .

clean-results:
	rm -rf results logs benchmarks data .snakemake
