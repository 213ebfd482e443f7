# kansrijk — the two commands a newcomer needs are `make demo` and `make test`.
# Every target creates or reuses .venv and installs the project into it; nothing is done by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PERSONS ?= 150000
BENCH_SCALE ?= small
PYTEST_ARGS ?=

.PHONY: help install demo test lint security bench clean browser

help:
	@echo "make install   create .venv and install kansrijk into it; then run .venv/bin/kansrijk (or: source .venv/bin/activate)"
	@echo "make demo      run the whole pipeline on the synthetic city -> demo-run/report.html"
	@echo "make test      the test suite, ruff and the import-linter contracts"
	@echo "make security  the attack and fault suite, with its summary table"
	@echo "make bench     benchmarks (small scale; BENCH_SCALE=full for national scale) -> benchmarks/results.{json,md}"
	@echo "make lint      ruff and import-linter only"

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "kansrijk needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Debian's Chromium renders the report in the browser tests; installed once, only when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the report's browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; the browser test will be reported as an error"; }

demo: $(STAMP)
	$(BIN)/kansrijk demo --out demo-run --persons $(PERSONS) --force

lint: $(STAMP)
	$(BIN)/ruff check src node_agent coordinator tests benchmarks
	$(BIN)/lint-imports

test: $(STAMP) browser lint
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

security: $(STAMP)
	$(BIN)/python -m pytest tests/security -n 2 -p no:randomly -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run --scale $(BENCH_SCALE)

clean:
	rm -rf $(VENV) demo-run .pytest_cache .ruff_cache build dist
