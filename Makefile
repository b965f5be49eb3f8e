# The README's two commands: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit bench clean-demo

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# compat mode: a plain path in a .pth file; the default import hook costs every job ~10 ms
	$(BIN)/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	@touch $@

## demo: generate a small synthetic dataset from the prompts in data/ (results/ in this folder)
demo: $(STAMP)
	$(BIN)/snakemake --cores all
	@echo
	@echo "dataforge demo done: the dataset is in $(CURDIR)/results/"
	@echo "  results/data/*.parquet  results/stats.json  results/README.md"

## lint: ruff and snakefmt (`snakemake --lint` is a test: tests/test_workflow_dag.py)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakefmt --check .

## test: lint, then the whole test suite
test: lint
	$(BIN)/python -m pytest -q -ra

bench: $(STAMP)
	$(BIN)/python bench/client_overhead.py
