# vaesae: set-up, tests, demo, benchmarks.
# GPU users: make test TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SWEEP ?=

.PHONY: install test lint typecheck docs demo bench report reproduce falsify falsify-cpu clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The same checks as .pre-commit-config.yaml, then the docs (strict: a broken link fails) and the
# test suite.
test: lint typecheck docs
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/basedpyright

# The docs site into site/ (mkdocs.yml); open site/index.html, or serve it: .venv/bin/mkdocs serve
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

DEMO_STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
DEMO_DIR ?= outputs/demo/$(DEMO_STAMP)

demo: $(STAMP)
	$(BIN)/python -m vaesae.train -m experiment=demo hydra.sweep.dir=$(DEMO_DIR)
	@echo "demo sweep written to $(DEMO_DIR): one run directory per job (metrics.csv, summary.json, checkpoints/, reconstructions.png)"
	$(BIN)/python -m vaesae.report $(DEMO_DIR) --out $(DEMO_DIR)/report
	@echo "report: $(DEMO_DIR)/report/report.md"

# make report SWEEP=outputs/multirun/<date> [REPORT_DIR=...] [RULE=freq1e-3]  (default: $(SWEEP)/report)
RULE ?=
report: $(STAMP)
	@test -n "$(SWEEP)" || { echo "usage: make report SWEEP=<sweep dir> [REPORT_DIR=<out dir>] [RULE=<dead rule>]"; exit 2; }
	$(BIN)/python -m vaesae.report $(SWEEP) --out $(or $(REPORT_DIR),$(SWEEP)/report) $(if $(RULE),--rule $(RULE))

# The paper protocol (12 runs x 150 full-size epochs; docs/scaling.md gives the cost), then its report.
# Extra Hydra overrides go in REPRO_ARGS, e.g.
#   make reproduce REPRO_ARGS="trainer=gpu hydra/launcher=slurm_gpu hydra.launcher.partition=gpu"
REPRO_DIR ?= outputs/paper/$(DEMO_STAMP)
REPRO_ARGS ?=
reproduce: $(STAMP)
	$(BIN)/python -m vaesae.train -m experiment=paper hydra.sweep.dir=$(REPRO_DIR) $(REPRO_ARGS)
	$(BIN)/python -m vaesae.report $(REPRO_DIR) --out $(REPRO_DIR)/report
	@echo "report: $(REPRO_DIR)/report/report.md"

# Is the collapse intrinsic? Every arm x dataset x method x 3 seeds, then the report (docs/results.md
# "Is the collapse intrinsic?"). falsify is the paper-scale GPU study (REPRO_ARGS as above);
# falsify-cpu the CPU-sized one (2,048-image epochs) for 2 cores. An interrupted study continues with
#   make falsify-cpu FALSIFY_CPU_DIR=<its dir> FALSIFY_ARGS=resume=true
FALSIFY_DIR ?= outputs/falsify/$(DEMO_STAMP)
FALSIFY_CPU_DIR ?= outputs/falsify-cpu/$(DEMO_STAMP)
FALSIFY_ARGS ?=
falsify: $(STAMP)
	$(BIN)/python -m vaesae.train -m experiment=falsify hydra.sweep.dir=$(FALSIFY_DIR) $(FALSIFY_ARGS) $(REPRO_ARGS)
	$(BIN)/python -m vaesae.report $(FALSIFY_DIR) --out $(FALSIFY_DIR)/report
	@echo "report: $(FALSIFY_DIR)/report/report.md"

falsify-cpu: $(STAMP)
	$(BIN)/python -m vaesae.train -m experiment=falsify_cpu hydra.sweep.dir=$(FALSIFY_CPU_DIR) $(FALSIFY_ARGS)
	$(BIN)/python -m vaesae.report $(FALSIFY_CPU_DIR) --out $(FALSIFY_CPU_DIR)/report
	@echo "report: $(FALSIFY_CPU_DIR)/report/report.md"

bench: $(STAMP)
	$(BIN)/python -m vaesae.bench --json outputs/bench.json

clean:
	rm -rf $(VENV) outputs site .pytest_cache .ruff_cache
