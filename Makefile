# Entry points: install, dev, test, lint, format, worker, web, bench. See README.md.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARQ_CONTRACT := $(VENV)/arq-contract
ARQ_CONTRACT_STAMP := $(ARQ_CONTRACT)/.installed

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

test: install $(ARQ_CONTRACT_STAMP)
	$(BIN)/python -m pytest

# arq's own test suite, run against the engine by tests/test_arq_contract.py. Its tests ship
# only in arq's source distribution: the one of the arq version pyproject.toml pins is
# downloaded and its tests unpacked here, with a virtualenv of their own (their pins:
# tests/arq_contract/requirements.txt) into which this project is installed.
$(ARQ_CONTRACT_STAMP): pyproject.toml tests/arq_contract/requirements.txt $(STAMP)
	rm -rf $(ARQ_CONTRACT)
	mkdir -p $(ARQ_CONTRACT)/download
	version=$$($(BIN)/python -c 'import arq.version; print(arq.version.VERSION)') && \
	$(BIN)/python -m pip download --quiet --no-binary :all: --no-deps "arq==$$version" \
		--dest $(ARQ_CONTRACT)/download && \
	tar -xzf "$(ARQ_CONTRACT)/download/arq-$$version.tar.gz" -C $(ARQ_CONTRACT) \
		--strip-components=1 "arq-$$version/tests" "arq-$$version/pyproject.toml"
	$(PYTHON) -m venv $(ARQ_CONTRACT)/venv
	$(ARQ_CONTRACT)/venv/bin/python -m pip install --quiet --upgrade pip
	$(ARQ_CONTRACT)/venv/bin/python -m pip install --quiet -r tests/arq_contract/requirements.txt -e .
	touch $@

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
