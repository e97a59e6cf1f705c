PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test test-all demo

test: $(VENV)/.stamp
	$(BIN)/ruff check .
	$(BIN)/pytest -m "not slow"

test-all: $(VENV)/.stamp
	$(BIN)/ruff check .
	$(BIN)/pytest

# For now the demo is the official-checkpoint parity check; the demo on the embedded default replaces it.
demo: $(VENV)/.stamp
	$(BIN)/python tools/check_parity.py --fixture tests/fixtures/parity

# (Re)install when requirements.txt or pyproject.toml change; the venv is created only if missing.
# The editable install builds with the venv's own setuptools: >= 70.1 needs no separate `wheel` package.
$(VENV)/.stamp: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install "setuptools>=70.1"
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e .
	touch $@
