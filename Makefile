# latentrag developer tasks. `make help` lists them.
PY ?= .venv/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help venv check test test-all bench ci

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

venv:  ## create .venv with the CPU torch wheel and the test extras
	python3 -m venv .venv
	.venv/bin/pip install torch==2.13.0
	.venv/bin/pip install -e ".[test]" ruff mypy

check:  ## ruff + mypy
	$(PY) -m ruff check latentrag tests benchmarks examples
	$(PY) -m mypy latentrag

test:  ## the CI test command (no slow tests)
	$(PY) -m pytest -m "not slow" -q

test-all:  ## every test, slow ones included
	$(PY) -m pytest -q

bench:  ## run every benchmark (one JSON line each, PNGs in benchmarks/results/)
	cd benchmarks && for b in $$(ls *.py | grep -v "^_" | sed "s/\.py$$//"); do ../$(PY) $$b.py --plot || exit 1; done

ci:  ## the CI script: both README commands, each in a fresh venv, then ruff, mypy, doctests
	.ci/run
