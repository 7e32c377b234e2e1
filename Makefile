# The README's two commands. Both create .venv on first use.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
CONFIG ?= config/default.yaml
CORES ?= all
BIN := $(abspath $(VENV))/bin
# Snakemake rules call the `dmae` CLI, which lives in the venv.
export PATH := $(BIN):$(PATH)

.PHONY: reproduce test test-fast check pages lint venv lock clean-venv

# Exactly the packages of requirements.lock (versions and hashes), then this project without
# dependencies: every machine computes with the same libraries.
LOCK := requirements.lock
$(VENV)/.installed: $(LOCK) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	@touch $@

venv: $(VENV)/.installed

## make lock: resolve requirements.lock anew from pyproject.toml (uv; every platform, hashes),
## and name it in the conda environment's post-deploy script (a new lock, a new environment)
POST_DEPLOY := workflow/envs/dmae.post-deploy.sh
lock: venv
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal --fork-strategy fewest \
		--python-version 3.11 --generate-hashes --custom-compile-command "make lock" -o $(LOCK)
	$(BIN)/python -c 'import hashlib, pathlib, re, sys; lock, script = map(pathlib.Path, sys.argv[1:]); \
		digest = hashlib.sha256(lock.read_bytes()).hexdigest(); \
		script.write_text(re.sub("(?m)^LOCK_SHA256=.*$$", "LOCK_SHA256=" + digest, script.read_text()))' \
		$(LOCK) $(POST_DEPLOY)

## make reproduce: run the whole workflow on the embedded default (Fashion-MNIST, CPU). The
## report is always made again from this run's own certifications: a fresh clone holds the
## committed tables but not the checkpoints and certifications they came from, which are
## then computed (or taken from a `dvc pull`); an interrupted run resumes.
reproduce: venv
	$(BIN)/snakemake --profile profiles/default --cores $(CORES) --configfile $(CONFIG) \
		--forcerun report
	$(BIN)/snakemake --profile profiles/default --configfile $(CONFIG) \
		--report $$($(BIN)/python -c "import sys; from dmae import config, layout; \
		print(layout.results_dir(config.load(sys.argv[1])) / 'report.html')" $(CONFIG))
	$(BIN)/dmae run-info --config $(CONFIG)

## make test: every test, plus ruff, snakefmt --check and snakemake --lint
test: venv lint
	$(BIN)/python -m pytest

## make test-fast: the tests not marked slow (no whole-workflow runs), for iteration
test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

## make check: after make reproduce, compare this run with the committed reference: every
## table cell (identical, within its 95% interval, or beyond: exit 1) and, for a config whose
## DVC pipeline is committed, every output's hash against the reference of this CPU's vendor
## (dvc.lock, or results/<name>/reference/<vendor>.json; dmae.ops.check)
check: venv
	$(BIN)/dmae check --config $(CONFIG)

## make pages: after make reproduce, open the run's report.html and DVC's plots page (made
## here with vega inlined, so it works offline) in headless Chromium; exit 1 naming any broken
## figure, script error or network request; screenshots in results/<name>/screenshots/
pages: venv
	$(BIN)/python -m dmae.ops.pages --config $(CONFIG)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint --configfile config/smoke.yaml

clean-venv:
	rm -rf $(VENV)

# DVC remote (docs/dvc.md). CONFIG picks the pipeline (dvc.yaml for the default,
# dvc/<name>/dvc.yaml for the other committed ones); STAGES names some of its stages (e.g.
# STAGES=pretrain-vit_s-dmae), empty means all of them.
STAGES ?=
.PHONY: pull push

## make pull: fetch data and checkpoints from the DVC remote, with the stages they need, as a
## plain `dvc pull` does, but asking the remote first (dvc status --cloud): an unreachable
## remote, refused credentials or a missing output stop it before any change. Then, as the
## next snakemake would, what dvc.lock vouches for is marked done for Snakemake (dmae.ops.dvc.sync)
pull: venv
	$(BIN)/python -m dmae.ops.dvc --config $(CONFIG) --pull $(STAGES)

## make push: upload the data and checkpoints recorded in the pipeline's dvc.lock to the remote
push: venv
	$(BIN)/python -m dmae.ops.dvc --config $(CONFIG) --push $(STAGES)
