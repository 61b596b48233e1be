# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck bench bench-programs soak chaos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[status,prometheus]'
	$(BIN)/taskvisor run examples/demo.toml

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# The full suite on the default loop and on uvloop, results kept for `--compare`
# (docs/performance.md). BENCH_ARGS adds options, e.g. `make bench BENCH_ARGS=--quick`.
bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks --json benchmarks/results/latest.json $(BENCH_ARGS)

# `taskvisor run` side by side with supervisord (installed here from PyPI): the same 200
# programs under each, in one run (docs/performance.md). BENCH_PROGRAMS_ARGS for options,
# e.g. `make bench-programs BENCH_PROGRAMS_ARGS="--idle 10 --kills 50"` for a quick run.
bench-programs: $(BENCH_STAMP)
	$(BIN)/python -m pip install --quiet supervisor
	$(BIN)/python -m benchmarks.programs $(BENCH_PROGRAMS_ARGS)

# Churn tasks for a while; memory must stay flat after warm-up (prints PASS/FAIL).
# `make soak SOAK_SECONDS=600` for a longer run. Not part of `make test`.
SOAK_SECONDS ?= 60
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak --seconds $(SOAK_SECONDS)

# The cluster fault harness (docs/cluster.md): five worker processes per backend on private
# PostgreSQL / Redis servers, nemeses in turn, until 10,000 handovers per backend. Needs the
# PostgreSQL and Redis server binaries and faketime; `make test` runs a 30 s version.
CHAOS_ARGS ?= --backend all --duration 60 --min-handovers 10000
chaos: $(STAMP)
	$(BIN)/python -m benchmarks.chaos $(CHAOS_ARGS) --json benchmarks/results/chaos.json

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build src/*.egg-info
