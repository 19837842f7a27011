# Two commands: `make demo` and `make test`. Both set up .venv first.
export KERAS_BACKEND := torch
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test fuzz mutants lint format clean docs docs-check tutorials

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m verinet demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check verinet tests benchmarks tutorials

test: lint
	$(BIN)/python -m pytest -n 2 -q

# The property-based soundness tests with many fresh random examples
# (`make test` runs a fixed, derandomized set). FUZZ_EXAMPLES sets how many
# per test; HYPOTHESIS_SEED=N replays one run.
FUZZ_EXAMPLES ?= 500
fuzz: $(STAMP)
	VERINET_HYPOTHESIS_PROFILE=fuzz VERINET_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -n 2 -q \
		--hypothesis-show-statistics \
		$${HYPOTHESIS_SEED:+--hypothesis-seed=$$HYPOTHESIS_SEED} \
		tests/test_soundness_stacks.py

# Mutation testing of the soundness-critical modules ([tool.mutmut] in
# pyproject.toml) against the soundness tests; hours on 2 cores, resumable.
# MUTANTS='verinet.bounds.perturbation*' limits the run to matching mutants.
mutants: $(STAMP)
	$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/pip install -q "mutmut==3.8.1"
	$(BIN)/mutmut run --max-children $${MUTMUT_CHILDREN:-2} $(MUTANTS)
	$(BIN)/mutmut results

# Run the tutorials in full mode and write them, with outputs and figures,
# to docs/tutorials/*.ipynb (about 4 minutes on 2 cores).
tutorials: $(STAMP)
	$(BIN)/python tutorials/build.py

# The documentation site into site/ (run `make tutorials` first for the
# tutorials with their outputs; without it they render as source).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict -d site

# Build the site, then check it in headless Chromium (Debian: apt-get install
# -y chromium): pages render, images load, no console errors.
docs-check: docs
	$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/pip install -q "playwright==1.65.3"
	$(BIN)/python docs/check_site.py --site site

format: $(STAMP)
	$(BIN)/ruff format verinet tests benchmarks tutorials
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis site
