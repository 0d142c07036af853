# efflab — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCALE ?= smoke
P ?=
# torch: the CPU build on machines without CUDA; set TORCH_SPEC=torch on a GPU server.
TORCH_SPEC ?= torch==2.13.0
KERNEL_NAME := efflab

.DEFAULT_GOAL := help
.PHONY: help setup params repro paper report test test-unit lab bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'
	@echo "  variables: SCALE=smoke|cpu|gpu (default smoke), P=NN (a paper number)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL_NAME) --display-name "Python (efflab)" >/dev/null
	touch $@

setup: $(VENV)/.installed  ## create .venv and install the project (idempotent)

params: setup  ## compose params.yaml at SCALE (plus OVERRIDES="p06.n_dim=50 ...")
	$(BIN)/python -m pipelines.params scale=$(SCALE) $(OVERRIDES)

repro: params  ## reproduce every paper at SCALE with dvc repro, then the claims ledger
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc repro
	$(BIN)/python -m pipelines.claims --readmes

paper: params  ## reproduce one paper: make paper P=06 [SCALE=cpu]
	@test -n "$(P)" || { echo "error: P: give a paper number, e.g. make paper P=06" >&2; exit 2; }
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc repro --single-item p$(P) report
	$(BIN)/python -m pipelines.claims --readmes

report: setup  ## rebuild the claims ledger and the README ledger blocks from the last runs
	$(BIN)/python -m pipelines.claims --readmes

test: repro  ## the whole check: smoke repro of every paper, then every test
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest

test-unit: setup  ## unit tests only (no pipeline run)
	$(BIN)/pytest -m "not pipeline"

lab: setup  ## JupyterLab; open papers/*/notebooks/*.py with "Open With > Notebook", kernel "Python (efflab)"
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root)

bench: setup  ## benchmarks of our kernels against their peers -> benchmarks/results.json
	$(BIN)/python -m benchmarks.run

clean:  ## remove scratch outputs (build/), keep results and the DVC cache
	rm -rf build
