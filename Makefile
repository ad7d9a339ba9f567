# Two commands a fresh machine needs: `make demo` and `make test`. Both set up .venv first.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The oldest supported Airflow, read from pyproject.toml's `apache-airflow>=` line, and a second
# environment pinned to it: `make test` runs the suite on the newest Airflow and on this one.
AIRFLOW_FLOOR := $(shell sed -n 's/^ *"apache-airflow>=\([0-9][0-9.]*\)".*/\1/p' pyproject.toml)
FLOOR_VENV := .venv-floor
FLOOR_BIN := $(FLOOR_VENV)/bin
FLOOR_STAMP := $(FLOOR_VENV)/.installed-stamp
# Airflow 3.2 caps none of its web dependencies: with the newest fastapi (0.163, and cadwyn 9,
# which needs fastapi>=0.137) its execution API failed every task ("Model 'TITerminalStatePayload'
# needs a discriminator field"). Airflow 3.3 caps fastapi<0.137 itself; the floor gets the same
# cap, as Airflow's constraints file for the release would give it.
FLOOR_PINS := 'fastapi<0.137'
# pip prints a warning per package for find-links folders this machine's pip config names
# but that do not exist, and setuptools a boxed "Editable installation" banner (a flat layout's
# editable install); both are noise, not failures. (pipefail still reports a failed pip: awk
# exits 0 whatever it drops.)
QUIET_PIP := awk '/BuildBackendWarning: Editable installation/ { skip = 1; bangs = 0; next } \
	skip { if ($$0 ~ /^ *!!$$/ && ++bangs == 2) skip = 0; next } \
	!/is ignored: it is neither a file nor a directory/'


.PHONY: setup setup-floor setup-dist e2e-distributed demo test lint typecheck unit unit-floor airflow-floor reliability-report ui-screenshots bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install -q -e '.[dev]' 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import airflow_provider_mindvideo, airflow.sdk"
	touch $@

setup-floor: $(FLOOR_STAMP)

$(FLOOR_STAMP): pyproject.toml
	test -n "$(AIRFLOW_FLOOR)" || { echo "no apache-airflow>= floor found in pyproject.toml" >&2; exit 1; }
	test -x $(FLOOR_BIN)/python || $(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_BIN)/python -m pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	$(FLOOR_BIN)/python -m pip install -q -e '.[dev]' 'apache-airflow==$(AIRFLOW_FLOOR)' $(FLOOR_PINS) 2>&1 | $(QUIET_PIP)
	$(FLOOR_BIN)/python -c "import airflow, airflow_provider_mindvideo.sensors; \
		assert airflow.__version__ == '$(AIRFLOW_FLOOR)', airflow.__version__"
	touch $@

# The distributed deployment's own environment (Postgres and Celery extras, the Celery provider),
# apart from .venv so that `make test` runs on exactly what it always did. The version is the
# one .venv resolves (the newest Airflow), pinned so that both run the same release. celery 5.7
# breaks apache-airflow-providers-celery 3.26 ("cannot import name 'retry' from
# 'celery.backends.database'"): hence celery<5.7.
DIST_VENV := .venv-dist
DIST_BIN := $(DIST_VENV)/bin
DIST_STAMP := $(DIST_VENV)/.installed-stamp

setup-dist: $(DIST_STAMP)

$(DIST_STAMP): pyproject.toml $(STAMP)
	test -x $(DIST_BIN)/python || $(PYTHON) -m venv $(DIST_VENV)
	$(DIST_BIN)/python -m pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	$(DIST_BIN)/python -m pip install -q -e '.[emulator]' \
		"apache-airflow[postgres,celery]==$$($(BIN)/python -c 'import airflow; print(airflow.__version__)')" \
		apache-airflow-providers-celery 'celery<5.7' 2>&1 | $(QUIET_PIP)
	$(DIST_BIN)/python -c "import airflow.providers.celery, asyncpg, psycopg2, airflow_provider_mindvideo"
	touch $@

# Postgres, Redis, Celery workers and two triggerers on loopback (the package scripts/e2e_distributed):
# about 15 minutes on a 2-core machine (docs/deploying.md). Installs postgresql and redis-server when missing.
e2e-distributed: $(DIST_STAMP)
	bash scripts/install_distributed_deps.sh
	$(DIST_BIN)/python -m scripts.e2e_distributed $(ARGS)

# Prints the floor (tests check that it is the one the package enforces).
airflow-floor:
	@echo $(AIRFLOW_FLOOR)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy airflow_provider_mindvideo

# What runs where, and why: docs/testing.md. Four pytest processes on two cores (pytest-xdist):
# the tests mostly wait on servers and real Airflow processes, and two processes kept the cores
# 45% busy. A test module per process at a time (--dist loadfile: a module's fixtures, such as a
# real Airflow cluster, are set up once). pytest's exit 5 (no test selected: a -k or -m that
# matches nothing) is no failure.
XDIST := -n 4 --dist loadfile
NONE_SELECTED_IS_OK := || test $$? -eq 5

# The whole suite on the newest Airflow, with coverage.
unit: $(STAMP)
	$(BIN)/pytest $(XDIST) --cov --cov-report=term $(ARGS) $(NONE_SELECTED_IS_OK)

# On the oldest supported Airflow, what can differ between releases: every module but the
# real-process ones (tests/e2e) and those marked one_airflow (the client's own logic, proven once
# above; the list is in tests/conftest.py).
unit-floor: $(FLOOR_STAMP)
	$(FLOOR_BIN)/pytest $(XDIST) -m "not e2e and not one_airflow" $(ARGS) $(NONE_SELECTED_IS_OK)

test: lint typecheck docs unit unit-floor

# The Markdown pages and the API reference from the docstrings (Sphinx, MyST, autodoc), warnings as errors.
.PHONY: docs
docs: $(STAMP)
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs build/docs
	@echo "docs: build/docs/index.html"

# Not part of `make test`: about two hours on 2 cores (18 triggerer runs of about 6 minutes: N=500,
# 5,000 and 20,000, two repeats each; then 10 for the batch), and figures rather than pass/fail; it
# needs the machine to itself. Writes benchmarks/results.md; `make bench ARGS=--quick` is a
# two-minute smoke run.
# The batch benchmark (real Airflow processes, 1,000 and 10,000 prompts beside the mapped pipeline
# at 200) writes benchmarks/batch-results.md; with ARGS=--quick it is a smoke run too. The spend
# ledger's cost (a 10,000-item batch with and without a budget, SQLite and loopback PostgreSQL, and
# the client time per create) writes benchmarks/ledger-results.md. The MindVideo pages' server time
# (100,000 ledger rows, a 10,000-item run) writes benchmarks/ui-results.md. The shared-triggerer
# benchmark (2,000 waits beside a 10,000-item batch in Airflow's trigger runner, about 25 minutes)
# writes benchmarks/fairness-results.md.
bench: $(STAMP)
	$(BIN)/python benchmarks/ui_pages.py $(if $(filter --quick,$(ARGS)),--rows 10000 --items 1000 -n 5,--write)
	$(BIN)/python benchmarks/run.py $(ARGS)
	$(BIN)/python benchmarks/batch.py $(filter --quick,$(ARGS))
	$(BIN)/python benchmarks/fairness.py $(filter --quick,$(ARGS))
	bash scripts/install_distributed_deps.sh
	$(BIN)/python benchmarks/ledger_batch.py $(filter --quick,$(ARGS))

# Rewrites docs/reliability.md from the fault matrix's scenarios (make test checks it is current).
reliability-report: $(STAMP)
	MINDVIDEO_WRITE_DOCS=1 $(BIN)/pytest -q tests/reliability/test_fault_matrix.py -k reliability_page_is_current

# The MindVideo pages' browser test (real Airflow with FAB's auth manager, headless Chromium; part of
# `make unit` too) with MINDVIDEO_WRITE_DOCS=1: its screenshots of both pages go to docs/_static.
ui-screenshots: $(STAMP)
	MINDVIDEO_WRITE_DOCS=1 $(BIN)/pytest -q tests/e2e/test_ui_in_browser.py

clean:
	rm -rf $(VENV) $(FLOOR_VENV) $(DIST_VENV) .airflow demo-output build dist *.egg-info .coverage
