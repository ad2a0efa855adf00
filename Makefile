VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test demo check format bench

## setup: install interpreters, TypeScript runners and the package (idempotent)
setup:
	@bash scripts/setup

## test: set everything up, check formatting, lint and types, then run the tests
test: setup
	@$(MAKE) --no-print-directory check
	$(PY) -m pytest

## demo: install what the examples need (not the developer tools) and run them in every
## ready environment
demo:
	@bash scripts/setup --demo
	$(PY) examples/demo.py

## check: format, lint and types
check:
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/mypy

format:
	$(VENV)/bin/ruff format src tests bench examples
	$(VENV)/bin/ruff check --fix src tests bench examples

## bench: measure and write bench/RESULTS.md
bench: setup
	$(PY) bench/bench_local.py
	$(PY) bench/bench_sandbox.py
	$(PY) bench/bench_server.py
	$(PY) bench/bench_serverless.py
