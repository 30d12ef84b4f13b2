# Two commands do all set-up on a fresh machine:
#   make demo   install, then a real clip -> lsp prep -> lsp train all -> lsp animate -> out/
#   make demo-speaker   a synthetic speaker whose mouth follows its voice -> out-speaker/
#   make test   install and run the test suite
#   make test-fast   the fast tier only (pytest -m "not slow", under 2 minutes)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-speaker test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned for this machine: a CPU wheel of exactly this version is on its
	# local disk (the package itself accepts any torch>=2.3 and keeps the one installed).
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py out

demo-speaker: $(STAMP)
	$(BIN)/python examples/synthetic_speaker.py out-speaker

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_prep.py  # runs bench_jobs.py's measurement too
	$(BIN)/python benchmarks/bench_models.py
	$(BIN)/python benchmarks/bench_models.py --train
	$(BIN)/python benchmarks/bench_loader.py
	$(BIN)/python benchmarks/bench_animate.py
	$(BIN)/python benchmarks/bench_doctor.py

clean:
	rm -rf $(VENV) out
