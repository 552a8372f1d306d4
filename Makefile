# vaesae: set-up, tests, demo, benchmarks.
# GPU users: make test TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SWEEP ?=

.PHONY: install test lint demo bench report reproduce clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests

DEMO_STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
DEMO_DIR ?= outputs/demo/$(DEMO_STAMP)

demo: $(STAMP)
	$(BIN)/python -m vaesae.train -m experiment=demo hydra.sweep.dir=$(DEMO_DIR)
	@echo "demo sweep written to $(DEMO_DIR): one run directory per job (metrics.csv, summary.json, checkpoints/, reconstructions.png)"

bench: $(STAMP)
	$(BIN)/python -m vaesae.bench --json outputs/bench.json

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
