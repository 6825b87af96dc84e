# The two set-up commands of the README: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test install system lint bench

demo: install
	$(BIN)/vo-service demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

install: system $(VENV)/.installed

system:
	bash deploy/bootstrap.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python tests/benchmarks/bench_tap.py
	$(BIN)/python tests/benchmarks/bench_adql.py
	$(BIN)/python tests/benchmarks/bench_votable.py
