SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test test-fast demo bench clean

$(BIN)/python:
	@command -v python3.12 >/dev/null && $(PY) -c 'import sys; sys.exit(sys.version_info[:2] in ((3,11),(3,12)))' && PY=python3.12; \
	$${PY:-$(PY)} -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check bandit consumers dashboards simulations tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=600 --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -x -m "not slow and not browser and not durable"

demo: install
	$(BIN)/switchboard demo $(DEMO_ARGS)

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) var results artifacts test-artifacts .pytest_cache .mypy_cache .ruff_cache
