# mailer: `make run` for the service, `make test` for the whole suite. `make help` lists all.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup venv run migrate test test-fast lint typecheck bench compose-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install mailer with its development tools

setup: ## what the tests need on this machine (Debian packages, PostgreSQL, Redis): .ci/setup
	@.ci/setup

migrate: venv ## apply the database migrations (SQLite under var/ unless MAILER_DATABASE_URL says otherwise)
	$(BIN)/mailer db upgrade

run: venv ## run web (:8000), a Celery worker, Celery beat and the SMTP catcher (:1025) until Ctrl-C
	@mkdir -p var/outbox
	@$(BIN)/mailer check
	$(BIN)/mailer db upgrade
	$(BIN)/honcho -f Procfile.dev start

test: setup venv ## the whole test suite against real PostgreSQL, SQLite, Redis, Celery workers, SMTP and Chromium
	$(BIN)/pytest

test-fast: setup venv ## the suite without the browser and the long reliability tests
	$(BIN)/pytest -m "not browser and not slow"

lint: venv ## ruff and mypy
	$(BIN)/ruff check src workers tests bench
	$(BIN)/mypy src workers

bench: venv ## the benchmarks under bench/ (they print their figures)
	$(BIN)/python bench/compose.py
	$(BIN)/python bench/send.py
	$(BIN)/python bench/bounces.py
	$(BIN)/python bench/ops.py

compose-check: ## validate docker-compose.yml (docker compose v2, or Debian's docker-compose)
	@if docker compose version >/dev/null 2>&1; then MAILER_SECRET_KEY=check docker compose config --quiet; \
	 else MAILER_SECRET_KEY=check docker-compose config -q; fi && echo "docker-compose.yml is valid"

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) var test-artifacts .pytest_cache
