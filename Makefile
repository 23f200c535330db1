# Two entry points: `make dev` runs the platform, `make test` runs the checks. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DAGSTER_HOME ?= $(CURDIR)/dagster_home
export MINING_DATA_DIR ?= $(CURDIR)/data
export DBT_SEND_ANONYMOUS_USAGE_STATS := false

.PHONY: dev test bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,postgres]'
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/mining dev --host 127.0.0.1 --port 3000

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/frames.py
	$(BIN)/python bench/models.py
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/poses.py
	$(BIN)/python bench/warehouse.py
	$(BIN)/python bench/backfill.py
	$(BIN)/python bench/rerun.py
