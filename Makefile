# mlops-pipelines: `make demo` runs the whole lifecycle; `make ui` opens Dagster on its runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR := $(CURDIR)/data
export MLOPS_DATA_DIR := $(DATA_DIR)
export DAGSTER_HOME := $(DATA_DIR)/dagster_home
# MLflow's SQLite store under data/ (see README, "Where things land"); MLFLOW_TRACKING_URI, if
# you set it, points the pipeline at a tracking server instead.
MLFLOW_URI = $(or $(MLFLOW_TRACKING_URI),sqlite:///$(DATA_DIR)/mlflow.db)

.PHONY: install install-test demo ui serve mlflow-ui test validate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# config/constraints.txt pins every package to the versions the demo and tests were measured with
# (regenerate: .venv/bin/pip freeze --exclude-editable > config/constraints.txt).
$(VENV)/.installed: pyproject.toml config/constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c config/constraints.txt -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -c config/constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

$(DAGSTER_HOME)/dagster.yaml: config/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp config/dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/mlops demo

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml

serve: install
	$(BIN)/mlops serve --host 127.0.0.1 --port 8000

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_URI) --host 127.0.0.1 --port 5000

validate: install
	$(BIN)/dagster definitions validate -w workspace.yaml

test: install-test
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

clean:
	rm -rf data/lake data/dagster_home data/mlartifacts data/warehouse.duckdb* data/mlflow.db
