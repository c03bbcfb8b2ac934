# Corral: `make up` sets everything up and runs Corral; `make test` sets up the same and runs
# the whole test suite. Both work on a fresh Debian 12 machine as root.
SHELL := /bin/bash
UV_VERSION := 0.13.9
VENV := .venv
PY := $(VENV)/bin/python
CORRAL := $(VENV)/bin/corral
PYTEST_ARGS ?=

.PHONY: up test lint bench deps venv bytecode images image-minimal image-desktop clean

up: deps venv bytecode image-desktop
	$(CORRAL) up

test: deps venv bytecode images
	@# PostgreSQL for the store and end-to-end tests: a private test server (scripts/postgres-test.sh)
	CORRAL_TEST_PG_URL="$$(bash scripts/postgres-test.sh)" $(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: deps venv bytecode image-minimal
	$(PY) -m bench

deps:
	@bash scripts/install-system-deps.sh

venv: $(VENV)/.synced

$(VENV)/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m pip install -q "uv==$(UV_VERSION)"
	@# --compile-bytecode: the libraries' .pyc files are written once here; without them every
	@# start compiles them again where PYTHONDONTWRITEBYTECODE is set (corral --help: 0.28 s ->
	@# 0.13 s, `corral up` several seconds; docs/benchmarks.md)
	uv sync --frozen --compile-bytecode
	@touch $@

# Corral's own modules (installed editable from src/): compiled when they change
bytecode: venv
	@$(PY) -m compileall -q -j 0 src >/dev/null

images: image-minimal image-desktop

image-minimal: venv
	$(CORRAL) image build minimal

image-desktop: venv
	$(CORRAL) image build desktop

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
