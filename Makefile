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

.PHONY: demo test test-fast lint schema bench bench-all clean speech browser

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

test: $(VENV)/.dev speech browser
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

# espeak-ng speaks the phrases of tests/test_wakeword.py; without it (not root, no apt) they skip
speech:
	@command -v espeak-ng >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { apt-get install -y -qq espeak-ng >/dev/null 2>&1 \
	       || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq espeak-ng >/dev/null 2>&1; }; }; } \
	  || echo "espeak-ng is not installed: the wake-word tests will be skipped"

# tests/test_model_explorer.py drives the system's Chromium (playwright downloads no browser);
# without it (not root, no apt) that test skips, saying why
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { apt-get install -y -qq chromium >/dev/null 2>&1 \
	       || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }; }; } \
	  || echo "chromium is not installed: the Model Explorer browser test will be skipped"

test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -q -m "not tf and not slow and not ray" $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check qengine kernels schema/__init__.py tests benchmarks examples

schema: $(VENV)/.dev
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/gen_schema.sh

bench: $(VENV)/.dev
	$(BIN)/python benchmarks/run_all.py --only published.py

bench-all: $(VENV)/.dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .cache .pytest_cache
