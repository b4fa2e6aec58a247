# The two commands of the README:
#   make demo   create .venv, install qengine, quantize the bundled example in every mode, run
#               each and print a table of size, accuracy and agreement with the float model
#   make test   install qengine with its test extras into .venv and run the test suite
# and for the inner loop:
#   make test-fast   the tests that need neither TensorFlow nor much time

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint schema bench clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev,tf,ray,explorer]"
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(BIN)/python examples/demo.py

test: $(VENV)/.dev browser
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

# The Model Explorer browser test drives the system's Chromium (playwright downloads none);
# without it (and without root to install it) that one test is skipped, with the reason.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		apt-get install -y -q chromium >/dev/null 2>&1 || \
		echo "note: no chromium (apt-get install chromium); the Model Explorer browser test will skip"

test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -q -m "not tf and not slow and not ray" $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check qengine kernels schema/__init__.py tests benchmarks examples

schema: $(VENV)/.dev
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/gen_schema.sh

bench: $(VENV)/.dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .cache .pytest_cache
