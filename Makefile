# Entry points: install, dev, test, lint, format, worker, web, bench. See README.md.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install dev test lint format worker web bench clean soak

install: $(STAMP)

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

dev: install
	$(BIN)/python -m service.dev

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Not part of `make test`: ~15 min; BENCH_ARGS="--quick" for a short run (see bench/run.py).
bench: install $(VENV)/.bench-installed
	$(BIN)/python -m bench.run $(BENCH_ARGS)

$(VENV)/.bench-installed: pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

worker: install
	$(BIN)/arq service.WorkerSettings --custom-log-dict service.LOGGING

web: install
	$(BIN)/python -m web

# Not part of `make test`: minutes of load while workers are killed at random (scripts/soak.py).
SOAK_MINUTES ?= 2
soak: install
	$(BIN)/python -m scripts.soak --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench/.venvs bench/.work
