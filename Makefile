# Every command a contributor runs. `make install` once, then the others.
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install demo test test-fast lint format bench clean

install:            ## virtualenv with pyrovi (editable), dev and bench extras, tested versions
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -c constraints.txt -e '.[dev,bench]'

demo:               ## the main job: a comparison report on bundled data
	$(BIN)/pyrovi demo

test:               ## the whole suite, slow statistical tests included (what CI runs)
	$(BIN)/pytest

test-fast:          ## the fast tier only
	$(BIN)/pytest -m "not slow"

lint:               ## ruff lint and format check
	$(BIN)/ruff check src tests bench case_studies
	$(BIN)/ruff format --check src/pyrovi/diagnostics src/pyrovi/report

format:
	$(BIN)/ruff check --fix src tests bench case_studies

bench:              ## benchmarks: ratios against peers measured in the same run
	$(BIN)/python bench/svi_throughput.py

clean:
	rm -rf pyrovi-report .pytest_cache .ruff_cache
