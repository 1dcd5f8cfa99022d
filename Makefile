# The project's commands. `make install` then `make test` is the whole set-up.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint test-py test-js demo bench

install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	cd client && npm ci --no-audit --no-fund

test: lint test-py test-js

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test-py:
	$(BIN)/python -m pytest -q

test-js:
	cd client && npm test

demo:
	$(BIN)/synk demo

bench:
	$(BIN)/python -m bench.flush
