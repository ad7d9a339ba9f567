# Two commands a fresh machine needs: `make demo` and `make test`. Both set up .venv first.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# pip prints a warning per package for find-links folders this machine's pip config names
# but that do not exist; they are noise, not failures.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: setup demo test lint typecheck unit bench clean reliability-report

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install -q -e '.[dev]' 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import airflow_provider_mindvideo, airflow.sdk"
	touch $@

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy airflow_provider_mindvideo

unit: $(STAMP)
	$(BIN)/pytest --cov --cov-report=term

test: lint typecheck docs unit

# The Markdown pages and the API reference from the docstrings (Sphinx, MyST, autodoc), warnings as errors.
.PHONY: docs
docs: $(STAMP)
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs build/docs
	@echo "docs: build/docs/index.html"

# Not part of `make test`: about half an hour, and figures rather than pass/fail. Writes
# benchmarks/results.md; `make bench ARGS=--quick` is a two-minute smoke run.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(ARGS)

# Rewrites docs/reliability.md from the fault matrix's scenarios (make test checks it is current).
reliability-report: $(STAMP)
	MINDVIDEO_WRITE_DOCS=1 $(BIN)/pytest -q tests/reliability/test_fault_matrix.py -k reliability_page_is_current

clean:
	rm -rf $(VENV) .airflow demo-output build dist *.egg-info .coverage
