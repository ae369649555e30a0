# Two commands for a fresh clone: `make demo` and `make test`. Everything else is set-up.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test venv venv-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml package.json
	$(BIN)/pip install -q -e ".[test]"
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

venv: $(VENV)/.installed
venv-test: $(VENV)/.installed-test

## Send the example issue to the example subscribers through a real Celery worker.
demo: $(VENV)/.installed
	$(BIN)/newsletter demo

## The architecture contracts (.importlinter), then the whole test suite (PostgreSQL,
## Redis, Chromium and smtp-sink on this machine).
## Most tests wait on processes and sockets rather than the CPU, so they run in
## TEST_PROCS pytest-xdist processes (each with its own Redis database and template databases).
TEST_PROCS ?= 4
test: $(VENV)/.installed-test
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -n $(TEST_PROCS) --dist loadgroup --durations=25

bench: $(VENV)/.installed-test
	$(BIN)/python bench/render.py
	$(BIN)/python bench/message.py
	$(BIN)/python bench/tokens.py
	$(BIN)/python bench/import_csv.py
	$(BIN)/python bench/send.py
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/freeze.py
	$(BIN)/python bench/redirect.py

clean:
	rm -rf var test-artifacts
