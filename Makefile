# The README's two commands. Both create .venv on first use.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
CONFIG ?= config/default.yaml
CORES ?= all
BIN := $(abspath $(VENV))/bin
# Snakemake rules call the `dmae` CLI, which lives in the venv.
export PATH := $(BIN):$(PATH)

.PHONY: reproduce test lint venv clean-venv

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

## make reproduce: run the whole workflow on the embedded default (Fashion-MNIST, CPU)
reproduce: venv
	$(BIN)/snakemake --profile profiles/default --cores $(CORES) --configfile $(CONFIG)

## make test: every test, plus ruff and snakemake --lint
test: venv lint
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint --configfile config/smoke.yaml

clean-venv:
	rm -rf $(VENV)
