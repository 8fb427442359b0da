# Troupe — every set-up step lives here, so a fresh machine with Python 3.11 and
# make needs nothing else. Targets are idempotent: stamp files skip work done.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.troupe-installed
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.troupe-installed
# obp (the peer OPE library our estimators are checked against) needs Python < 3.11 and old pins: its own venv.
OBP_VENV := .venv-obp
OBP_STAMP := $(OBP_VENV)/.troupe-installed
# (a pyenv shim answers `command -v python3.10` without being runnable: take the first that runs)
PYTHON310 ?= $(shell for p in $$HOME/.pyenv/versions/3.10*/bin/python3.10 $$(command -v python3.10); do "$$p" -c '' 2>/dev/null && { echo "$$p"; break; }; done)
# The torch CPU wheel is on disk on the project's machines; pip also finds it
# through the machine's pip config, this makes it explicit.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP := $(PY) -m pip install --disable-pip-version-check $(FIND_LINKS)
export TROUPE_HOME ?= $(CURDIR)/var
export AIRFLOW_HOME ?= $(CURDIR)/var/airflow
PYTEST_ARGS ?=

.PHONY: services install install-triton install-obp airflow-init airflow-standalone demo test test-unit test-integration chaos lint typecheck bench serve broker-start broker-stop clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --upgrade "pip==26.3" "setuptools==84.2.1" "wheel==0.48.0"
	$(PIP) -c constraints.txt "torch==2.13.0"
	$(PIP) -c constraints.txt -e ".[dev]"
	@touch $@

# Triton's python-backend stub needs numpy<2 (pytriton's pin); feast needs
# numpy>=2, so the server lives in its own small venv (ARCHITECTURE.md).
install-triton: $(TRITON_STAMP)

$(TRITON_STAMP): constraints-triton.txt
	@test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install --disable-pip-version-check -c constraints-triton.txt nvidia-pytriton onnxruntime
	@touch $@

install-obp: $(OBP_STAMP)

$(OBP_STAMP): constraints-obp.txt
	@test -n "$(PYTHON310)" || { echo "install-obp: needs a Python 3.10 interpreter (obp 0.5.7 refuses 3.11); set PYTHON310=/path/to/python3.10"; exit 2; }
	@test -x $(OBP_VENV)/bin/python || $(PYTHON310) -m venv $(OBP_VENV)
	$(OBP_VENV)/bin/python -m pip install --disable-pip-version-check -c constraints-obp.txt obp torch
	@touch $@

services:
	@# Redis runs on the project's machines; start it if installed but not running.
	@if command -v redis-server >/dev/null && ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1); then \
		redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null; fi

# A stock Airflow (`AIRFLOW_HOME=var/airflow airflow dags list`, `airflow standalone`) finds Troupe's DAGs through
# the airflow.cfg this writes: DAG folder, no example DAGs, SQLite DB, DAGs registered.
airflow-init: install
	$(PY) -m pipelines.cli airflow init

airflow-standalone: install
	$(PY) -m pipelines.cli airflow standalone

demo: install
	$(PY) -m pipelines.demo

test: install install-triton install-obp services
	$(PY) -m pytest tests $(PYTEST_ARGS)

# The probes of issue #19 at full size (a 25 s broker freeze, three kill -9s, 29 concurrent
# ingests, schemathesis --checks all, 150 examples per operation); `make test` runs them bounded.
# Writes benchmarks/results/chaos.json.
chaos: install install-triton services
	TROUPE_CHAOS_SCALE=full $(PY) -m pytest tests/chaos $(PYTEST_ARGS)
	$(PY) -m benchmarks.chaos

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check models training serving pipelines infra feature_store benchmarks tests
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy models serving pipelines

bench: install install-triton
	$(PY) -m benchmarks.run_all

bench-%: install install-triton
	$(PY) -m benchmarks.$*

serve: install
	$(VENV)/bin/troupe serve

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
