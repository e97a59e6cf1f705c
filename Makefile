PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test test-all demo bench

test: $(VENV)/.stamp
	$(BIN)/ruff check .
	$(BIN)/pytest -m "not slow"

test-all: $(VENV)/.stamp
	$(BIN)/ruff check .
	$(BIN)/pytest

# The main job on the embedded default: mannequin, synthetic benchmark, training, evaluation, overlays
# (embedded/demo.py); everything goes under output/, and a second run reuses it.
demo: $(VENV)/.stamp
	$(BIN)/python -m embedded.demo

bench: $(VENV)/.stamp
	$(BIN)/python -m tools.bench

# (Re)install when requirements.txt or pyproject.toml change; the venv is created only if missing.
# The editable install builds with the venv's own setuptools: >= 70.1 needs no separate `wheel` package.
$(VENV)/.stamp: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install "setuptools>=70.1"
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e .
	touch $@
