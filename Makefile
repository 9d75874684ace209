# Brain-tumour MRI classification with explainable deep learning.
# `make all` runs the pipeline, `make test` the tests; both set the environment up first.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PROFILE ?=
DATA_DIR ?=
BOOT_PYTHON ?= python3
# With an active conda environment (see environment.yml) the project installs into it;
# otherwise into .venv, created here.
ifdef CONDA_PREFIX
VENV ?= $(CONDA_PREFIX)
else
VENV ?= .venv
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.brainmri-setup
RUN := $(PY) -m brainmri.cli

# A value given on the command line (PROFILE, DATA_DIR, MASK_DIR, UNTIL, IMAGES, OUT, A, B,
# PORT, TEST_WORKERS) reaches the shell as one word: $(call arg,NAME) is NAME's value unexpanded
# ($(value): a "$(shell ...)" in it is never run by make) in single quotes, each ' in it written
# '\''. A space, a " or "; echo X" stays part of the value, and the CLI refuses what is not a
# profile name. VENV and BOOT_PYTHON are the machine's own path and command, not quoted: a target
# path with a space ($(STAMP)) is beyond make anyway, and BOOT_PYTHON may carry arguments.
arg = '$(subst ','\'',$(value $(1)))'
# $(call opt,--flag,NAME): "--flag 'value'" when NAME is set, else nothing
opt = $(if $(value $(2)),$(1) $(call arg,$(2)))
# $(call profile_or,DEFAULT): PROFILE as one word, else DEFAULT
profile_or = $(if $(value PROFILE),$(call arg,PROFILE),$(1))
PROFILE_ARGS = $(call opt,--profile,PROFILE) $(call opt,--data-dir,DATA_DIR)

.PHONY: help setup all test test-fast lab html screenshots predict serve export clean compare bench lint notebooks

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'
	@echo "  variables: PROFILE=default|demo|smoke|cpu  DATA_DIR=path/to/brain-tumor-mri-dataset"
	@echo "             MASK_DIR=path/to/brain-tumor-masks (tumour masks for the Grad-CAM scores)"

# SKIP_SETUP=1 uses $(VENV) as it is (the end-to-end tests run a copy of the project that way).
ifdef SKIP_SETUP
setup:
else
setup: $(STAMP) ## create the environment (idempotent; skipped when up to date)
endif

$(STAMP): pyproject.toml requirements.lock
	@echo "setting up $(VENV) (log: $(VENV)/setup.log)"
	@test -x $(PY) || $(BOOT_PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 12) else "need Python 3.10-3.12 for TensorFlow 2.21, found %d.%d: set BOOT_PYTHON=python3.11" % v)'
	@test -x $(PY) || $(BOOT_PYTHON) -m venv $(VENV)
	@mkdir -p $(VENV)
	@{ $(PY) -m pip install --upgrade pip \
	  && $(PY) -m pip install -c requirements.lock -e '.[dev]' \
	  && $(PY) -m ipykernel install --sys-prefix --name brainmri --display-name "Python (brainmri)"; \
	} > $(VENV)/setup.log 2>&1 || { tail -n 30 $(VENV)/setup.log; echo "setup failed: see $(VENV)/setup.log"; exit 1; }
	@touch $(STAMP)
	@echo "environment ready: $(VENV)"

all: ## run the five notebooks (PROFILE=..., DATA_DIR=..., UNTIL=03_train) into reports/<profile>/
	@PYTHONPATH=src $(BOOT_PYTHON) -m brainmri.cli choose $(PROFILE_ARGS)
	@$(MAKE) --no-print-directory setup
	@$(RUN) run $(PROFILE_ARGS) $(call opt,--mask-dir,MASK_DIR) $(call opt,--until,UNTIL)

# Two pytest-xdist workers: the end-to-end runs spend much of their time starting processes on one
# core. tests/conftest.py keeps each module's tests, and those of the trained fixture, on one
# worker in order (tests/test_suite.py checks the grouping takes effect). TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2
test: setup ## run the test suite (unit, pipeline end-to-end, real data where present)
	@$(PY) -m pytest -q -ra --durations=15 -n $(call arg,TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

test-fast: setup ## unit tests only, no end-to-end runs or long training: the edit-run loop
	@$(PY) -m pytest -q -ra -m "not slow" -n $(call arg,TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

lab: setup ## open JupyterLab in notebooks/, on the explorer of the latest finished run
	@$(RUN) lab

html: setup ## re-render the HTML reports of PROFILE (default: demo); SHOW_CODE=1 keeps code
	@$(RUN) html --profile $(call profile_or,demo) $(if $(value SHOW_CODE),--show-code)

screenshots: setup ## check PROFILE's HTML reports in headless Chromium (offline), save screenshots
	@$(RUN) screenshots --profile $(call profile_or,demo)

predict: setup ## predict new scans: make predict IMAGES=<file|folder|glob> [PROFILE=cpu] [OUT=dir]
	@test -n $(call arg,IMAGES) || { echo "error: give IMAGES=<file, folder or glob>" >&2; exit 2; }
	@$(RUN) predict $(call arg,IMAGES) --profile $(call profile_or,default) $(call opt,--out,OUT)

serve: setup ## use PROFILE's model (default: demo) in a local web page on 127.0.0.1 [PORT=8765]
	@$(RUN) serve --profile $(call profile_or,demo) $(call opt,--port,PORT)

export: setup ## export PROFILE's model as a TensorFlow SavedModel (whole uint8 scans in, cut and resized inside) [OUT=dir]
	@$(RUN) export --profile $(call profile_or,demo) $(call opt,--out,OUT)

clean: ## delete one profile's reports (PROFILE, default: demo); never downloaded data
	@PYTHONPATH=src $(BOOT_PYTHON) -m brainmri.cli clean --profile $(call profile_or,demo)

compare: setup ## compare two runs' headline metrics: make compare A=demo B=cpu
	@test -n $(call arg,A) -a -n $(call arg,B) || { echo "error: give A=<profile> B=<profile>" >&2; exit 2; }
	@$(RUN) compare $(call arg,A) $(call arg,B)

bench: setup ## speed benchmarks and ratios against the reference pipeline -> reports/bench/bench.json
	@$(PY) -m pytest -q benchmarks --benchmark-disable-gc -p no:cacheprovider
	@$(PY) benchmarks/ratios.py

lint: setup ## ruff format check and lint
	@$(PY) -m ruff format --check . && $(PY) -m ruff check .

notebooks: setup ## regenerate notebooks/*.ipynb from their sources notebooks/*.py
	@$(PY) tools/make_notebooks.py

# make puts command-line variables in every command's environment, expanding them to do so;
# these reach commands as arguments only, so a "$(shell ...)" in one is never run that way either.
# Last in the file: "unexport X" before "X ?= default" would leave X empty.
unexport PROFILE DATA_DIR MASK_DIR UNTIL IMAGES OUT A B PORT SHOW_CODE TEST_WORKERS
