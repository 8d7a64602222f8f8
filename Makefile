# Two commands for users: `make repro` (set up, then run the pipeline) and `make test`.
# Both build the virtual environment in .venv from the pinned requirements on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup repro test test-fast lint clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# DVC runs each stage's `python ...` from PATH, so the venv's bin goes first.
repro: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# The whole suite, end-to-end tests that drive the real `dvc` included (a few minutes).
test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -m "e2e or not e2e" --durations=10

# Unit tests only (what plain `pytest` runs): seconds, for the edit-test loop.
test-fast: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src stages tests benchmarks

clean-venv:
	rm -rf $(VENV)
