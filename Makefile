# Fresh clone: `make train` runs the default experiment, `make test` the fast tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch from pip's own index (on a machine whose pip has the CPU wheel on disk, that one); elsewhere
# `make TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes the CPU build rather than PyPI's CUDA one with its
# nvidia packages, and a GPU user installs a CUDA build into .venv first (see README).
TORCH ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: install train test test-slow bench bench-gpu clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; run 'make PYTHON=python3 ...'"; exit 2; }
	@echo "make: installing runner into $(VENV) (once; a few minutes): torch, then runner with its test and sweep extras"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || echo "make: installing $(TORCH) (the largest part)"
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	@echo "make: installing runner and its dependencies (pip install -e '.[dev,sweeps]')"
	$(BIN)/pip install -q -e ".[dev,sweeps]"
	@echo "make: installed; next time make starts at once"
	touch $@

train: install
	$(BIN)/runner train

# The fast suite on every core (pytest-xdist: one worker a core; each test its own tmp folders).
test: install
	$(BIN)/python -m pytest -n auto

test-slow: install
	$(BIN)/python -m pytest -m slow

# hydra/launcher=population_slurm against a real single-node SLURM cluster on localhost (as root; installs
# Debian's slurm and munge packages when missing): .ci/slurm_cluster.sh starts it, the tests skip where it cannot.
test-slurm: install
	-.ci/slurm_cluster.sh start
	$(BIN)/python -m pytest -m slow tests/test_slurm.py

# `make bench BENCH_ARGS=--quick` for a smoke run; see bench/run.py --help.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# One GPU, under 5 minutes, no network; `make bench-gpu BENCH_GPU_ARGS="--device cpu --quick"` for a smoke run.
bench-gpu: install
	$(BIN)/python bench/gpu.py $(BENCH_GPU_ARGS)

clean:
	rm -rf $(VENV) outputs multirun
