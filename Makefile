SHELL := /bin/bash
# Python 3.11 or 3.12 (vowpal-wabbit-next has wheels for those only).
PY ?= $(shell for p in python3.11 python3.12 python3; do command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info[:2] not in ((3,11),(3,12)))' && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install lint test test-fast validate demo demo-headless bench clean

$(BIN)/python:
	@test -n "$(PY)" || { echo "need python3.11 or python3.12"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel

# torch==2.13.0 is the CPU wheel these machines provide to pip (see ARCHITECTURE.md).
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check bandit consumers dashboards simulations tests bench
	$(BIN)/mypy

# Parallel (pytest-xdist): many tests wait on subprocesses, servers and browsers, so three
# workers keep two cores busy. Each module runs on one worker (--dist loadfile: a module
# fixture is built once; the two demos never overlap); long modules start first
# (tests/conftest.py orders them; --no-loadscope-reorder keeps that order).
TEST_WORKERS ?= 3

test: lint
	@bash .ci/ensure-test-tools || echo "test tools unavailable: browser, nginx and promtool tests will fail"
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=600 --durations=30 -m "not validation" \
		-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The heavy statistical grids (thousands of simulated experiments per cell).
validate: install
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=7200 -m validation

test-fast: install
	$(BIN)/python -m pytest -q -x -m "not slow and not browser and not durable and not validation"

demo: install
	$(BIN)/switchboard demo $(DEMO_ARGS)

demo-headless: install
	$(BIN)/switchboard demo --duration 120 --headless

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) var results artifacts test-artifacts .pytest_cache .mypy_cache .ruff_cache
