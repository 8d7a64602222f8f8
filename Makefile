# Two commands for users: `make repro` (set up, then run the pipeline) and `make test`.
# Both build the virtual environment in .venv from the pinned requirements on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# DVC runs each stage's `python ...` from PATH, so the venv's bin goes first.
RUN := PATH="$(abspath $(BIN)):$$PATH"
# `make classic MIRROR=/path/to/mirror` on a machine without internet (docs/data.md)
MIRROR ?=

.PHONY: setup repro classic lock verify tolerance baseline test test-slow test-fast lint clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)
	@echo "Set up. For the dvc commands of the README: source $(BIN)/activate"

# The default pipeline: LeNet vs AlexNet on scikit-learn's bundled digits (no download).
repro: setup
	$(RUN) $(BIN)/dvc repro
	@echo "Report: reports/report.md. For the other dvc commands: source $(BIN)/activate"

# The classic experiment: LeNet vs AlexNet on MNIST, Fashion-MNIST and CIFAR-10, as a DVC
# experiment named `classic` (downloads about 200 MB, or reads MIRROR).
classic: setup
	$(RUN) $(BIN)/dvc exp run -n classic -S 'datasets=[mnist,fashion_mnist,cifar10]' \
	  -S epochs=3 -S batch_size=128 -S scheduler.name=step \
	  $(if $(MIRROR),-S data.mirror=$(abspath $(MIRROR)))

# After a change to code or params: reproduce and stage the new dvc.lock and metrics, and
# record this machine's numeric platform (ci/platform.json): `make verify` expects the same
# bytes where the platform is the same (timings.json: this machine's times).
lock: setup
	$(RUN) $(BIN)/dvc repro
	$(BIN)/python ci/verify.py --record
	git add dvc.lock metrics metrics.json timings.json ci/platform.json

# Are the committed results what the committed code and params give on this machine? In a
# scratch clone of HEAD: lock up to date, data bytes, a forced rerun, training exact on the
# platform that made the results and within the measured tolerance elsewhere
# (docs/reproducibility.md). One `dvc repro -f` where the results were made, two elsewhere.
verify: setup
	$(BIN)/python ci/verify.py

# The seed-to-seed spread of the committed recipe (ci/tolerance.json): what `make verify`
# allows on another CPU or a GPU. Five runs of the default pipeline; rerun after changing it.
tolerance: setup
	$(BIN)/python ci/tolerance.py

# Back to the committed params and results after any workspace experiment (or a failed -S).
baseline: setup
	$(RUN) $(BIN)/python ci/baseline.py

# Two pytest-xdist workers (CI's machine has 2 cores): TEST_WORKERS=1 runs them in one process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 1,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS))
STEAL := $(if $(filter 1,$(TEST_WORKERS)),,--dist worksteal)

# Every test but the CUDA and the slow ones, end-to-end tests that drive the real `dvc`
# included (docs/testing.md has the times).
test: setup
	$(RUN) $(BIN)/python -m pytest $(XDIST) --durations=10

# The slow tests: `make verify`'s own checks, resuming, forced reruns. CI runs `make test`
# and then these. Work stealing: each worker starts on its half of the tests in file order
# (so the verify tests' shared project is built while the other worker runs the resume
# tests, not waited for), and a worker that runs out takes half of the other's queue.
test-slow: setup
	$(RUN) $(BIN)/python -m pytest $(XDIST) $(STEAL) -m "slow and not gpu" --durations=10

# Unit tests only: no dvc runs, no minute-long tests; for the edit-test loop.
test-fast: setup
	$(BIN)/python -m pytest $(XDIST) -m "not e2e and not slow and not gpu"

lint: setup
	$(BIN)/ruff check src stages tests benchmarks ci

clean-venv:
	rm -rf $(VENV)
