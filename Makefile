# efflab — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCALE ?=
OVERRIDES ?=
P ?=
# torch: the CPU build on machines without CUDA; set TORCH_SPEC=torch on a GPU server.
TORCH_SPEC ?= torch==2.13.0
# pip extras: add gpu on a GPU server (NVML energy counters): EXTRAS=dev,gpu
EXTRAS ?= dev
KERNEL_NAME := efflab

.DEFAULT_GOAL := help
.PHONY: help setup params repro paper report test test-unit lab bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'
	@echo "  variables: SCALE=smoke|cpu|gpu, OVERRIDES=\"p06.n_dim=200 ...\", P=NN (a paper number)"
	@echo "  repro/paper recompose params.yaml only when SCALE or OVERRIDES is given"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL_NAME) --display-name "Python (efflab)" >/dev/null
	touch $@

setup: $(VENV)/.installed  ## create .venv and install the project (idempotent)

COMPOSE := $(BIN)/python -m pipelines.params scale=$(or $(SCALE),smoke) $(OVERRIDES)
# repro and paper keep params.yaml as it is (composed earlier, maybe at gpu scale) unless asked.
MAYBE_COMPOSE = $(if $(SCALE)$(OVERRIDES),$(COMPOSE),@echo "using params.yaml as composed (pass SCALE= or OVERRIDES= to recompose)")
DVC := PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc

params: setup  ## compose params.yaml at SCALE (default smoke) with OVERRIDES
	$(COMPOSE)

repro: setup  ## reproduce every paper with dvc repro, then the claims ledger [SCALE=..]
	$(MAYBE_COMPOSE)
	$(DVC) repro
	$(BIN)/python -m pipelines.claims --readmes

paper: setup  ## reproduce one paper: make paper P=06 [SCALE=cpu]
	@test -n "$(P)" || { echo "error: P: give a paper number, e.g. make paper P=06" >&2; exit 2; }
	$(MAYBE_COMPOSE)
	$(DVC) repro --single-item p$(P) report
	$(BIN)/python -m pipelines.claims --readmes

report: setup  ## rebuild the claims ledger and the README ledger blocks from the last runs
	$(BIN)/python -m pipelines.claims --readmes

test: setup  ## the whole check: smoke repro of every paper, then every test
	$(MAKE) repro SCALE=smoke
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest

test-unit: setup  ## unit tests only (no pipeline run)
	$(BIN)/pytest -m "not pipeline"

lab: setup  ## JupyterLab; open papers/*/notebooks/*.py with "Open With > Notebook", kernel "Python (efflab)"
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root)

bench: setup  ## benchmarks of our kernels against their peers -> benchmarks/results.json
	$(BIN)/python -m benchmarks.run

clean:  ## remove scratch outputs (build/), keep results and the DVC cache
	rm -rf build
